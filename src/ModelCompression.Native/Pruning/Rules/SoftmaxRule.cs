using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>Softmax, LogSoftmax and Hardmax over another axis keep the channels apart (attention weights per head).</summary>
internal sealed class SoftmaxRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Softmax", "LogSoftmax", "Hardmax"];
    public override bool FollowsInterleaved => true;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        // Before opset 13 the op works on the input flattened to 2-D at axis (default 1).
        bool flattened = w.Opset < 13;
        int axis = ChannelWalk.Normalize(GraphIndex.IntAttr(node, "axis", flattened ? 1 : -1), t.Rank);
        bool touches = flattened ? t.Axis >= axis : t.Axis == axis;
        return touches ? w.Fail($"{ChannelWalk.Describe(node)} normalizes over the channels") : t;
    }
}
