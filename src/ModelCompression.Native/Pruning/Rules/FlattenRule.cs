using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>Flatten merges the channel axis with the axes around it: each channel becomes a block of positions.</summary>
internal sealed class FlattenRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Flatten"];

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        int f = ChannelWalk.Normalize(GraphIndex.IntAttr(node, "axis", 1), t.Rank);
        if (w.Probe.Shape(node.Input[0]) is not { } inShape || w.Probe.Shape(node.Output[0]) is not { } outShape)
            return w.Fail($"the shapes around {ChannelWalk.Describe(node)} are unknown");
        if (t.Axis < f) return w.Fail($"{ChannelWalk.Describe(node)} merges the channels into the leading axis");
        return ReshapeRule.Merge(w, node, t, inShape, outShape) ?? w.Fail($"{ChannelWalk.Describe(node)} merges the channels with axes of run-time size");
    }
}
