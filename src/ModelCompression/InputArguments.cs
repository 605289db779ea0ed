using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;

namespace ModelCompression;

/// <summary>Turns the input-related parameters Measure-ModelLatency and Compare-Model share into engine options.</summary>
static class InputArguments
{
    /// <summary>-InputShape @{ x = 1,3,64,64; sequence = 128 } as names and dimension lists; values must be positive integers.</summary>
    static Dictionary<string, long[]> Shapes(Hashtable? table)
    {
        var result = new Dictionary<string, long[]>(StringComparer.Ordinal);
        if (table is null) return result;
        foreach (DictionaryEntry e in table)
        {
            string key = e.Key?.ToString() ?? "";
            object? value = e.Value is PSObject p ? p.BaseObject : e.Value;
            var items = value is IEnumerable en and not string ? en.Cast<object?>().ToList() : [value];
            try
            {
                result[key] = items.Select(i => LanguagePrimitives.ConvertTo<long>(i is PSObject ip ? ip.BaseObject : i)).ToArray();
            }
            catch (PSInvalidCastException)
            {
                throw new EngineException("InputShapeInvalid", EngineErrorKind.InvalidArgument,
                    $"-InputShape '{key}': '{string.Join(",", items)}' is not a list of whole numbers.");
            }
        }
        return result;
    }

    /// <summary>
    /// What the models run on: the -InputData file, or inputs synthesized with -InputShape, -BatchSize and -IntegerRange
    /// (a batch -InputShape gives is the batch size; -BatchSize given beside it must agree).
    /// </summary>
    public static (DataSet? Data, SynthesisOptions Synthesis) Inputs(PSCmdlet cmdlet, IEnumerable<OnnxModel> models, string? dataPath,
        int batchSize, bool batchSizeGiven, Hashtable? shape, long[]? range)
    {
        var data = Data(cmdlet, dataPath, shape, range);
        var synthesis = InputShapeSpec.Apply(new SynthesisOptions { BatchSize = batchSize, IntegerRange = Range(range) }, models, Shapes(shape), batchSizeGiven);
        return (data, synthesis);
    }

    /// <summary>-IntegerRange min,max: integer inputs are drawn from [min, max).</summary>
    static (long Min, long Max)? Range(long[]? range) => range is { Length: 2 } r ? (r[0], r[1]) : null;

    /// <summary>
    /// The -InputData file, loaded. -InputShape and -IntegerRange shape synthesized inputs only: beside a data file,
    /// whose arrays have their own shapes and values, they would be ignored, so they are refused.
    /// </summary>
    public static DataSet? Data(PSCmdlet cmdlet, string? path, Hashtable? shape, long[]? range)
    {
        if (string.IsNullOrEmpty(path)) return null;
        if (shape is not null || range is not null)
            throw new EngineException("InputParameterNotApplicable", EngineErrorKind.InvalidArgument,
                $"{(shape is null ? "-IntegerRange" : range is null ? "-InputShape" : "-InputShape and -IntegerRange")} shape synthesized inputs; " +
                "with -InputData the data file's arrays are used as they are. Remove one or the other.");
        return DataSet.Load(cmdlet.SessionState.Path.GetUnresolvedProviderPathFromPSPath(path));
    }
}

/// <summary>Completes -Provider with the execution providers this machine's ONNX Runtime offers.</summary>
public sealed class ExecutionProviderCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete,
        CommandAst commandAst, IDictionary fakeBoundParameters)
    {
        IReadOnlyList<string> providers;
        try { providers = ExecutionProviders.Available(); }
        catch (Exception) { providers = ["CPU"]; }
        return providers
            .Where(p => p.StartsWith(wordToComplete.Trim('\'', '"'), StringComparison.OrdinalIgnoreCase))
            .Select(p => new CompletionResult(p, p, CompletionResultType.ParameterValue, p + " execution provider"));
    }
}

/// <summary>Lets a TimeSpan parameter take seconds (-Duration 10, -Duration 2.5) besides a TimeSpan or "00:00:10".</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class SecondsToTimeSpanAttribute : ArgumentTransformationAttribute
{
    public override object Transform(EngineIntrinsics engineIntrinsics, object inputData)
    {
        object value = inputData is PSObject p ? p.BaseObject : inputData;
        return value switch
        {
            TimeSpan t => t,
            int or long or double or float or decimal => TimeSpan.FromSeconds(Convert.ToDouble(value, System.Globalization.CultureInfo.InvariantCulture)),
            string s when double.TryParse(s, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double sec) => TimeSpan.FromSeconds(sec),
            string s when TimeSpan.TryParse(s, System.Globalization.CultureInfo.InvariantCulture, out var t) => t,
            _ => throw new ArgumentTransformationMetadataException($"'{value}' is not a duration; give seconds (10, 2.5) or a TimeSpan ('00:01:00')."),
        };
    }
}
