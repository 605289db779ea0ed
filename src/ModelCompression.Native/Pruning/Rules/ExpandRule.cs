using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Expand broadcasts size-1 axes: the channels pass (their axis shifts when the rank grows), and a shape entry that
/// names the channel axis's size is lowered by the removed positions. A size-1 axis right after the channels expanded
/// to r copies repeats key/value heads for r query heads each (grouped-query attention; see <see cref="HeadRepeat"/>).
/// The shape must be a constant (shape arithmetic computed at run time is folded first, <see cref="ShapeFolding"/>).
/// </summary>
internal sealed class ExpandRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Expand"];

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        string d = ChannelWalk.Describe(node);
        if (w.Ints(node, 1) is not { } shape) return w.Fail($"{d} expands to a shape computed at run time");
        if (w.Probe.Shape(node.Output[0]) is not { } outShape) return w.Fail($"the shape of '{node.Output[0]}' is unknown");
        int axis = t.Axis + outShape.Length - t.Rank;
        int entry = axis - (outShape.Length - shape.Length);
        if (entry < 0 || shape[entry] == 1) return t with { Axis = axis, Rank = outShape.Length };
        if (t.Length == 1 && shape[entry] > 1 && !t.Interleaved)
        {
            // One key/value head broadcast to every query head (multi-query attention): a repeat by the whole entry.
            var pos = ChannelWalk.Map(t.Pos, _ => Enumerable.Range(0, (int)shape[entry]));
            return new Track(axis, outShape.Length, (int)shape[entry], pos) { Repeat = new Repeat(t.Pos, node, 1, entry, null) };
        }
        if (shape[entry] != t.Length) return w.Fail($"{d} expands the channel axis");
        w.Group.Indices.Add(new IndexEdit(node, 1, entry, t.Pos));
        return t with { Axis = axis, Rank = outShape.Length };
    }
}
