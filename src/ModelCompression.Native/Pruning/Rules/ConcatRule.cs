using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>Concat along the channel axis: each input's channels land at its offset (other inputs keep theirs).</summary>
internal sealed class ConcatRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Concat"];

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        var first = inputs[0].Track;
        string label = ChannelWalk.Label(node);
        int rank = first.Rank;
        int axis = ChannelWalk.Normalize(GraphIndex.IntAttr(node, "axis", 0), rank);
        if (axis != first.Axis)
        {
            // Joined along another axis: the channels pass when every input carries them alike (a key/value cache
            // input joined with the new keys takes their layout: past and present lose the same heads).
            int adopted = node.Input.Count(n => n.Length > 0 && !w.IsTracked(n) && w.AdoptCache(n, first));
            if (inputs.Count + adopted != node.Input.Count(n => n.Length > 0) || inputs.Any(x => x.Track.Axis != first.Axis || x.Track.Rank != rank || x.Track.Length != first.Length))
                return w.Fail($"Concat node '{label}' joins the channels with other tensors along another axis");
            return first with { Pos = ChannelWalk.Union(inputs.Select(x => x.Track.Pos).ToList()) };
        }
        if (inputs.Any(x => x.Track.Axis != first.Axis || x.Track.Rank != rank)) return w.Fail($"Concat node '{label}' joins differently laid out channels");
        int offset = 0;
        var parts = new List<int[][]>();
        for (int i = 0; i < node.Input.Count; i++)
        {
            if (w.Shape(node.Input[i]) is not { } s) return w.Fail($"the shape of '{node.Input[i]}' is unknown");
            if (w.TryTrack(node.Input[i], out var tr))
            {
                int off = offset;
                parts.Add(ChannelWalk.Map(tr.Pos, p => [p + off]));
            }
            offset += (int)s[axis];
        }
        return first with { Length = offset, Pos = ChannelWalk.Union(parts) };
    }
}
