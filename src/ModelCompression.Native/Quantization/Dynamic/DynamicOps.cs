using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>MatMul with a constant weight: int8 weight, activation quantized at run time (MatMulInteger, or DynamicQuantizeMatMul below opset 11).</summary>
internal sealed class DynamicMatMul : IDynamicOp
{
    public List<NodeProto>? Rewrite(NodeProto node, DynamicContext c) => Quantize(node, c, node.Input[0], node.Input[1], transposeB: false, alpha: 1f, bias: null);

    public static List<NodeProto>? Quantize(NodeProto node, DynamicContext c, string a, string b, bool transposeB, float alpha, string? bias)
    {
        var index = c.Index;
        if (WeightSource.Resolve(index, b, out string reason) is not { } source) { c.Report.Skip(node, reason); return null; }
        if (source.Compute != DT.Float) { c.SkipHalf(node, source); return null; }
        var w = source.Tensor;
        if (w.Dims.Count != 2) { c.Report.Skip(node, $"weight has rank {w.Dims.Count}; MatMulInteger needs a 2-D weight"); return null; }
        var qw = c.Weights.MatMulWeight(source.Name, w, transposeB, c.PerChannel, alpha);
        string output = node.Output[0];
        string baseName = string.IsNullOrEmpty(node.Name) ? index.Fresh("MatMul") : node.Name;
        var result = new List<NodeProto>();
        if (!c.Standard)
        {
            var inputs = new List<string> { a, qw.Values, qw.Scale, qw.ZeroPoint };
            if (bias is not null) inputs.Add(bias);
            result.Add(Node("DynamicQuantizeMatMul", index.Fresh(baseName + "_quant"), inputs, [output], MicrosoftDomain));
            c.Report.Done(node, c.Describe(qw, "DynamicQuantizeMatMul"));
            return result;
        }
        if (!c.QuantizedActivations.TryGetValue(a, out var act))
        {
            act = (index.Fresh(a + "_quantized"), index.Fresh(a + "_scale"), index.Fresh(a + "_zero_point"));
            result.Add(Node("DynamicQuantizeLinear", index.Fresh(a + "_QuantizeLinear"), [a], [act.Q, act.Scale, act.Zp]));
            c.QuantizedActivations[a] = act;
        }
        string integer = index.Fresh(output + "_MatMulInteger");
        result.Add(Node("MatMulInteger", index.Fresh(baseName + "_quant"), [act.Q, qw.Values, act.Zp, qw.ZeroPoint], [integer]));
        string cast = index.Fresh(output + "_cast");
        result.Add(Node("Cast", index.Fresh(baseName + "_cast"), [integer], [cast], "", GraphBuilder.Attr("to", (long)DT.Float)));
        string scale = index.Fresh(output + "_scales");
        result.Add(Node("Mul", index.Fresh(baseName + "_scales_mul"), [act.Scale, qw.Scale], [scale]));
        string scaled = bias is null ? output : index.Fresh(output + "_rescaled");
        result.Add(Node("Mul", index.Fresh(baseName + "_rescale"), [cast, scale], [scaled]));
        if (bias is not null) result.Add(Node("Add", index.Fresh(baseName + "_bias_add"), [scaled, bias], [output]));
        c.Report.Done(node, c.Describe(qw, "MatMulInteger"));
        return result;
    }
}

/// <summary>Gemm (no transA): alpha folded into the weight's scale, beta into the bias, then as MatMul with a bias Add.</summary>
internal sealed class DynamicGemm : IDynamicOp
{
    public List<NodeProto>? Rewrite(NodeProto node, DynamicContext c)
    {
        if ((IntAttr(node, "transA") ?? 0) != 0) { c.Report.Skip(node, "transA=1 is not supported by MatMulInteger"); return null; }
        float alpha = FloatAttr(node, "alpha") ?? 1f, beta = FloatAttr(node, "beta") ?? 1f;
        string? bias = node.Input.Count > 2 && node.Input[2] != "" ? node.Input[2] : null;
        if (bias is not null && beta != 1f)
        {
            if (!c.Index.IsFloatConstant(bias, out var constant)) { c.Report.Skip(node, $"beta={beta} with a non-constant C"); return null; }
            var values = TensorData.ToFloat(constant);
            for (int i = 0; i < values.Length; i++) values[i] *= beta;
            bias = c.Index.AddInitializer(TensorData.FromFloat(c.Index.Fresh(bias + "_scaled"), constant.Dims.ToArray(), values)).Name;
        }
        else if (beta == 0f) bias = null;
        return DynamicMatMul.Quantize(node, c, node.Input[0], node.Input[1], (IntAttr(node, "transB") ?? 0) != 0, alpha, bias);
    }
}

/// <summary>Embedding tables: stored int8 per tensor, dequantized after the Gather (only the rows asked for).</summary>
internal sealed class DynamicGather : IDynamicOp
{
    public List<NodeProto>? Rewrite(NodeProto node, DynamicContext c)
    {
        var index = c.Index;
        // Gathers over computed or small tensors are shape/index arithmetic: nothing to quantize.
        if (WeightSource.Resolve(index, node.Input[0], out _) is not { } source || TensorData.ElementCount(source.Tensor) < 256) return null;
        if (source.Compute != DT.Float) { c.SkipHalf(node, source); return null; }
        if (WeightSource.Input(node, 1) is null) { c.Report.Skip(node, "Gather without indices"); return null; }
        var qw = c.Weights.WholeTensor(source.Name, source.Tensor);
        string gathered = index.Fresh(node.Output[0] + "_quantized");
        var gather = node.Clone();
        gather.Input[0] = qw.Values;
        gather.Output[0] = gathered;
        string domain = index.Opset >= 10 ? "" : MicrosoftDomain;
        if (domain != "") EnsureMicrosoftDomain(c.Model);
        var dq = Node("DequantizeLinear", index.Fresh((node.Name == "" ? "Gather" : node.Name) + "_DequantizeLinear"), [gathered, qw.Scale, qw.ZeroPoint], [node.Output[0]], domain);
        c.Report.Done(node, $"{c.Type} table, per tensor; dequantized after the gather");
        return [gather, dq];
    }
}
