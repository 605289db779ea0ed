using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Tile: repeats along other axes pass the channels; n repeats of the channel axis lay the channels out n times
/// (position p + i·length for copy i), as some exports repeat key/value heads for grouped-query attention. Each
/// key/value head is then tied to the query heads that read its copies, so such heads go by whole groups.
/// </summary>
internal sealed class TileRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Tile"];

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        if (w.Ints(node, 1) is not { } repeats || repeats.Length != t.Rank) return w.Fail($"{ChannelWalk.Describe(node)} has computed repeats");
        long n = repeats[t.Axis];
        if (n == 1) return t;
        int length = t.Length;
        return t with { Length = checked((int)(length * n)), Pos = ChannelWalk.Map(t.Pos, p => Enumerable.Range(0, (int)n).Select(i => p + i * length)) };
    }
}
