using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// ONNX Runtime's com.microsoft FusedMatMul (a MatMul with a transposed operand and a scale, as Optimize-Model fuses
/// attention's Q·Kᵀ): as MatMul, with the last two axes of an operand swapped where transA/transB say so. A constant
/// weight loses its input rows (a sink).
/// </summary>
internal sealed class FusedMatMulRule : ChannelRule
{
    public override string Domain => "com.microsoft";
    public override IReadOnlyList<string> OpTypes { get; } = ["FusedMatMul"];
    public override bool FollowsInterleaved => true;

    public override long Flops(NodeProto node, ShapeProbe probe) =>
        probe.Shape(node.Output[0]) is { } output && probe.Shape(node.Input[0]) is { Length: >= 2 } a
            ? 2 * CostModel.Product(output) * (GraphIndex.IntAttr(node, "transA", 0) != 0 ? a[^2] : a[^1]) : 0;

    public override (string Tensor, int Axis)? SinkInput(NodeProto node, SliceEdit edit) =>
        GraphIndex.IntAttr(node, "transA", 0) == 0 && edit.Axis == (GraphIndex.IntAttr(node, "transB", 0) != 0 ? 1 : 0) ? (node.Input[0], -1) : null;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        string d = ChannelWalk.Describe(node);
        if (GraphIndex.IntAttr(node, "transBatchA", 0) != 0 || GraphIndex.IntAttr(node, "transBatchB", 0) != 0)
            return w.Fail($"{d} transposes batch axes");
        bool transA = GraphIndex.IntAttr(node, "transA", 0) != 0, transB = GraphIndex.IntAttr(node, "transB", 0) != 0;
        if (w.Constant(node.Input[1]) is not { } weight) return LinearRule.Batched(w, node, inputs, transA, transB);
        if (DataInput(w, node, inputs) is not { } t) return null;
        if (weight.Dims.Count != 2 || t.Interleaved) return w.Fail($"{d} multiplies the channels with a weight of rank {weight.Dims.Count}");
        if (transA) return w.Fail($"{d} reads the channels transposed");
        if (t.Axis != t.Rank - 1) return t;   // rows and batch axes pass
        w.Slice(node, 1, transB ? 1 : 0, t.Pos);
        w.Sink(node);
        return null;
    }
}
