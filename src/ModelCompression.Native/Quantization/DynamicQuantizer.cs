using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Dynamic int8: constant MatMul/Gemm weights become int8 initializers; activations are quantized at run time.
/// Emitted pattern (standard ops, opset 11+), which ONNX Runtime fuses into DynamicQuantizeMatMul:
/// <c>DynamicQuantizeLinear(A) → MatMulInteger(A_q, W_q, A_zp, W_zp) → Cast(float) → Mul(·, Mul(A_scale, W_scale)) [→ Add(bias)]</c>.
/// Below opset 11 the fused com.microsoft DynamicQuantizeMatMul is emitted directly. Embedding tables read by
/// Gather are stored in int8 and dequantized after the Gather. Conv stays float.
/// </summary>
internal static class DynamicQuantizer
{
    public static readonly string[] DefaultOps = ["MatMul", "Gemm", "Gather"];
    public static readonly string[] SupportedOps = ["MatMul", "Gemm", "Gather"];

    public static (long Before, long After) Run(ModelProto model, QuantizationOptions o, QuantizationReport report, IProgress<QuantizationProgress>? progress, CancellationToken cancel)
    {
        var graph = model.Graph;
        var index = new GraphIndex(model);
        var ops = QuantizationPlan.OpTypes(o, DefaultOps, SupportedOps);
        var type = o.WeightType ?? QuantType.Int8;
        bool symmetric = o.Symmetric ?? type == QuantType.Int8;
        bool perChannel = o.PerChannel ?? false;
        var weights = new WeightQuantizer(index, type, symmetric, o.ReduceRange);
        bool standard = index.Opset >= 11;
        if (!standard)
        {
            EnsureMicrosoftDomain(model);
            report.Warn($"The model's opset is {index.Opset} (< 11, no DynamicQuantizeLinear): MatMul/Gemm use ONNX Runtime's com.microsoft DynamicQuantizeMatMul, which only ONNX Runtime runs.");
        }
        // Activations quantized once, however many MatMuls read them (Q, K and V projections share their input).
        var quantizedActivations = new Dictionary<string, (string Q, string Scale, string Zp)>(StringComparer.Ordinal);
        var newNodes = new List<NodeProto>(graph.Node.Count * 2);

        int candidates = Math.Max(1, graph.Node.Count(n => ops.Contains(n.OpType))), done = 0;
        foreach (var node in graph.Node)
        {
            cancel.ThrowIfCancellationRequested();
            var replacement = node.Domain is "" or "ai.onnx" && ops.Contains(node.OpType) ? Rewrite(node) : null;
            if (ops.Contains(node.OpType)) progress?.Report(new QuantizationProgress("Quantizing weights", (double)++done / candidates));
            if (replacement is null) newNodes.Add(node);
            else newNodes.AddRange(replacement);
            if (node.OpType is "Conv" or "ConvTranspose")
            {
                report.Skip(node, "Conv stays float32 in dynamic mode (ONNX Runtime's dynamic ConvInteger path is slow)");
                report.Warn("Conv layers were left in float32: dynamic quantization of Conv is slow in ONNX Runtime. Use -Mode Static with -CalibrationData to quantize them.");
            }
        }
        graph.Node.Clear();
        graph.Node.AddRange(newNodes);
        RemoveUnused(graph);
        return (weights.BytesBefore, weights.BytesAfter);

        List<NodeProto>? Rewrite(NodeProto node)
        {
            if (MatchesAny(node.Name, o.ExcludeNodes)) { report.Skip(node, "excluded by -ExcludeNode"); return null; }
            if (WeightSource.Output(node) is null || WeightSource.Input(node, 0) is null || node.OpType != "Gather" && WeightSource.Input(node, 1) is null)
            {
                report.Skip(node, $"{node.OpType} without its inputs or an output");
                return null;
            }
            return node.OpType switch
            {
                "MatMul" => MatMul(node, node.Input[0], node.Input[1], transposeB: false, alpha: 1f, bias: null),
                "Gemm" => Gemm(node),
                "Gather" => Gather(node),
                _ => null,
            };
        }

        List<NodeProto>? Gemm(NodeProto node)
        {
            if ((IntAttr(node, "transA") ?? 0) != 0) { report.Skip(node, "transA=1 is not supported by MatMulInteger"); return null; }
            float alpha = FloatAttr(node, "alpha") ?? 1f, beta = FloatAttr(node, "beta") ?? 1f;
            string? bias = node.Input.Count > 2 && node.Input[2] != "" ? node.Input[2] : null;
            if (bias is not null && beta != 1f)
            {
                if (!index.IsFloatConstant(bias, out var c)) { report.Skip(node, $"beta={beta} with a non-constant C"); return null; }
                var values = Onnx.TensorData.ToFloat(c);
                for (int i = 0; i < values.Length; i++) values[i] *= beta;
                bias = index.AddInitializer(Onnx.TensorData.FromFloat(index.Fresh(bias + "_scaled"), c.Dims.ToArray(), values)).Name;
            }
            else if (beta == 0f) bias = null;
            return MatMul(node, node.Input[0], node.Input[1], (IntAttr(node, "transB") ?? 0) != 0, alpha, bias);
        }

        List<NodeProto>? MatMul(NodeProto node, string a, string b, bool transposeB, float alpha, string? bias)
        {
            if (WeightSource.Resolve(index, b, out string reason) is not { } source) { report.Skip(node, reason); return null; }
            if (source.Compute != DT.Float) { SkipHalf(node, source); return null; }
            var w = source.Tensor;
            if (w.Dims.Count != 2) { report.Skip(node, $"weight has rank {w.Dims.Count}; MatMulInteger needs a 2-D weight"); return null; }
            var qw = weights.MatMulWeight(source.Name, w, transposeB, perChannel, alpha);
            string output = node.Output[0];
            string baseName = string.IsNullOrEmpty(node.Name) ? index.Fresh("MatMul") : node.Name;
            var result = new List<NodeProto>();
            if (!standard)
            {
                var inputs = new List<string> { a, qw.Values, qw.Scale, qw.ZeroPoint };
                if (bias is not null) inputs.Add(bias);
                result.Add(Node("DynamicQuantizeMatMul", index.Fresh(baseName + "_quant"), inputs, [output], MicrosoftDomain));
                report.Done(node, Describe(qw, "DynamicQuantizeMatMul"));
                return result;
            }
            if (!quantizedActivations.TryGetValue(a, out var act))
            {
                act = (index.Fresh(a + "_quantized"), index.Fresh(a + "_scale"), index.Fresh(a + "_zero_point"));
                result.Add(Node("DynamicQuantizeLinear", index.Fresh(a + "_QuantizeLinear"), [a], [act.Q, act.Scale, act.Zp]));
                quantizedActivations[a] = act;
            }
            string integer = index.Fresh(output + "_MatMulInteger");
            result.Add(Node("MatMulInteger", index.Fresh(baseName + "_quant"), [act.Q, qw.Values, act.Zp, qw.ZeroPoint], [integer]));
            string cast = index.Fresh(output + "_cast");
            result.Add(Node("Cast", index.Fresh(baseName + "_cast"), [integer], [cast], "", Onnx.GraphBuilder.Attr("to", (long)DT.Float)));
            string scale = index.Fresh(output + "_scales");
            result.Add(Node("Mul", index.Fresh(baseName + "_scales_mul"), [act.Scale, qw.Scale], [scale]));
            string scaled = bias is null ? output : index.Fresh(output + "_rescaled");
            result.Add(Node("Mul", index.Fresh(baseName + "_rescale"), [cast, scale], [scaled]));
            if (bias is not null) result.Add(Node("Add", index.Fresh(baseName + "_bias_add"), [scaled, bias], [output]));
            report.Done(node, Describe(qw, "MatMulInteger"));
            return result;
        }

        List<NodeProto>? Gather(NodeProto node)
        {
            // Gathers over computed or small tensors are shape/index arithmetic: nothing to quantize.
            if (WeightSource.Resolve(index, node.Input[0], out _) is not { } source || TensorDataElements(source.Tensor) < 256) return null;
            if (source.Compute != DT.Float) { SkipHalf(node, source); return null; }
            if (WeightSource.Input(node, 1) is null) { report.Skip(node, "Gather without indices"); return null; }
            var table = source.Tensor;
            var qw = weights.WholeTensor(source.Name, table);
            string gathered = index.Fresh(node.Output[0] + "_quantized");
            var gather = node.Clone();
            gather.Input[0] = qw.Values;
            gather.Output[0] = gathered;
            string domain = index.Opset >= 10 ? "" : MicrosoftDomain;
            if (domain != "") EnsureMicrosoftDomain(model);
            var dq = Node("DequantizeLinear", index.Fresh((node.Name == "" ? "Gather" : node.Name) + "_DequantizeLinear"), [gathered, qw.Scale, qw.ZeroPoint], [node.Output[0]], domain);
            report.Done(node, $"{type} table, per tensor; dequantized after the gather");
            return [gather, dq];
        }

        // Dynamic quantization's operators take float32 activations; a float16 graph keeps its float16 nodes.
        void SkipHalf(NodeProto node, WeightSource source)
        {
            report.Skip(node, $"computes in {ElementTypes.Name((int)source.Compute)}: DynamicQuantizeLinear and MatMulInteger take float32 activations");
            report.Warn($"Nodes that compute in {ElementTypes.Name((int)source.Compute)} were left as they are: dynamic int8 quantization needs float32 activations. Quantize the float32 model, or use -Mode WeightOnly, which keeps float16 computation.");
        }

        string Describe(QuantizedWeight qw, string op) =>
            $"{type} weight, {(qw.PerChannel ? "per channel" : "per tensor")}, {(symmetric ? "symmetric" : "asymmetric")}{(o.ReduceRange ? ", reduced range" : "")} → {op}";
    }

    static long TensorDataElements(TensorProto t) => Onnx.TensorData.ElementCount(t);
}
