using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Parameter and FLOP counts: each node's FLOPs (2 per multiply-add) at the probe's shapes, as its channel rule counts
/// them (<see cref="ChannelRule.Flops"/>: MatMul, Gemm, FusedMatMul, Conv, ConvTranspose, attention operators).
/// </summary>
internal static class CostModel
{
    /// <summary>What the FLOP counts cover, for reports.</summary>
    public const string Counted = "MatMul, Gemm, FusedMatMul, Conv, ConvTranspose and attention operators (2 per multiply-add)";

    public static long Parameters(GraphProto graph) => ParameterCount.Of(graph);

    public static long Flops(GraphProto graph, ShapeProbe probe)
    {
        long total = 0;
        foreach (var node in graph.Node) total += Flops(node, probe);
        return total;
    }

    public static long Flops(NodeProto node, ShapeProbe probe) =>
        node.Output.Count == 0 || node.Output[0].Length == 0 ? 0 : ChannelRules.For(node)?.Flops(node, probe) ?? 0;

    public static long Product(ReadOnlySpan<long> dims)
    {
        long p = 1;
        foreach (long d in dims) p *= d;
        return p;
    }
}
