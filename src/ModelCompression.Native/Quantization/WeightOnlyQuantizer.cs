using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Weight-only block quantization of constant MatMul (and plain Gemm) weights to 4 or 8 bits.
/// <list type="bullet">
/// <item>MatMulNBits format: ONNX Runtime's com.microsoft MatMulNBits (B uint8 [N, blocks, blockSize*bits/8],
/// scales [N*blocks], zero points packed per column when asymmetric; attributes K, N, bits, block_size, accuracy_level).</item>
/// <item>Standard format: opset 21 blocked DequantizeLinear (int4/uint4 or int8/uint8, axis 0) feeding the original MatMul;
/// portable to any runtime that implements opset 21.</item>
/// </list>
/// </summary>
internal static class WeightOnlyQuantizer
{
    public static readonly string[] DefaultOps = ["MatMul", "Gemm"];
    public static readonly string[] SupportedOps = ["MatMul", "Gemm"];
    static readonly string[] ReduceOpsChangedIn18 = ["ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare"];

    public static (long Before, long After) Run(ModelProto model, QuantizationOptions o, QuantizationReport report, IProgress<QuantizationProgress>? progress, CancellationToken cancel)
    {
        var graph = model.Graph;
        var index = new GraphIndex(model);
        var ops = QuantizationPlan.OpTypes(o, DefaultOps, SupportedOps);
        int bits = o.Bits ?? 4, blockSize = o.BlockSize ?? 32;
        bool symmetric = o.Symmetric ?? true;
        var format = o.Format ?? WeightOnlyFormat.MatMulNBits;
        if (format == WeightOnlyFormat.Standard) PrepareStandard(model, index);
        else EnsureMicrosoftDomain(model);

        long before = 0, after = 0;
        var cache = new Dictionary<string, (string B, string Scales, string? Zp, int K, int N)>(StringComparer.Ordinal);
        var newNodes = new List<NodeProto>(graph.Node.Count + 16);
        var candidates = graph.Node.Count(n => ops.Contains(n.OpType));
        int done = 0;
        foreach (var node in graph.Node)
        {
            cancel.ThrowIfCancellationRequested();
            List<NodeProto>? replacement = null;
            if (node.Domain is "" or "ai.onnx" && ops.Contains(node.OpType))
            {
                replacement = Rewrite(node);
                progress?.Report(new QuantizationProgress("Quantizing weights", (double)++done / Math.Max(1, candidates)));
            }
            if (replacement is null) newNodes.Add(node); else newNodes.AddRange(replacement);
        }
        graph.Node.Clear();
        graph.Node.AddRange(newNodes);
        RemoveUnused(graph);
        return (before, after);

        List<NodeProto>? Rewrite(NodeProto node)
        {
            if (MatchesAny(node.Name, o.ExcludeNodes)) { report.Skip(node, "excluded by -ExcludeNode"); return null; }
            string? bias = null;
            bool transpose = false;
            if (node.OpType == "Gemm")
            {
                if ((IntAttr(node, "transA") ?? 0) != 0 || (FloatAttr(node, "alpha") ?? 1f) != 1f || (FloatAttr(node, "beta") ?? 1f) != 1f)
                { report.Skip(node, "Gemm with transA, alpha or beta other than the defaults"); return null; }
                transpose = (IntAttr(node, "transB") ?? 0) != 0;
                bias = node.Input.Count > 2 && node.Input[2] != "" ? node.Input[2] : null;
            }
            if (!index.IsFloatConstant(node.Input[1], out var w))
            {
                report.Skip(node, index.Constant(node.Input[1]) is null ? "weight (input B) is not a constant" : "weight is not float32");
                return null;
            }
            if (w.Dims.Count != 2) { report.Skip(node, $"weight has rank {w.Dims.Count}; block quantization needs a 2-D weight"); return null; }
            string source = index.ConstantSource(node.Input[1])!;
            string key = source + "|" + transpose;
            if (!cache.TryGetValue(key, out var q))
            {
                var values = TensorData.ToFloat(w);
                int k = (int)w.Dims[0], n = (int)w.Dims[1];
                if (transpose)
                {
                    var t = new float[values.Length];
                    for (int r = 0; r < k; r++) for (int c = 0; c < n; c++) t[c * k + r] = values[r * n + c];
                    values = t;
                    (k, n) = (n, k);
                }
                var bq = BlockQuantized.Quantize(values, k, n, bits, blockSize, symmetric, source);
                before += TensorData.StorageBytes(w);
                q = format == WeightOnlyFormat.MatMulNBits ? StoreNBits(source, bq) : StoreStandard(source, bq);
                cache[key] = q;
            }
            string output = node.Output[0];
            string baseName = string.IsNullOrEmpty(node.Name) ? index.Fresh(node.OpType) : node.Name;
            string product = bias is null ? output : index.Fresh(output + "_matmul");
            var result = new List<NodeProto>();
            if (format == WeightOnlyFormat.MatMulNBits)
            {
                var inputs = new List<string> { node.Input[0], q.B, q.Scales };
                if (q.Zp is not null) inputs.Add(q.Zp);
                var attrs = new List<AttributeProto>
                {
                    GraphBuilder.Attr("K", (long)q.K), GraphBuilder.Attr("N", (long)q.N), GraphBuilder.Attr("bits", (long)bits), GraphBuilder.Attr("block_size", (long)blockSize),
                };
                if (o.AccuracyLevel is { } level) attrs.Add(GraphBuilder.Attr("accuracy_level", (long)level));
                result.Add(Node("MatMulNBits", index.Fresh(baseName + "_Q" + bits), inputs, [product], MicrosoftDomain, [.. attrs]));
            }
            else
            {
                string weight = index.Fresh(q.B + "_dequantized");
                var dqInputs = new List<string> { q.B, q.Scales };
                if (q.Zp is not null) dqInputs.Add(q.Zp);
                result.Add(Node("DequantizeLinear", index.Fresh(baseName + "_DequantizeLinear"), dqInputs, [weight], "",
                    GraphBuilder.Attr("axis", 0L), GraphBuilder.Attr("block_size", (long)blockSize)));
                result.Add(Node("MatMul", index.Fresh(baseName + "_MatMul"), [node.Input[0], weight], [product]));
            }
            if (bias is not null) result.Add(Node("Add", index.Fresh(baseName + "_bias_add"), [product, bias], [output]));
            report.Done(node, $"{bits}-bit blocks of {blockSize}, {(symmetric ? "symmetric" : "asymmetric")} → {(format == WeightOnlyFormat.MatMulNBits ? "MatMulNBits" : "DequantizeLinear + MatMul")}");
            return result;
        }

        (string, string, string?, int, int) StoreNBits(string source, BlockQuantized bq)
        {
            int blocks = bq.BlocksPerColumn, blob = blockSize * bits / 8;
            string bName = index.Fresh(source + $"_Q{bits}");
            var packed = bq.PackedCodes();
            index.AddInitializer(Bytes(bName, DT.Uint8, [bq.N, blocks, blob], packed));
            string sName = index.Fresh(source + $"_Q{bits}_scales");
            index.AddInitializer(TensorData.FromFloat(sName, [(long)bq.N * blocks], bq.Scales));
            string? zName = null;
            after += packed.Length + bq.Scales.Length * 4L;
            if (!symmetric)
            {
                zName = index.Fresh(source + $"_Q{bits}_zero_points");
                var zp = bq.PackedZeroPoints();
                index.AddInitializer(Bytes(zName, DT.Uint8, [zp.Length], zp));
                after += zp.Length;
            }
            return (bName, sName, zName, bq.K, bq.N);
        }

        (string, string, string?, int, int) StoreStandard(string source, BlockQuantized bq)
        {
            int k = bq.K, n = bq.N, blocks = bq.BlocksPerColumn, padded = blocks * blockSize;
            // Back to [K, N] row-major; symmetric codes become signed values (zero point 0, omitted).
            var values = new byte[k * n];
            int offset = 1 << (bits - 1);
            for (int r = 0; r < k; r++)
                for (int c = 0; c < n; c++)
                {
                    int code = bq.Codes[(long)c * padded + r];
                    values[r * n + c] = (byte)(symmetric ? code - offset : code);
                }
            var scales = new float[blocks * n];
            var zps = new byte[blocks * n];
            for (int c = 0; c < n; c++)
                for (int b = 0; b < blocks; b++) { scales[b * n + c] = bq.Scales[c * blocks + b]; zps[b * n + c] = bq.ZeroPoints[c * blocks + b]; }
            DT type = bits == 4 ? (symmetric ? DT.Int4 : DT.Uint4) : (symmetric ? DT.Int8 : DT.Uint8);
            string bName = index.Fresh(source + $"_Q{bits}");
            byte[] raw = bits == 4 ? Pack4(values) : values;
            index.AddInitializer(Bytes(bName, type, [k, n], raw));
            string sName = index.Fresh(source + $"_Q{bits}_scales");
            index.AddInitializer(TensorData.FromFloat(sName, [blocks, n], scales));
            after += raw.Length + scales.Length * 4L;
            string? zName = null;
            if (!symmetric)
            {
                zName = index.Fresh(source + $"_Q{bits}_zero_points");
                byte[] zraw = bits == 4 ? Pack4(zps) : zps;
                index.AddInitializer(Bytes(zName, type, [blocks, n], zraw));
                after += zraw.Length;
            }
            return (bName, sName, zName, k, n);
        }
    }

    /// <summary>Two 4-bit values per byte, the first in the low nibble (ONNX's int4/uint4 layout).</summary>
    static byte[] Pack4(byte[] values)
    {
        var packed = new byte[(values.Length + 1) / 2];
        for (int i = 0; i < values.Length; i++)
            packed[i / 2] |= (byte)((i & 1) == 0 ? values[i] & 0x0F : (values[i] & 0x0F) << 4);
        return packed;
    }

    /// <summary>The standard format needs opset 21 (blocked DequantizeLinear, int4): raise the opset when that changes no operator the graph uses.</summary>
    static void PrepareStandard(ModelProto model, GraphIndex index)
    {
        if (index.Opset >= 21) return;
        if (index.Opset < 13)
            throw new EngineException("QuantizationOpsetTooOld", EngineErrorKind.NotImplemented,
                $"-Format Standard needs opset 21 (blocked DequantizeLinear) and the model's opset {index.Opset} is too old to raise safely (operators changed at opsets 11 and 13). Use -Format MatMulNBits.");
        if (index.Opset < 18 && model.Graph.Node.FirstOrDefault(n => ReduceOpsChangedIn18.Contains(n.OpType)) is { } reduce)
            throw new EngineException("QuantizationOpsetTooOld", EngineErrorKind.NotImplemented,
                $"-Format Standard needs opset 21; raising opset {index.Opset} would change {reduce.OpType} ('{reduce.Name}'), whose axes moved from attribute to input at opset 18. Use -Format MatMulNBits.");
        foreach (var op in model.OpsetImport) if (op.Domain is "" or "ai.onnx") op.Version = 21;
        if (model.IrVersion < 10) model.IrVersion = 10;
    }
}
