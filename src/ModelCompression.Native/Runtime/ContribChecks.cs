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
        ["RotaryEmbedding"] = n => Positive(n, "num_heads", required: false) ?? Positive(n, "rotary_embedding_dim", required: false),
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
        if (Positive(n, heads, required: true) is { } bad) return bad;
        if (groups is null) return null;
        if (Positive(n, groups, required: true) is { } badGroups) return badGroups;
        long h = Value(n, heads)!.Value, g = Value(n, groups)!.Value;
        return h % g == 0 ? null : $"has {heads} {h}, not a multiple of {groups} {g}";
    }

    static string? Positive(NodeProto n, string name, bool required) => Value(n, name) switch
    {
        null => required ? $"has no {name} attribute" : null,
        { } v when v < 1 || v > int.MaxValue => $"has {name} {v} (1 to {int.MaxValue})",
        _ => null,
    };

    static long? Value(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : null;
}
