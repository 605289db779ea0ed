using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// LayerNormalization (and RMSNormalization, and ONNX Runtime's SimplifiedLayerNormalization, which it registers in the
/// ONNX domain, not com.microsoft): channels on an axis before
/// the normalized ones pass untouched; channels on a normalized axis lose their scale and bias entries, and the
/// statistics are then taken over the kept channels only, so the rewrite is not exact for them (the report says so).
/// </summary>
internal sealed class LayerNormRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"];

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        int first = ChannelWalk.Normalize(GraphIndex.IntAttr(node, "axis", -1), t.Rank);
        if (t.Axis < first) return t;
        if (t.Interleaved) return w.Fail($"{ChannelWalk.Describe(node)} normalizes over heads merged with the batch axis");
        for (int i = 1; i < node.Input.Count && i <= 2; i++)
        {
            if (node.Input[i].Length == 0) continue;
            if (w.Shape(node.Input[i]) is not { } shape) return w.Fail($"the shape of '{node.Input[i]}' is unknown");
            int a = shape.Length - (t.Rank - t.Axis);
            if (a < 0 || shape[a] == 1) continue;
            if (w.Constant(node.Input[i]) is null) return w.Fail($"{ChannelWalk.Describe(node)} has a computed scale or bias");
            w.Slice(node, i, a, t.Pos);
        }
        w.Approximate($"{node.OpType} '{ChannelWalk.Label(node)}' normalizes over the pruned channels: its mean and variance now come from the kept channels only");
        if (t.Axis == t.Rank - 1 && first == t.Rank - 1) w.Group.Norms.Add(node);
        return t;
    }

    public override Normalization? Normalizes(NodeProto node) => node.OpType == "LayerNormalization"
        ? new Normalization([0], Scale: 1, Bias: 2, Centred: true, GraphIndex.FloatAttr(node, "epsilon") ?? 1e-5f)
        : new Normalization([0], Scale: 1, Bias: null, Centred: false, GraphIndex.FloatAttr(node, "epsilon") ?? 1e-5f);
}
