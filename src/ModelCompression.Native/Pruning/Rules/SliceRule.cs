using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Slice along other axes passes the channels; a slice of the channel axis with constant bounds (a fused Q/K/V
/// projection cut into three) keeps the units inside it, renumbered, and its bounds drop by the removed positions before them.
/// </summary>
internal sealed class SliceRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Slice"];
    public override bool FollowsInterleaved => true;

    public override bool ReadsTable(NodeProto node, int input) => input == 0;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        string d = ChannelWalk.Describe(node);
        bool attributes = GraphIndex.IntsAttr(node, "starts") is not null;
        long[]? starts = attributes ? GraphIndex.IntsAttr(node, "starts") : w.Ints(node, 1);
        long[]? axes = attributes ? GraphIndex.IntsAttr(node, "axes") : node.Input.Count > 3 && node.Input[3].Length > 0 ? w.Ints(node, 3) : null;
        bool axesComputed = !attributes && node.Input.Count > 3 && node.Input[3].Length > 0 && axes is null;
        if (axesComputed) return w.Fail($"{d} has computed axes");
        if (axes is null)
        {
            // Without axes the bounds cover axes 0, 1, ...; their count is the bounds' length.
            long count = starts?.Length ?? (w.Shape(node.Input[1]) is [var n] ? n : -1);
            if (count < 0) return w.Fail($"{d} has bounds of unknown length");
            axes = Enumerable.Range(0, (int)count).Select(i => (long)i).ToArray();
        }
        int j = Array.FindIndex(axes, a => ChannelWalk.Normalize(a, t.Rank) == t.Axis);
        if (j < 0) return t;
        if (t.Interleaved) return w.Fail($"{d} slices heads merged with the batch axis");
        if (attributes) return w.Fail($"{d} slices the channel axis with attribute bounds (opset before 10)");
        var ends = w.Ints(node, 2);
        var steps = node.Input.Count > 4 && node.Input[4].Length > 0 ? w.Ints(node, 4) : null;
        if (starts is null || ends is null || (node.Input.Count > 4 && node.Input[4].Length > 0 && steps is null))
            return w.Fail($"{d} cuts the channel axis at bounds computed at run time");
        if (steps is not null && steps[j] != 1) return w.Fail($"{d} steps through the channel axis");
        long length = t.Length;
        long s = Math.Clamp(starts[j] < 0 ? starts[j] + length : starts[j], 0, length);
        long e = Math.Clamp(ends[j] < 0 ? ends[j] + length : ends[j], 0, length);
        if (e <= s) return w.Fail($"{d} takes nothing of the channel axis");
        var pos = new int[t.Pos.Length][];
        for (int u = 0; u < pos.Length; u++)
        {
            var inside = t.Pos[u].Where(p => p >= s && p < e).ToArray();
            if (inside.Length != 0 && inside.Length != t.Pos[u].Length) return w.Fail($"{d} cuts through a unit of the channels");
            pos[u] = inside.Select(p => (int)(p - s)).ToArray();
        }
        w.Group.Indices.Add(new IndexEdit(node, 1, j, t.Pos, Bound: true, Length: length));
        w.Group.Indices.Add(new IndexEdit(node, 2, j, t.Pos, Bound: true, Length: length));
        return t with { Length = (int)(e - s), Pos = pos };
    }
}
