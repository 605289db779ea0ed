using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>Parameter and FLOP counts: FLOPs of MatMul, Gemm, Conv and ConvTranspose (2 per multiply-add) at the probe's shapes.</summary>
internal static class CostModel
{
    public static long Parameters(GraphProto graph) => ParameterCount.Of(graph);

    public static long Flops(GraphProto graph, ShapeProbe probe)
    {
        long total = 0;
        foreach (var node in graph.Node) total += Flops(node, probe);
        return total;
    }

    public static long Flops(NodeProto node, ShapeProbe probe)
    {
        if (node.Domain.Length != 0 || node.Output.Count == 0) return 0;
        var output = probe.Shape(node.Output[0]);
        if (output is null) return 0;
        long outCount = Product(output);
        switch (node.OpType)
        {
            case "MatMul":
                {
                    var a = probe.Shape(node.Input[0]);
                    return a is { Length: > 0 } ? 2 * outCount * a[^1] : 0;
                }
            case "Gemm":
                {
                    var a = probe.Shape(node.Input[0]);
                    if (a is not { Length: 2 }) return 0;
                    long k = GraphIndex.IntAttr(node, "transA", 0) != 0 ? a[0] : a[1];
                    return 2 * outCount * k;
                }
            case "Conv":
                {
                    var w = probe.Shape(node.Input[1]);
                    return w is { Length: >= 3 } ? 2 * outCount * Product(w.AsSpan(1)) : 0;
                }
            case "ConvTranspose":
                {
                    var x = probe.Shape(node.Input[0]);
                    var w = probe.Shape(node.Input[1]);
                    return x is null || w is not { Length: >= 3 } ? 0 : 2 * Product(x) * Product(w.AsSpan(1));
                }
            default: return 0;
        }
    }

    public static long Product(ReadOnlySpan<long> dims)
    {
        long p = 1;
        foreach (long d in dims) p *= d;
        return p;
    }
}
