using System.Collections;
using System.Collections.Concurrent;
using System.Reflection;

namespace ModelCompression;

/// <summary>
/// Marks a type PowerShell sees as the mirror of an engine record. PowerShell shows only types of the cmdlet assembly
/// (the engine lives in the module's own load context), so each engine record PowerShell shows has one such mirror, and
/// <see cref="EngineRecords.Map{T}"/> fills it: every public property of the engine record goes to the property of the
/// same name (or the name in <see cref="Renamed"/>), lists become arrays and nested records their mirrors. An engine
/// property the mirror does not show is named in <see cref="Omitted"/>, so a field added to the engine cannot miss
/// PowerShell unnoticed: mapping fails, and tests/Contract.Tests.ps1 checks every mirror against its record.
/// </summary>
[AttributeUsage(AttributeTargets.Class, Inherited = false)]
public sealed class EngineRecordAttribute(Type engineType) : Attribute
{
    public Type EngineType { get; } = engineType;
    /// <summary>Engine properties PowerShell does not see, each a deliberate choice.</summary>
    public string[] Omitted { get; set; } = [];
    /// <summary>"EngineName=MirrorName" for engine properties whose mirror has a name that suits PowerShell better.</summary>
    public string[] Renamed { get; set; } = [];
}

/// <summary>Fills mirrors (<see cref="EngineRecordAttribute"/>) from engine records by property name.</summary>
static class EngineRecords
{
    static readonly ConcurrentDictionary<Type, (PropertyInfo From, PropertyInfo To)[]> Plans = new();

    public static T Map<T>(object record) where T : class => (T)Map(record, typeof(T));

    static object Map(object record, Type mirror)
    {
        var target = Activator.CreateInstance(mirror, nonPublic: true)!;
        foreach (var (from, to) in Plans.GetOrAdd(mirror, Plan))
            to.SetValue(target, Convert(from.GetValue(record), to.PropertyType));
        return target;
    }

    /// <summary>Which engine property fills which mirror property; an engine property with neither a mirror nor an omission fails.</summary>
    static (PropertyInfo, PropertyInfo)[] Plan(Type mirror)
    {
        var mark = mirror.GetCustomAttribute<EngineRecordAttribute>()
            ?? throw new InvalidOperationException($"{mirror.FullName} is not marked as the mirror of an engine record.");
        var renamed = mark.Renamed.Select(r => r.Split('=', 2)).ToDictionary(r => r[0], r => r[1], StringComparer.Ordinal);
        var plan = new List<(PropertyInfo, PropertyInfo)>();
        var missing = new List<string>();
        foreach (var from in mark.EngineType.GetProperties(BindingFlags.Public | BindingFlags.Instance))
        {
            if (mark.Omitted.Contains(from.Name) || from.GetIndexParameters().Length > 0) continue;
            var to = mirror.GetProperty(renamed.GetValueOrDefault(from.Name, from.Name), BindingFlags.Public | BindingFlags.Instance);
            if (to?.SetMethod is null) missing.Add(from.Name);
            else plan.Add((from, to));
        }
        if (missing.Count > 0)
            throw new InvalidOperationException($"{mirror.FullName} does not show {mark.EngineType.Name}'s {string.Join(", ", missing)}: add a settable property of that name, or name it in Omitted.");
        return [.. plan];
    }

    static object? Convert(object? value, Type type)
    {
        if (value is null) return null;
        var plain = Nullable.GetUnderlyingType(type) ?? type;
        if (plain.GetCustomAttribute<EngineRecordAttribute>() is not null) return Map(value, plain);
        // Collections are copied, never shared: what a script does to a mirror must not reach the engine's record.
        if (plain.IsArray && value is IEnumerable items)
        {
            var element = plain.GetElementType()!;
            var list = items.Cast<object?>().Select(i => Convert(i, element)).ToList();
            var array = Array.CreateInstance(element, list.Count);
            for (int i = 0; i < list.Count; i++) array.SetValue(list[i], i);
            return array;
        }
        if (plain.IsGenericType && plain.GetGenericTypeDefinition() == typeof(Dictionary<,>) && value is IEnumerable pairs)
        {
            var dictionary = (IDictionary)Activator.CreateInstance(plain)!;
            var valueType = plain.GetGenericArguments()[1];
            foreach (var pair in pairs)
            {
                var t = pair.GetType();
                dictionary.Add(t.GetProperty("Key")!.GetValue(pair)!, Convert(t.GetProperty("Value")!.GetValue(pair), valueType));
            }
            return dictionary;
        }
        if (plain.IsInstanceOfType(value)) return value;
        throw new InvalidOperationException($"An engine value of type {value.GetType().Name} cannot become {type.Name}.");
    }
}
