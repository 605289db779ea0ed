using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>Squeeze and Unsqueeze shift the channel axis by the axes they remove or insert.</summary>
internal sealed class SqueezeRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Squeeze", "Unsqueeze"];
    public override bool FollowsInterleaved => true;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        string d = ChannelWalk.Describe(node);
        var axes = w.Axes(node, 1);
        if (node.OpType == "Unsqueeze")
        {
            int outRank = w.Probe.Shape(node.Output[0])?.Length ?? -1;
            if (axes is null || outRank < 0) return w.Fail($"{d} has computed axes");
            int cur = t.Axis;
            foreach (long ax in axes.Select(a => ChannelWalk.Normalize(a, outRank)).Order()) if (ax <= cur) cur++;
            return t with { Axis = cur, Rank = outRank };
        }
        if (axes is null)
        {
            if (node.Input.Count > 1 && node.Input[1].Length > 0) return w.Fail($"{d} has computed axes");
            if (w.Probe.Shape(node.Input[0]) is not { } inShape) return w.Fail($"{d} has unknown axes");
            axes = Enumerable.Range(0, t.Rank).Where(i => inShape[i] == 1).Select(i => (long)i).ToArray();
        }
        var norm = axes.Select(a => ChannelWalk.Normalize(a, t.Rank)).ToArray();
        if (norm.Contains(t.Axis)) return w.Fail($"{d} removes the channel axis");
        return t with { Axis = t.Axis - norm.Count(a => a < t.Axis), Rank = t.Rank - norm.Length };
    }
}
