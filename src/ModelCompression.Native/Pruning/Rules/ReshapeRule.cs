using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Reshape, in three shapes: the channel axis and everything after it unchanged (the axis moves); the channel axis
/// merged with the axes after it, or with static axes before it (each channel becomes a block of positions); the
/// channel axis split into heads x head_dim (each head a unit, heads possibly merged with the batch axis). The target
/// entry of the channel axis is lowered by the removed positions when it is a literal (in the target, or a constant
/// part of a Concat that computes it).
/// </summary>
internal sealed class ReshapeRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Reshape"];
    public override bool FollowsInterleaved => true;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        string d = ChannelWalk.Describe(node);
        if (w.Probe.Shape(node.Input[0]) is not { } inShape || w.Probe.Shape(node.Output[0]) is not { } outShape)
            return w.Fail($"the shapes around {d} are unknown");
        if (GraphIndex.IntAttr(node, "allowzero", 0) != 0) return w.Fail($"{d} allows zero-sized dimensions");

        // The channel axis and the axes after it unchanged.
        int k = outShape.Length - (t.Rank - t.Axis);
        if (k >= 0 && outShape.AsSpan(k).SequenceEqual(inShape.AsSpan(t.Axis)))
        {
            var moved = t with { Axis = k, Rank = outShape.Length };
            return Edit(w, node, moved, t, k, t.Interleaved ? inShape[t.Axis] / t.Length : 1, out _) ? moved : null;
        }
        if (Merge(w, node, t, inShape, outShape) is { } merged)
            return Edit(w, node, merged, t, merged.Axis, 1, out var edit) ? HeadRepeat.Mark(w, node, t, merged, edit) : null;
        if (t.Interleaved) return w.Fail($"{d} regroups heads that are merged with the batch axis");
        if (Split(w, node, t, inShape, outShape) is { } split)
            return Edit(w, node, split, t, split.Axis, split.Interleaved ? 0 : 1, out _) ? split : null;
        return w.Group.Failure is null ? w.Fail($"{d} regroups the channel axis in a way the rewrite does not follow") : null;
    }

    /// <summary>Records the edit of the target entry that holds the channel axis (<paramref name="edit"/>; none for a copied one); false when the entry cannot be edited.</summary>
    static bool Edit(ChannelWalk w, NodeProto node, Track output, Track input, int k, long scale, out IndexEdit? edit)
    {
        edit = null;
        string d = ChannelWalk.Describe(node);
        if (TargetEntry(w, node, k) is not { } entry) { w.Fail($"{d} computes the size of the channel axis at run time"); return false; }
        var target = w.Ints(node, 1);
        if (target is not null)
            for (int i = 0; i < target.Length; i++)
                if (target[i] == 0 && i == input.Axis && i != k) { w.Fail($"{d} copies the channel axis into another axis"); return false; }
        if (entry.Value == 0 && (k != input.Axis || !ReferenceEquals(output.Pos, input.Pos))) { w.Fail($"{d} copies a dimension onto the channel axis"); return false; }
        if (entry.Value > 0)
        {
            // Interleaved heads with a literal size: the batch is fixed; the entry is batch x heads.
            if (scale == 0) scale = entry.Value / output.Length;
            w.Group.Indices.Add(edit = new IndexEdit(entry.Node, entry.Input, entry.Entry, output.Pos, scale));
        }
        return true;
    }

    /// <summary>Where entry <paramref name="k"/> of a Reshape's target is a constant: the target itself or a constant part of the Concat that builds it.</summary>
    static (NodeProto Node, int Input, int Entry, long Value)? TargetEntry(ChannelWalk w, NodeProto reshape, int k)
    {
        if (w.Ints(reshape, 1) is { } v) return k < v.Length ? (reshape, 1, k, v[k]) : null;
        if (!w.Index.Producer.TryGetValue(reshape.Input[1], out var concat) || concat.OpType != "Concat" || concat.Domain is not ("" or "ai.onnx")) return null;
        int offset = 0;
        for (int i = 0; i < concat.Input.Count; i++)
        {
            if (w.Shape(concat.Input[i]) is not { Length: 1 } s) return null;
            if (k < offset + s[0]) return w.Ints(concat, i) is { } part ? (concat, i, k - offset, part[k - offset]) : null;
            offset += (int)s[0];
        }
        return null;
    }

    static long Product(ReadOnlySpan<long> dims) => CostModel.Product(dims);

    /// <summary>
    /// The channel axis merged with the axes after it (each channel a block) and with static axes before it: the output
    /// track, or null when no output axis holds the channels that way (at both probe sizes).
    /// </summary>
    public static Track? Merge(ChannelWalk w, NodeProto node, Track t, long[] inShape, long[] outShape)
    {
        var other = Alternate(w, node);
        for (int k = 0; k < outShape.Length; k++)
        {
            if (MergeAt(t, inShape, outShape, k) is not { } at || (other is { } alt && MergeAt(t, alt.In, alt.Out, k) != at)) continue;
            var (run, copies) = at;
            if (copies > 1 && (t.Interleaved || !w.IsStatic(node.Output[0], k))) return null;
            long length = t.Length;
            var pos = new int[t.Pos.Length][];
            for (int u = 0; u < pos.Length; u++)
            {
                var list = new List<int>();
                for (long o = 0; o < copies; o++)
                    foreach (int p in t.Pos[u])
                        for (long j = 0; j < run; j++) list.Add(checked((int)((o * length + p) * run + j)));
                pos[u] = [.. list];
            }
            return new Track(k, outShape.Length, checked((int)outShape[k]), pos);
        }
        return null;
    }

    /// <summary>Whether output axis k holds copies x (channels x run) of the input's channel axis: (run, copies), else null.</summary>
    static (long Run, long Copies)? MergeAt(Track t, long[] inShape, long[] outShape, int k)
    {
        if (k >= outShape.Length || t.Axis >= inShape.Length) return null;
        long length = t.Length, inner = Product(inShape.AsSpan(t.Axis + 1)), outer = Product(inShape.AsSpan(0, t.Axis));
        long interleave = t.Interleaved ? inShape[t.Axis] / length : 1;
        long s = Product(outShape.AsSpan(k + 1));
        if (s == 0 || inner % s != 0) return null;
        long run = inner / s;
        if (outShape[k] % (length * run) != 0) return null;
        long copies = outShape[k] / (length * run);
        return Product(outShape.AsSpan(0, k)) * copies == outer * interleave ? (run, copies) : null;
    }

    /// <summary>The node's input and output shapes at the second probe size, when there is one.</summary>
    static (long[] In, long[] Out)? Alternate(ChannelWalk w, NodeProto node) =>
        w.Context.Alternate is { } b && b.Shape(node.Input[0]) is { } i && b.Shape(node.Output[0]) is { } o ? (i, o) : null;

    /// <summary>
    /// The channel axis split into (heads, block), the heads alone on an axis or merged with the axes before them (the
    /// batch): each unit must be whole blocks; units of single channels ask for a retry with blocks.
    /// </summary>
    static Track? Split(ChannelWalk w, NodeProto node, Track t, long[] inShape, long[] outShape)
    {
        var other = Alternate(w, node);
        for (int k = outShape.Length - 1; k >= 0; k--)
        {
            if (SplitAt(t, inShape, outShape, k) is not { } at) continue;
            if (other is { } alt && (SplitAt(t, alt.In, alt.Out, k) is not { } at2 || (at2.Block, at2.Heads) != (at.Block, at.Heads))) continue;
            var (block, heads, copies) = at;
            var pos = new int[t.Pos.Length][];
            bool singles = true, whole = true;
            for (int u = 0; u < pos.Length; u++)
            {
                var byHead = t.Pos[u].GroupBy(p => p / (int)block).ToList();
                if (t.Pos[u].Length > 1) singles = false;
                if (byHead.Any(h => h.Count() != block)) whole = false;
                pos[u] = byHead.Select(h => h.Key).Order().ToArray();
            }
            string d = ChannelWalk.Describe(node);
            if (!whole)
                return singles ? w.Split((int)block, $"{d} splits the channels into {heads} heads of {block}")
                    : w.Fail($"{d} splits the channels into blocks of {block} that the units do not fill");
            return new Track(k, outShape.Length, (int)heads, pos, copies > 1 || !w.IsStatic(node.Output[0], k));
        }
        return null;
    }

    /// <summary>Whether output axis k holds (copies x heads) with blocks of channels after it: (block, heads, copies), else null.</summary>
    static (long Block, long Heads, long Copies)? SplitAt(Track t, long[] inShape, long[] outShape, int k)
    {
        if (k >= outShape.Length || t.Axis >= inShape.Length) return null;
        long length = t.Length, inner = Product(inShape.AsSpan(t.Axis + 1)), outer = Product(inShape.AsSpan(0, t.Axis));
        long s = Product(outShape.AsSpan(k + 1));
        if (s == 0 || s % inner != 0) return null;
        long block = s / inner;
        if (block <= 1 || block >= length || length % block != 0) return null;
        long heads = length / block;
        if (outShape[k] % heads != 0) return null;
        long copies = outShape[k] / heads;
        return Product(outShape.AsSpan(0, k)) * copies == outer ? (block, heads, copies) : null;
    }
}
