using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// ONNX Runtime's com.microsoft MatMulNBits (weight-only quantized MatMul: blocks of 2-8 bit weights along the input
/// channels with a scale, and zero points packed per row): its weight cannot lose input channels without being
/// quantized again, and its packed rows are not pruned as a layer's. The rule stops the walk with that reason (prune
/// the float model, then quantize) and counts its FLOPs.
/// </summary>
internal sealed class MatMulNBitsRule : ChannelRule
{
    public override string Domain => "com.microsoft";
    public override IReadOnlyList<string> OpTypes { get; } = ["MatMulNBits"];
    public override bool ReadsWeights => true;

    const string Advice = "prune the float model first, then quantize it (Invoke-ModelPruning, then Invoke-ModelQuantization)";

    public override LayerShape? Layer(NodeProto node, TensorProto weight, out string? why)
    {
        why = $"its weight is quantized to {GraphIndex.IntAttr(node, "bits", 4)}-bit blocks; {Advice}";
        return null;
    }

    public override long Flops(NodeProto node, ShapeProbe probe) => probe.Shape(node.Output[0]) is { } output
        ? 2 * CostModel.Product(output) * GraphIndex.IntAttr(node, "K", 0) : 0;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs) =>
        w.Fail($"its channels reach {ChannelWalk.Describe(node)}, whose {GraphIndex.IntAttr(node, "bits", 4)}-bit blocks cannot lose input channels without being quantized again; {Advice}");
}
