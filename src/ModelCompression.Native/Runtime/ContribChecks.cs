using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Runtime;

/// <summary>
/// Attribute checks ONNX Runtime's contrib kernels leave out: they read head counts into an int and divide by them, so a
/// count of 0, or one that truncates to 0, stops the process in native code (the fuzzer's kv_num_heads of 2^40 hung
/// Measure-ModelLatency beyond Ctrl+C). Run before any session or generator sees a model; one line per operator.
/// </summary>
internal static class ContribChecks
{
    static readonly Dictionary<string, Func<NodeProto, string?>> Checks = new(StringComparer.Ordinal)
    {
        ["GroupQueryAttention"] = n => Heads(n, "num_heads", "kv_num_heads"),
        ["MultiHeadAttention"] = n => Heads(n, "num_heads", null),
        ["Attention"] = n => Heads(n, "num_heads", null),
        // 0 is RotaryEmbedding's own default for both (taken from the inputs' shapes), so only sizes an int cannot hold are refused.
        ["RotaryEmbedding"] = n => InRange(n, "num_heads", 0) ?? InRange(n, "rotary_embedding_dim", 0),
    };

    public static void Check(ModelProto proto, string modelName)
    {
        foreach (var node in ModelSummary.AllNodes(proto.Graph))
            if (node.Domain == "com.microsoft" && Checks.TryGetValue(node.OpType, out var check) && check(node) is { } why)
                throw new EngineException("ModelAttributeInvalid", EngineErrorKind.InvalidData,
                    $"Model '{modelName}': {node.OpType} node '{node.Name}' {why}; ONNX Runtime would fail on it without an error.");
    }

    static string? Heads(NodeProto n, string heads, string? groups)
    {
        if ((Required(n, heads) ?? InRange(n, heads, 1)) is { } bad) return bad;
        if (groups is null) return null;
        if ((Required(n, groups) ?? InRange(n, groups, 1)) is { } badGroups) return badGroups;
        long h = Value(n, heads)!.Value, g = Value(n, groups)!.Value;
        return h % g == 0 ? null : $"has {heads} {h}, not a multiple of {groups} {g}";
    }

    static string? Required(NodeProto n, string name) => Value(n, name) is null ? $"has no {name} attribute" : null;

    static string? InRange(NodeProto n, string name, long min) =>
        Value(n, name) is { } v && (v < min || v > int.MaxValue) ? $"has {name} {v} ({min} to {int.MaxValue})" : null;

    static long? Value(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : null;
}
