using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Grouped-query attention repeats each key/value head for a group of query heads (Unsqueeze, Expand to r copies,
/// Reshape merging heads and copies: Hugging Face's repeat_kv). Followed alone, the repeated heads are key/value
/// units spanning r positions each; where they meet the query heads (Q·Kᵀ, P·V) the copies are matched to query
/// heads, so query heads can go evenly within each group (the repeat factor drops) and a key/value head goes only
/// with all of its query heads (the cache shrinks).
/// </summary>
internal static class HeadRepeat
{
    /// <summary>
    /// For a Reshape that merged the channels with the copies of the Expand before it: the merged track marked as a
    /// repeat (<paramref name="target"/>: the edit of the Reshape's target, replaced when query heads are met).
    /// </summary>
    public static Track Mark(ChannelWalk w, NodeProto reshape, Track input, Track merged, IndexEdit? target)
    {
        if (!w.Index.Producer.TryGetValue(reshape.Input[0], out var expand) || expand.OpType != "Expand" || expand.Domain is not ("" or "ai.onnx")
            || w.Ints(expand, 1) is not { } shape || w.Probe.Shape(expand.Input[0]) is not { } before || w.Probe.Shape(expand.Output[0]) is not { } after)
            return merged;
        int copies = input.Axis + 1, entry = copies - (after.Length - shape.Length);
        int beforeAxis = copies - (after.Length - before.Length);
        if (input.Interleaved || copies >= after.Length || entry < 0 || beforeAxis < 0 || before[beforeAxis] != 1 || after[copies] <= 1
            || shape[entry] != after[copies] || merged.Length != input.Length * after[copies])
            return merged;
        return merged with { Repeat = new Repeat(input.Pos, expand, 1, entry, target) };
    }

    /// <summary>
    /// Query heads (<paramref name="query"/>) meet repeated key/value heads on the head axis of a product: the
    /// repeat's edits take the query heads' positions, the group learns which query heads each key/value head serves,
    /// and the product's output carries the query heads. Null (with a failure) when the layouts do not match.
    /// </summary>
    public static Track? Meet(ChannelWalk w, NodeProto node, Track query, Track repeated)
    {
        var repeat = repeated.Repeat!;
        if (query.Length != repeated.Length || query.Interleaved || query.Repeat is not null)
            return w.Fail($"{ChannelWalk.Describe(node)} multiplies repeated key/value heads with differently laid out heads");
        if (repeat.Target is { } target)
        {
            if (!w.Group.Indices.Remove(target)) return w.Fail($"the repeated key/value heads meet query heads twice before {ChannelWalk.Describe(node)}");
            w.Group.Indices.Add(target with { Pos = query.Pos });
        }
        w.Group.RepeatEdits.Add(new RepeatEdit(repeat.Node, repeat.Input, repeat.Entry, query.Pos, repeat.KeyValue));
        w.Group.Repeats.Add(new RepeatTie(query.Pos, repeated.Pos));
        return query;
    }
}
