using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// ONNX Runtime's com.microsoft activations (what Optimize-Model fuses x·sigmoid(x) and GELU into): each channel maps
/// to itself; a bias per channel (FastGelu's, BiasGelu's) loses the removed entries.
/// </summary>
internal sealed class ContribUnaryRule : ChannelRule
{
    public override string Domain => "com.microsoft";
    public override IReadOnlyList<string> OpTypes { get; } = ["QuickGelu", "Gelu", "FastGelu", "BiasGelu"];
    public override bool FollowsInterleaved => true;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        if (node.Input.Count < 2 || node.Input[1].Length == 0) return t;
        string d = ChannelWalk.Describe(node);
        if (w.Constant(node.Input[1]) is not { } bias) return w.Fail($"{d} has a computed bias");
        if (t.Axis != t.Rank - 1 || t.Interleaved) return w.Fail($"{d} adds its bias along the last axis, not the channels'");
        if (bias.Dims.Count > 0 && bias.Dims[^1] != 1) w.Slice(node, 1, bias.Dims.Count - 1, t.Pos);
        return t;
    }
}
