using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Each layer's precision: -Bits and -BlockSize for all; -MixedPrecision raises the layers known to be sensitive to 8
/// bits (<see cref="MixedPrecision"/>); -HeadBits sets the output head; -LayerPrecision rules (node-name patterns) come
/// last and win, the most specific pattern first (an exact name, then the pattern with more literal characters).
/// </summary>
internal static class PrecisionPlan
{
    public static Dictionary<Layer, LayerPrecision> Assign(WeightOnlyContext q, IReadOnlyList<Layer> layers)
    {
        var o = q.Options;
        var uniform = new LayerPrecision(o.Bits ?? 4, o.BlockSize ?? 32);
        var result = layers.ToDictionary(l => l, _ => uniform);
        if (o.MixedPrecision == true)
            foreach (var (layer, why) in MixedPrecision.Sensitive(q, layers))
            {
                result[layer] = uniform with { Bits = 8 };
                q.Reasons[layer] = why;
            }
        var asked = new HashSet<Layer>(q.Reasons.Keys);
        if (o.HeadBits is { } headBits)
            foreach (var layer in layers.Where(l => l.Head)) { result[layer] = uniform with { Bits = headBits }; asked.Add(layer); }
        asked.UnionWith(ApplyRules(q, layers, result));
        foreach (var (layer, precision) in result.ToList())
        {
            if (precision.Bits is not { } bits || layer.Handler.Unsupported(layer, bits, q.Format) is not { } why) continue;
            // Asked for by name or role: refused; a uniform width a layer cannot take: that layer is skipped, with the reason.
            if (asked.Contains(layer)) throw Unsupported(layer.Node, $"has no {bits}-bit form here: {why}");
            q.Skip(layer.Node, why);
            result.Remove(layer);
        }
        return result;
    }

    static EngineException Unsupported(NodeProto node, string why) =>
        new("QuantizationBitsUnsupported", EngineErrorKind.InvalidArgument,
            $"{node.OpType} '{QuantizationReport.NodeName(node)}' {why}. Give it another precision with -LayerPrecision, or leave it out with -ExcludeNode.");

    /// <summary>Applies -LayerPrecision; returns the layers it set.</summary>
    static IEnumerable<Layer> ApplyRules(WeightOnlyContext q, IReadOnlyList<Layer> layers, Dictionary<Layer, LayerPrecision> result)
    {
        var rules = q.Options.LayerPrecision ?? [];
        if (rules.Count == 0) return [];
        var unmatched = rules.Where(r => !layers.Any(l => GraphIndex.MatchesAny(l.Name, [r.Pattern]))).ToList();
        // A node that exists but has no weight-only form at all (a Conv, say) cannot take any bit width.
        foreach (var rule in unmatched.Where(r => !r.Precision.IsFloat))
            if (q.Model.Graph.Node.FirstOrDefault(n => GraphIndex.MatchesAny(QuantizationReport.NodeName(n), [rule.Pattern])) is { } node && !WeightOnlyQuantizer.Handlers.ContainsKey(node.OpType))
                throw Unsupported(node, $"has no {rule.Precision.Bits}-bit weight-only form (weight-only quantization rewrites {string.Join(", ", WeightOnlyQuantizer.Handlers.Keys)})");
        if (unmatched.Count > 0)
            throw new EngineException("QuantizationLayerPatternUnmatched", EngineErrorKind.InvalidArgument,
                $"-LayerPrecision {string.Join(", ", unmatched.Select(r => $"'{r.Pattern}'"))} {(unmatched.Count == 1 ? "names" : "name")} no layer this run quantizes " +
                $"(layers: {string.Join(", ", layers.Take(8).Select(l => l.Name))}{(layers.Count > 8 ? ", ..." : "")}; embedding tables take part with -OpType including Gather).");
        var set = new List<Layer>();
        foreach (var layer in layers)
        {
            var rule = rules.Where(r => GraphIndex.MatchesAny(layer.Name, [r.Pattern])).OrderByDescending(r => r.Specificity).FirstOrDefault();
            if (rule is null) continue;
            result[layer] = rule.Precision;
            q.Reasons[layer] = $"-LayerPrecision '{rule.Pattern}'";
            set.Add(layer);
        }
        return set;
    }
}

/// <summary>
/// The mixed preset, in the spirit of llama.cpp's k-quant mixes: 8 bits for the output head, embedding tables, and the
/// value and down projections of the first and last blocks and of every third block between (llama.cpp's
/// use_more_bits: i &lt; n/8, i &gt;= 7n/8, or (i - n/8) % 3 == 2, with the first and last always). Roles are read
/// from the graph, not from names: a value projection's output reaches the values operand of attention (the second
/// input of a MatMul of two computed values, or a fused attention operator's value input); a down projection reads
/// what another layer's output becomes through element-wise activations only (GELU, SwiGLU's gate times up).
/// </summary>
internal static class MixedPrecision
{
    static readonly HashSet<string> Passthrough = new(StringComparer.Ordinal) { "Reshape", "Transpose", "Expand", "Unsqueeze", "Squeeze", "Concat", "Cast", "Identity", "Tile", "Add" };
    static readonly HashSet<string> Elementwise = new(StringComparer.Ordinal)
    {
        "Mul", "Div", "Add", "Sub", "Sigmoid", "Erf", "Tanh", "Relu", "Gelu", "FastGelu", "BiasGelu", "QuickGelu", "Softplus", "HardSigmoid", "HardSwish", "Silu", "Cast", "Identity",
    };
    static readonly Dictionary<string, int> FusedAttentionValue = new(StringComparer.Ordinal) { ["GroupQueryAttention"] = 2, ["MultiHeadAttention"] = 2 };

    public static IEnumerable<(Layer Layer, string Why)> Sensitive(WeightOnlyContext q, IReadOnlyList<Layer> layers)
    {
        var byOutput = layers.Where(l => l.Activation is not null && l.Node.Output.Count > 0).GroupBy(l => l.Node.Output[0]).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        var values = layers.Where(l => l.Activation is not null && FeedsValues(q.Index, l.Node.Output[0])).ToList();
        var downs = layers.Where(l => l.Activation is not null && !l.Head && ReadsActivatedLayer(q.Index, l.Activation!, byOutput)).ToList();
        foreach (var l in layers.Where(l => l.Head)) yield return (l, "output head");
        foreach (var l in layers.Where(l => l.Activation is null)) yield return (l, "embedding table");
        for (int i = 0; i < values.Count; i++) if (MoreBits(i, values.Count)) yield return (values[i], $"value projection of block {i + 1} of {values.Count}");
        for (int i = 0; i < downs.Count; i++) if (MoreBits(i, downs.Count)) yield return (downs[i], $"down projection of block {i + 1} of {downs.Count}");
    }

    static bool MoreBits(int i, int n) => i == 0 || i == n - 1 || i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;

    /// <summary>Whether <paramref name="value"/> reaches attention's values operand through reshapes, bias adds and cache concatenation.</summary>
    static bool FeedsValues(GraphIndex index, string value)
    {
        var frontier = new Queue<(string Value, int Hops)>([(value, 0)]);
        while (frontier.Count > 0)
        {
            var (v, hops) = frontier.Dequeue();
            foreach (var (node, slot) in index.ConsumersOf(v))
            {
                if (node.OpType == "MatMul" && slot == 1 && node.Input.Count > 1 && index.Constant(node.Input[0]) is null) return true;
                if (FusedAttentionValue.TryGetValue(node.OpType, out int valueSlot) && slot == valueSlot) return true;
                if (hops < 8 && Passthrough.Contains(node.OpType) && node.Output.Count > 0) frontier.Enqueue((node.Output[0], hops + 1));
            }
        }
        return false;
    }

    /// <summary>Whether <paramref name="activation"/> is another layer's output passed through element-wise activations only.</summary>
    static bool ReadsActivatedLayer(GraphIndex index, string activation, Dictionary<string, Layer> byOutput)
    {
        var frontier = new Queue<(string Value, int Hops)>([(activation, 0)]);
        while (frontier.Count > 0)
        {
            var (v, hops) = frontier.Dequeue();
            if (hops > 0 && byOutput.ContainsKey(v)) return true;
            if (hops >= 8 || !index.Producer.TryGetValue(v, out var node) || !Elementwise.Contains(node.OpType)) continue;
            var computed = node.Input.Where(i => i.Length > 0 && index.Constant(i) is null).ToList();
            // A residual sum (two computed operands of Add/Sub) is where blocks meet, not an activation function.
            if (node.OpType is "Add" or "Sub" && computed.Count > 1) continue;
            // Div(1, sqrt(...)) and friends belong to normalisations: only a constant divisor is an activation's.
            if (node.OpType == "Div" && index.Constant(node.Input[1]) is null) continue;
            foreach (var input in computed) frontier.Enqueue((input, hops + 1));
        }
        return false;
    }
}
