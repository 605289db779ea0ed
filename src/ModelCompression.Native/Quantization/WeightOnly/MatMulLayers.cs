using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// MatMul and plain Gemm (no transA, alpha = beta = 1): the constant weight B [K, N] (Gemm with transB: [N, K]) becomes
/// MatMulNBits, or blocked DequantizeLinear + MatMul in the standard format; a Gemm bias becomes an Add.
/// </summary>
internal sealed class MatMulLayers : ILayerHandler
{
    public int WeightSlot => 1;

    public Layer? Plan(NodeProto node, WeightOnlyContext q, out bool computedWeight)
    {
        computedWeight = false;
        if (WeightSource.Input(node, 0) is not { } a || WeightSource.Input(node, 1) is not { } b || WeightSource.Output(node) is null)
        {
            q.Skip(node, $"{node.OpType} without an input A, a weight B or an output");
            return null;
        }
        string? bias = null;
        bool transpose = false;
        if (node.OpType == "Gemm")
        {
            if ((IntAttr(node, "transA") ?? 0) != 0 || (FloatAttr(node, "alpha") ?? 1f) != 1f || (FloatAttr(node, "beta") ?? 1f) != 1f)
            { q.Skip(node, "Gemm with transA, alpha or beta other than the defaults"); return null; }
            transpose = (IntAttr(node, "transB") ?? 0) != 0;
            bias = WeightSource.Input(node, 2);
        }
        if (WeightSource.Resolve(q.Index, b, out string reason) is not { } w)
        {
            computedWeight = reason == WeightSource.NotConstant;
            q.Skip(node, reason);
            return null;
        }
        if (w.Compute == DT.Bfloat16) { q.Skip(node, "computes in bfloat16; ONNX Runtime's CPU MatMulNBits has float32 and float16 kernels only"); return null; }
        if (w.Tensor.Dims.Count != 2) { q.Skip(node, $"weight has rank {w.Tensor.Dims.Count}; block quantization needs a 2-D weight"); return null; }
        long rows = w.Tensor.Dims[0], cols = w.Tensor.Dims[1];
        if (rows < 1 || cols < 1 || rows * cols > Array.MaxLength) { q.Skip(node, $"weight of shape [{rows},{cols}] is empty or too large for one array"); return null; }
        var (k, n) = transpose ? ((int)cols, (int)rows) : ((int)rows, (int)cols);
        return new Layer(node, this, w, k, n, transpose, q.Heads.Contains(node), a, bias);
    }

    public string? Unsupported(Layer layer, int bits, WeightOnlyFormat format) => null;

    public StoredWeight Store(Layer layer, BlockQuantized bq, WeightOnlyContext q) =>
        q.Format == WeightOnlyFormat.MatMulNBits ? StoreNBits(layer, bq, q) : StoreStandard(layer, bq, q);

    static StoredWeight StoreNBits(Layer layer, BlockQuantized bq, WeightOnlyContext q)
    {
        string source = layer.Weight.Name;
        int blocks = bq.BlocksPerColumn, blob = bq.BlockSize * bq.Bits / 8;
        string b = q.Add(TensorData.FromRaw(q.Index.Fresh(source + $"_Q{bq.Bits}"), DT.Uint8, [bq.N, blocks, blob], bq.PackedCodes()));
        string s = q.AddScales(q.Index.Fresh(source + $"_Q{bq.Bits}_scales"), [(long)bq.N * blocks], bq.Scales, layer.Weight.Compute);
        string? z = null;
        if (!bq.Symmetric)
        {
            var zp = bq.PackedZeroPoints();
            z = q.Add(TensorData.FromRaw(q.Index.Fresh(source + $"_Q{bq.Bits}_zero_points"), DT.Uint8, [zp.Length], zp));
        }
        return new StoredWeight(b, s, z, bq.K, bq.N, bq.Bits, bq.BlockSize, bq.Symmetric);
    }

    static StoredWeight StoreStandard(Layer layer, BlockQuantized bq, WeightOnlyContext q)
    {
        int k = bq.K, n = bq.N, blocks = bq.BlocksPerColumn, bits = bq.Bits;
        // Back to [K, N] row-major; symmetric codes become signed values (zero point 0, omitted).
        var values = new byte[(long)k * n];
        int offset = 1 << (bits - 1);
        for (int r = 0; r < k; r++)
            for (int c = 0; c < n; c++)
            {
                int code = bq.Code(r, c);
                values[(long)r * n + c] = (byte)(bq.Symmetric ? code - offset : code);
            }
        var scales = new float[(long)blocks * n];
        var zps = new byte[(long)blocks * n];
        for (int c = 0; c < n; c++)
            for (int g = 0; g < blocks; g++) { scales[(long)g * n + c] = bq.Scales[(long)c * blocks + g]; zps[(long)g * n + c] = bq.ZeroPoints[(long)c * blocks + g]; }
        DT type = bits == 4 ? (bq.Symmetric ? DT.Int4 : DT.Uint4) : (bq.Symmetric ? DT.Int8 : DT.Uint8);
        string source = layer.Weight.Name;
        string b = q.Add(TensorData.FromRaw(q.Index.Fresh(source + $"_Q{bits}"), type, [k, n], bits == 4 ? Pack4(values) : values));
        string s = q.AddScales(q.Index.Fresh(source + $"_Q{bits}_scales"), [blocks, n], scales, layer.Weight.Compute);
        string? z = bq.Symmetric ? null : q.Add(TensorData.FromRaw(q.Index.Fresh(source + $"_Q{bits}_zero_points"), type, [blocks, n], bits == 4 ? Pack4(zps) : zps));
        return new StoredWeight(b, s, z, k, n, bits, bq.BlockSize, bq.Symmetric);
    }

    /// <summary>Two 4-bit values per byte, the first in the low nibble (ONNX's int4/uint4 layout).</summary>
    static byte[] Pack4(byte[] values)
    {
        var packed = new byte[(values.Length + 1) / 2];
        for (long i = 0; i < values.Length; i++)
            packed[i / 2] |= (byte)((i & 1) == 0 ? values[i] & 0x0F : (values[i] & 0x0F) << 4);
        return packed;
    }

    public IReadOnlyList<NodeProto> Emit(Layer layer, StoredWeight w, WeightOnlyContext q)
    {
        var node = layer.Node;
        string output = node.Output[0];
        string baseName = string.IsNullOrEmpty(node.Name) ? q.Index.Fresh(node.OpType) : node.Name;
        string product = layer.Bias is null ? output : q.Index.Fresh(output + "_matmul");
        var result = new List<NodeProto>();
        if (q.Format == WeightOnlyFormat.MatMulNBits)
        {
            var inputs = new List<string> { q.ActivationOf(layer), w.Data, w.Scales };
            if (w.ZeroPoints is not null) inputs.Add(w.ZeroPoints);
            var attrs = new List<AttributeProto>
            {
                GraphBuilder.Attr("K", (long)w.K), GraphBuilder.Attr("N", (long)w.N), GraphBuilder.Attr("bits", (long)w.Bits), GraphBuilder.Attr("block_size", (long)w.BlockSize),
            };
            if (q.Options.AccuracyLevel is { } level) attrs.Add(GraphBuilder.Attr("accuracy_level", (long)level));
            result.Add(Node("MatMulNBits", q.Index.Fresh(baseName + "_Q" + w.Bits), inputs, [product], MicrosoftDomain, [.. attrs]));
        }
        else
        {
            string weight = q.Index.Fresh(w.Data + "_dequantized");
            var dqInputs = new List<string> { w.Data, w.Scales };
            if (w.ZeroPoints is not null) dqInputs.Add(w.ZeroPoints);
            result.Add(Node("DequantizeLinear", q.Index.Fresh(baseName + "_DequantizeLinear"), dqInputs, [weight], "",
                GraphBuilder.Attr("axis", 0L), GraphBuilder.Attr("block_size", (long)w.BlockSize)));
            result.Add(Node("MatMul", q.Index.Fresh(baseName + "_MatMul"), [q.ActivationOf(layer), weight], [product]));
        }
        if (layer.Bias is not null) result.Add(Node("Add", q.Index.Fresh(baseName + "_bias_add"), [product, node.Input[2]], [output]));
        return result;
    }

    public string Describe(Layer layer, WeightOnlyFormat format) =>
        (format == WeightOnlyFormat.MatMulNBits ? "MatMulNBits" : "DequantizeLinear + MatMul")
        + (layer.Weight.Compute == DT.Float16 ? " in float16" : "")
        + (layer.Weight.ThroughCast ? $" (from {ElementTypes.Name((int)layer.Weight.Storage)} storage)" : "");
}
