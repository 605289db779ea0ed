using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>Transpose moves the channel axis where its permutation puts it.</summary>
internal sealed class TransposeRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Transpose"];
    public override bool FollowsInterleaved => true;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        var perm = GraphIndex.IntsAttr(node, "perm") ?? Enumerable.Range(0, t.Rank).Reverse().Select(i => (long)i).ToArray();
        int to = Array.IndexOf(perm, (long)t.Axis);
        return to < 0 ? w.Fail($"{ChannelWalk.Describe(node)} has an odd perm") : t with { Axis = to };
    }
}
