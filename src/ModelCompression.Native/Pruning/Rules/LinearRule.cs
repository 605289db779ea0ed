using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// MatMul and Gemm. As a member: its output columns (weight and bias), in blocks when the units are heads. As a consumer
/// with a constant weight: the weight's input rows (a sink); channels on other axes pass through. A MatMul of two
/// computed tensors (attention's Q·Kᵀ and P·V) carries channels on batch axes (heads) through, coupling both operands,
/// and ties channels that both operands contract.
/// </summary>
internal sealed class LinearRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["MatMul", "Gemm"];
    public override bool FollowsInterleaved => true;

    public override bool ReadsWeights => true;

    public override LayerShape? Layer(NodeProto node, TensorProto weight, out string? why)
    {
        why = null;
        if (weight.Dims.Count != 2)
        {
            why = node.OpType == "MatMul" ? $"MatMul weight has rank {weight.Dims.Count}; only 2-D weights are pruned" : "Gemm weight is not 2-D";
            return null;
        }
        var (k, n) = ((int)weight.Dims[0], (int)weight.Dims[1]);
        if (node.OpType == "MatMul") return new LayerShape(WeightLayout.InputMajor, n, k, ActivationAxis: -1);
        int axis = GraphIndex.IntAttr(node, "transA", 0) != 0 ? 0 : 1;
        return GraphIndex.IntAttr(node, "transB", 0) != 0 ? new LayerShape(WeightLayout.OutputMajor, k, n, axis) : new LayerShape(WeightLayout.InputMajor, n, k, axis);
    }

    public override long Flops(NodeProto node, ShapeProbe probe)
    {
        if (probe.Shape(node.Output[0]) is not { } output || probe.Shape(node.Input[0]) is not { Length: > 0 } a) return 0;
        if (node.OpType == "MatMul") return 2 * CostModel.Product(output) * a[^1];
        if (a.Length != 2) return 0;
        return 2 * CostModel.Product(output) * (GraphIndex.IntAttr(node, "transA", 0) != 0 ? a[0] : a[1]);
    }

    public override (string Tensor, int Axis)? SinkInput(NodeProto node, SliceEdit edit)
    {
        if (node.OpType == "MatMul") return edit.Axis == 0 ? (node.Input[0], -1) : null;
        bool transB = GraphIndex.IntAttr(node, "transB", 0) != 0;
        return GraphIndex.IntAttr(node, "transA", 0) == 0 && edit.Axis == (transB ? 1 : 0) ? (node.Input[0], 1) : null;
    }

    public override Track? Start(ChannelWalk w, int member)
    {
        var m = w.Group.Members[member];
        var (p, t) = (m.Node, m.Target!);
        if (w.Probe.Shape(p.Output[0]) is not { } outShape) return w.Fail("its output shape is unknown");
        var pos = w.Group.MemberPositions(member, m.Columns);
        if (p.OpType == "MatMul")
        {
            w.Slice(p, 1, 1, pos);
            return new Track(outShape.Length - 1, outShape.Length, t.Outputs, pos);
        }
        w.Slice(p, 1, GraphIndex.IntAttr(p, "transB", 0) != 0 ? 0 : 1, pos);
        if (p.Input.Count > 2 && p.Input[2].Length > 0)
        {
            var c = w.Constant(p.Input[2]);
            if (c is null) return w.Fail("its bias is computed, not a constant");
            if (c.Dims.Count == 2 && c.Dims[0] != 1) return w.Fail("its bias is a full matrix");
            if (c.Dims.Count > 0 && c.Dims[^1] == t.Outputs) w.Slice(p, 2, c.Dims.Count - 1, pos);
            else if (c.Dims.Count > 0 && c.Dims[^1] != 1) return w.Fail("its bias does not broadcast per output");
        }
        return new Track(1, outShape.Length, t.Outputs, pos);
    }

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        string d = ChannelWalk.Describe(node);
        if (node.OpType == "Gemm")
        {
            if (DataInput(w, node, inputs) is not { } g) return null;
            if (w.Constant(node.Input[1]) is null) return w.Fail($"{d} has a computed weight");
            if (GraphIndex.IntAttr(node, "transA", 0) != 0 || g.Axis != 1) return w.Fail($"{d} reads the channels transposed");
            w.Slice(node, 1, GraphIndex.IntAttr(node, "transB", 0) != 0 ? 1 : 0, g.Pos);
            w.Sink(node);
            return null;
        }
        var weight = w.Constant(node.Input[1]);
        if (weight is null && w.Constant(node.Input[0]) is not null) return w.Fail($"{d} multiplies a constant by the channels");
        if (weight is not null)
        {
            if (inputs.Count != 1 || inputs[0].Index != 0) return w.Fail($"{d} reads the channels through its weight");
            var t = inputs[0].Track;
            if (weight.Dims.Count != 2) return w.Fail($"{d} multiplies the channels with a weight of rank {weight.Dims.Count}");
            if (t.Rank < 2) return w.Fail($"{d} reads a vector");
            if (t.Axis == t.Rank - 1)
            {
                if (t.Interleaved) return w.Fail($"{d} contracts heads merged with the batch axis");
                w.Slice(node, 1, 0, t.Pos);
                w.Sink(node);
                return null;
            }
            return t;   // rows or batch axes pass through a product with a 2-D weight
        }
        return Batched(w, node, inputs);
    }

    /// <summary>
    /// MatMul of two computed tensors [..., n, k] x [..., k, m] (with <paramref name="transA"/>/<paramref name="transB"/>
    /// the last two axes of an operand swapped, as FusedMatMul reads them).
    /// </summary>
    public static Track? Batched(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs, bool transA = false, bool transB = false)
    {
        string d = ChannelWalk.Describe(node);
        var a = w.Shape(node.Input[0]);
        var b = w.Shape(node.Input[1]);
        if (a is null || b is null || a.Length < 2 || b.Length < 2) return w.Fail($"{d} multiplies vectors or tensors of unknown shape");
        int outRank = Math.Max(a.Length, b.Length);
        if (inputs.Count == 2 && (inputs[0].Track.Repeat is null) != (inputs[1].Track.Repeat is null))
        {
            // Query heads meet key/value heads repeated for them (grouped-query attention).
            var (query, repeated) = inputs[0].Track.Repeat is null ? (inputs[0].Track, inputs[1].Track) : (inputs[1].Track, inputs[0].Track);
            int heads = query.Rank - query.Axis;
            if (heads > 2 && repeated.Rank - repeated.Axis == heads)
                return HeadRepeat.Meet(w, node, query, repeated) is { } met ? new Track(outRank - heads, outRank, met.Length, met.Pos) : null;
        }
        Track? result = null;
        var parts = new List<int[][]>();
        foreach (var (index, t) in inputs)
        {
            int other = 1 - index;
            var otherShape = index == 0 ? b : a;
            w.TryTrack(node.Input[other], out var ot);
            // Counted from the end: 1 or 2 for the matrix axes (swapped when transposed), more for batch axes.
            bool swapped = index == 0 ? transA : transB;
            int fromEnd = t.Rank - t.Axis is var f && f <= 2 && swapped ? 3 - f : t.Rank - t.Axis;
            bool contracted = index == 0 ? fromEnd == 1 : fromEnd == 2;
            if (contracted)
            {
                // Both operands must lose the same positions of the contracted axis; nothing of it reaches the output.
                int otherAxis = otherShape.Length - (index == 0 ? (transB ? 1 : 2) : (transA ? 2 : 1));
                if (ot is null || ot.Axis != otherAxis || ot.Length != t.Length || ot.Interleaved || t.Interleaved)
                    return ot is null && w.Constant(node.Input[other]) is null
                        ? w.Couple(node.Input[other], $"coupled: {d} contracts the channels with '{node.Input[other]}'")
                        : w.Fail($"{d} contracts the channels with differently laid out ones");
                w.Group.Ties.Add(ChannelWalk.Union([t.Pos, ot.Pos]));
                w.Sink(node);
                return null;
            }
            if (fromEnd > 2)
            {
                // A batch axis (heads): the other operand must carry the same channels there, or broadcast.
                int oa = otherShape.Length - fromEnd;
                if (ot is not null)
                {
                    if (ot.Rank - ot.Axis != fromEnd || ot.Length != t.Length || ot.Interleaved != t.Interleaved)
                        return w.Fail($"{d} multiplies the heads with differently laid out ones");
                }
                else if (oa >= 0 && otherShape[oa] != 1)
                {
                    if (w.Constant(node.Input[other]) is not null) return w.Fail($"{d} multiplies the heads with a constant");
                    return w.Couple(node.Input[other], $"coupled: {d} multiplies the heads with '{node.Input[other]}' (attention; pruned jointly)");
                }
                result = new Track(outRank - fromEnd, outRank, t.Length, t.Pos, t.Interleaved);
                parts.Add(t.Pos);
                continue;
            }
            if (t.Interleaved) return w.Fail($"{d} reads heads merged with the batch axis as a matrix axis");
            // Rows of the left operand or columns of the right one: they pass to the output's same axis.
            result = new Track(outRank - fromEnd, outRank, t.Length, t.Pos);
            parts.Add(t.Pos);
        }
        if (result is null) return null;
        if (parts.Count > 1 && inputs[0].Track.Rank - inputs[0].Track.Axis != inputs[1].Track.Rank - inputs[1].Track.Axis)
            return w.Fail($"{d} carries the channels on two different axes");
        return result with { Pos = ChannelWalk.Union(parts) };
    }
}
