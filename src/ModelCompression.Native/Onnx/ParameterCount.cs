using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// The one count of a model's parameters (Get-ModelInfo, Compare-Model, pruning reports): the elements of its constant
/// tensors (initializers, sparse initializers and Constant nodes, in subgraphs too), each counted as the logical weights
/// it stands for, whatever its storage. A 4-bit MatMulNBits weight holds K*N parameters in K*N/2 bytes, a 4-bit
/// GatherBlockQuantized table two per byte; scales and zero points of quantized operators (and the weight scales
/// dynamic quantization multiplies in) are quantization metadata, not parameters. So a quantized model has the
/// parameter count of its float original, and its size tells the bytes.
/// </summary>
public static class ParameterCount
{
    /// <summary>Inputs of quantized operators that hold scales, zero points or indices: metadata.</summary>
    static readonly Dictionary<string, int[]> MetadataInputs = new(StringComparer.Ordinal)
    {
        ["QuantizeLinear"] = [1, 2],
        ["DequantizeLinear"] = [1, 2],
        ["MatMulNBits"] = [2, 3, 4],
        ["GatherBlockQuantized"] = [2, 3],
        ["MatMulInteger"] = [2, 3],
        ["ConvInteger"] = [2, 3],
        ["DynamicQuantizeMatMul"] = [2, 3],
        ["MatMulIntegerToFloat"] = [2, 3, 4, 5],
        ["QLinearMatMul"] = [1, 2, 4, 5, 6, 7],
        ["QLinearConv"] = [1, 2, 4, 5, 6, 7],
        ["QGemm"] = [1, 2, 4, 5, 7, 8],
    };

    public static long Of(ModelProto model) => model.Graph is null ? 0 : Of(model.Graph);

    public static long Of(GraphProto graph)
    {
        long n = 0;
        foreach (var (_, parameters) in Tensors(graph)) n += parameters;
        return n;
    }

    /// <summary>Every constant tensor of the graph and its subgraphs, with the parameters it holds (0 for metadata).</summary>
    public static IEnumerable<(TensorProto Tensor, long Parameters)> Tensors(GraphProto graph)
    {
        var consumers = new Dictionary<string, List<(NodeProto Node, int Slot)>>(StringComparer.Ordinal);
        var dynamicScales = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            for (int i = 0; i < node.Input.Count; i++)
            {
                if (node.Input[i].Length == 0) continue;
                if (!consumers.TryGetValue(node.Input[i], out var list)) consumers[node.Input[i]] = list = [];
                list.Add((node, i));
            }
            if (node.OpType == "DynamicQuantizeLinear" && node.Output.Count > 1) dynamicScales.Add(node.Output[1]);
        }
        foreach (var t in graph.Initializer) yield return (t, Count(t, t.Name));
        foreach (var s in graph.SparseInitializer)
            if (s.Values is not null) yield return (s.Values, Count(s.Values, s.Values.Name));
        foreach (var node in graph.Node)
        {
            if (node.OpType == "Constant" && node.Domain is "" or "ai.onnx" && node.Output.Count == 1)
            {
                if (node.Attribute.FirstOrDefault(a => a.Name == "value")?.T is { } value) yield return (value, Count(value, node.Output[0]));
                if (node.Attribute.FirstOrDefault(a => a.Name == "sparse_value")?.SparseTensor?.Values is { } sparse) yield return (sparse, Count(sparse, node.Output[0]));
            }
            foreach (var a in node.Attribute)
            {
                if (a.G is not null) foreach (var x in Tensors(a.G)) yield return x;
                foreach (var g in a.Graphs) foreach (var x in Tensors(g)) yield return x;
            }
        }

        long Count(TensorProto t, string name)
        {
            long elements = TensorData.ElementCount(t);
            if (!consumers.TryGetValue(name, out var uses) || uses.Count == 0) return elements;
            long? logical = null;
            foreach (var (node, slot) in uses)
            {
                if (IsMetadata(node, slot)) continue;
                // Packed storage: the logical weights the operator reads from it.
                if (node.OpType == "MatMulNBits" && slot == 1 && Attr(node, "K") is long k && Attr(node, "N") is long n) logical = k * n;
                else if (node.OpType == "GatherBlockQuantized" && slot == 0 && t.DataType == (int)TensorProto.Types.DataType.Uint8)
                    logical = elements * (8 / Math.Max(1, Attr(node, "bits") ?? 4));
                else return elements;
            }
            return logical ?? 0; // read only as metadata
        }

        bool IsMetadata(NodeProto node, int slot) =>
            MetadataInputs.TryGetValue(node.OpType, out var slots) && slots.Contains(slot)
            // dynamic quantization's weight scale, multiplied into the activation's run-time scale
            || node.OpType == "Mul" && node.Input.Count == 2 && dynamicScales.Contains(node.Input[1 - slot]);
    }

    static long? Attr(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : null;
}
