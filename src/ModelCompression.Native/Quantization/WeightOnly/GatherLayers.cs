using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Embedding tables: Gather (axis 0) over a constant 2-D float table [V, D] becomes com.microsoft GatherBlockQuantized
/// with the rows block-quantized along D (uint8 data [V, D*bits/8], scales [V, blocks], zero points packed per row),
/// which gathers and dequantizes only the rows asked for. Gathers over computed or small tensors (shape arithmetic) are
/// not weights and are left alone without a report entry.
/// </summary>
internal sealed class GatherLayers : ILayerHandler
{
    const int MinElements = 256;

    public int WeightSlot => 0;

    public Layer? Plan(NodeProto node, WeightOnlyContext q, out bool computedWeight)
    {
        computedWeight = false;
        if (WeightSource.Input(node, 0) is not { } data || WeightSource.Output(node) is null) return null;
        if (WeightSource.Resolve(q.Index, data, out _) is not { } w || TensorData.ElementCount(w.Tensor) < MinElements) return null;
        if (WeightSource.Input(node, 1) is null) { q.Skip(node, "Gather without indices"); return null; }
        if (w.Tensor.Dims.Count != 2) { q.Skip(node, $"table has rank {w.Tensor.Dims.Count}; GatherBlockQuantized reads 2-D tables"); return null; }
        if ((IntAttr(node, "axis") ?? 0) != 0) { q.Skip(node, "gathers along axis 1; embedding lookups gather rows (axis 0)"); return null; }
        if (w.Compute == DT.Bfloat16) { q.Skip(node, "table is bfloat16; ONNX Runtime's CPU GatherBlockQuantized has float32 and float16 kernels only"); return null; }
        long rows = w.Tensor.Dims[0], width = w.Tensor.Dims[1];
        if (rows * width > Array.MaxLength) { q.Skip(node, $"table of shape [{rows},{width}] is too large for one array"); return null; }
        // Blocks along the row (D): the table is quantized as its transpose, weight[K = D, N = V].
        return new Layer(node, this, w, (int)width, (int)rows, transpose: true, head: false, activation: null, bias: null);
    }

    public string? Unsupported(Layer layer, int bits, WeightOnlyFormat format) =>
        format == WeightOnlyFormat.Standard ? "the standard format has no blocked gather (GatherBlockQuantized is ONNX Runtime's)"
        : layer.K * bits % 8 != 0 ? $"rows of {layer.K} values do not fill whole bytes at {bits} bits" : null;

    public StoredWeight Store(Layer layer, BlockQuantized bq, WeightOnlyContext q)
    {
        string source = layer.Weight.Name;
        int blocks = bq.BlocksPerColumn;
        string data = q.Add(TensorData.FromRaw(q.Index.Fresh(source + $"_Q{bq.Bits}"), DT.Uint8, [bq.N, (bq.K * bq.Bits + 7) / 8], bq.PackedRows()));
        string scales = q.AddScales(q.Index.Fresh(source + $"_Q{bq.Bits}_scales"), [bq.N, blocks], bq.Scales, layer.Weight.Compute);
        string? zeroPoints = null;
        if (!bq.Symmetric)
        {
            var zp = bq.PackedZeroPoints();
            zeroPoints = q.Add(TensorData.FromRaw(q.Index.Fresh(source + $"_Q{bq.Bits}_zero_points"), DT.Uint8, [bq.N, zp.Length / bq.N], zp));
        }
        return new StoredWeight(data, scales, zeroPoints, bq.K, bq.N, bq.Bits, bq.BlockSize, bq.Symmetric);
    }

    public IReadOnlyList<NodeProto> Emit(Layer layer, StoredWeight w, WeightOnlyContext q)
    {
        var node = layer.Node;
        var inputs = new List<string> { w.Data, node.Input[1], w.Scales };
        if (w.ZeroPoints is not null) inputs.Add(w.ZeroPoints);
        string name = q.Index.Fresh((string.IsNullOrEmpty(node.Name) ? "Gather" : node.Name) + "_Q" + w.Bits);
        return [Node("GatherBlockQuantized", name, inputs, [node.Output[0]], MicrosoftDomain,
            GraphBuilder.Attr("gather_axis", 0L), GraphBuilder.Attr("quantize_axis", 1L), GraphBuilder.Attr("block_size", (long)w.BlockSize), GraphBuilder.Attr("bits", (long)w.Bits))];
    }

    public string Describe(Layer layer, WeightOnlyFormat format) =>
        "GatherBlockQuantized" + (layer.Weight.Compute == DT.Float16 ? " in float16" : "")
        + (layer.Weight.ThroughCast ? $" (from {ElementTypes.Name((int)layer.Weight.Storage)} storage)" : "");
}
