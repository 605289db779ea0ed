using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Reductions over other axes pass the channels (shifted when the axes are dropped). A ReduceMean over the channel
/// axis with kept dimensions is a normalization's statistic (decomposed LayerNorm or RMSNorm): the mean is then over the
/// kept channels only, which the report states; its size-1 result broadcasts back onto the channels.
/// </summary>
internal sealed class ReduceRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } =
        ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"];
    public override bool FollowsInterleaved => true;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        string d = ChannelWalk.Describe(node);
        bool keep = GraphIndex.IntAttr(node, "keepdims", 1) != 0;
        var axes = w.Axes(node, 1);
        if (axes is null && node.Input.Count > 1 && node.Input[1].Length > 0) return w.Fail($"{d} has computed axes");
        if (axes is null || axes.Length == 0)
            axes = GraphIndex.IntAttr(node, "noop_with_empty_axes", 0) != 0 ? [] : Enumerable.Range(0, t.Rank).Select(i => (long)i).ToArray();
        var norm = axes.Select(a => ChannelWalk.Normalize(a, t.Rank)).Distinct().ToArray();
        if (!norm.Contains(t.Axis))
            return keep ? t : t with { Axis = t.Axis - norm.Count(a => a < t.Axis), Rank = t.Rank - norm.Length };
        if (node.OpType != "ReduceMean" || !keep || t.Interleaved) return w.Fail($"{d} reduces over the channels");
        w.Approximate($"{d} averages over the pruned channels (a decomposed normalization): its statistic now comes from the kept channels only");
        return null;
    }
}
