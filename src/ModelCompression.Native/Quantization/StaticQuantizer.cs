using System.Runtime.InteropServices;
using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Static quantization in QDQ format. Activation ranges come from calibration (<see cref="Calibrator"/>); every
/// activation tensor read or written by a quantized node gets one QuantizeLinear → DequantizeLinear pair that all its
/// consumers read, so ONNX Runtime's QDQ fusions see DQ → op → Q around each node and turn it into QLinearConv,
/// QLinearMatMul, QLinearAdd, ... Weights are int8 symmetric per output channel, stored quantized with a
/// DequantizeLinear; Conv/Gemm biases are int32 with scale = input scale × weight scale. A Relu or Clip right after a
/// quantized node is folded: the pair goes after the activation (ONNX Runtime then drops the activation into the Q).
/// Models below opset 13 are raised to 13 first (<see cref="OpsetUpgrade"/>).
/// </summary>
internal static class StaticQuantizer
{
    public static readonly string[] DefaultOps = ["Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool", "Sigmoid"];
    public static readonly string[] SupportedOps = [.. DefaultOps, "MaxPool", "LeakyRelu", "Softmax", "Resize", "Transpose", "Reshape", "Flatten"];
    static readonly string[] Foldable = ["Relu", "Clip"];

    public static (long Before, long After) Run(OnnxModel source, ModelProto model, QuantizationOptions o, QuantizationReport report,
        IProgress<QuantizationProgress>? progress, CancellationToken cancel)
    {
        var graph = model.Graph;
        long opset = model.OpsetImport.FirstOrDefault(op => op.Domain is "" or "ai.onnx")?.Version ?? 1;
        if (opset < 13)
        {
            OpsetUpgrade.To13(model, source.Name);
            report.Note($"The model's opset was raised from {opset} to 13 (per-channel QuantizeLinear/DequantizeLinear); operators whose attributes became inputs were rewritten.");
        }
        int affine = AffineFolding.FoldConvAffine(model);
        if (affine > 0) report.Note($"{affine} constant Mul/Add node(s) right after a Conv were folded into its weights and bias before quantization.");
        var index = new GraphIndex(model);
        var ops = QuantizationPlan.OpTypes(o, DefaultOps, SupportedOps);
        var types = ValueTypes.Infer(model, source.Name);
        var actType = o.ActivationType ?? QuantType.UInt8;
        bool actSymmetric = actType == QuantType.Int8;
        var weightType = o.WeightType ?? QuantType.Int8;
        bool weightSymmetric = o.Symmetric ?? weightType == QuantType.Int8;
        bool perChannel = o.PerChannel ?? true;
        const string domain = "";
        bool IsFloat(string v) => v.Length > 0 && types.TryGetValue(v, out var t) && t == DT.Float;

        var consumers = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
        foreach (var n in graph.Node) foreach (var i in n.Input) if (i.Length > 0) { if (!consumers.TryGetValue(i, out var l)) consumers[i] = l = []; l.Add(n); }
        var graphOutputs = graph.Output.Select(v => v.Name).ToHashSet(StringComparer.Ordinal);

        // 1. Choose nodes (by position in the node list, so a clone of the graph can be rewritten the same way).
        var selected = new List<int>();
        var outputOf = new Dictionary<int, string>();
        var activationsOf = new Dictionary<int, List<string>>();
        var allActivations = new HashSet<string>(StringComparer.Ordinal);
        for (int k = 0; k < graph.Node.Count; k++)
        {
            var n = graph.Node[k];
            if (n.Domain is not ("" or "ai.onnx") || !ops.Contains(n.OpType)) continue;
            if (MatchesAny(n.Name, o.ExcludeNodes)) { report.Skip(n, "excluded by -ExcludeNode"); continue; }
            if (n.Output.Count < 1 || !IsFloat(n.Output[0])) { report.Skip(n, "output is not float32"); continue; }
            if (n.OpType is "Conv" or "MatMul" or "Gemm" && n.Input.Count > 1 && index.Constant(n.Input[1]) is { } w && w.DataType != (int)DT.Float)
            { report.Skip(n, "weight is not float32"); continue; }
            selected.Add(k);
            var acts = new List<string>();
            for (int i = 0; i < n.Input.Count; i++)
                if (IsFloat(n.Input[i]) && index.Constant(n.Input[i]) is null && !IsAuxiliaryInput(n, i)) acts.Add(n.Input[i]);
            // Fold a following Relu/Clip: quantize after it.
            string output = n.Output[0];
            if (!graphOutputs.Contains(output) && consumers.TryGetValue(output, out var cs) && cs.Count == 1 && Foldable.Contains(cs[0].OpType) && cs[0].Input[0] == output && cs[0].Output.Count > 0)
                output = cs[0].Output[0];
            outputOf[k] = output;
            acts.Add(output);
            activationsOf[k] = acts;
            allActivations.UnionWith(acts);
        }
        if (selected.Count == 0) return (0, 0);

        // 2. Calibrate (on all rows, or on the rows not held out for -TargetCosine).
        var calibration = o.CalibrationData!;
        DataSet? validation = null;
        if (o.TargetCosine is not null) (calibration, validation) = AccuracyTuner.Split(calibration);
        var ranges = Calibrator.Run(source, allActivations, calibration, o.CalibrationMethod ?? CalibrationMethod.MinMax,
            o.Percentile ?? 99.999, o.CalibrationBatchSize ?? 1, progress, cancel);
        var actParams = allActivations.ToDictionary(t => t, t => QuantMath.Compute(ranges[t].Min, ranges[t].Max, actType, actSymmetric, false, t), StringComparer.Ordinal);

        // 3. With -TargetCosine: find the nodes to keep in float32 on held-out rows, then build the result once.
        var keptFloat = new Dictionary<int, string>();
        if (o.TargetCosine is { } target)
        {
            var tuner = new AccuracyTuner(source, validation!, o.CalibrationBatchSize ?? 1, progress, cancel);
            var pristine = model.Clone();
            keptFloat = tuner.Tune(target, selected,
                kept => { var candidate = pristine.Clone(); Build(candidate, kept, null); return candidate; }, report);
        }
        return Build(model, keptFloat, report);

        (long Before, long After) Build(ModelProto model, IReadOnlyDictionary<int, string> kept, QuantizationReport? report)
        {
        var graph = model.Graph;
        var index = new GraphIndex(model);
        var selectedNodes = selected.Select(k => graph.Node[k]).ToList();
        var keptNodes = kept.Keys.Select(k => graph.Node[k]).ToHashSet(ReferenceEqualityComparer.Instance);
        var activations = new HashSet<string>(StringComparer.Ordinal);
        foreach (var k in selected) if (!kept.ContainsKey(k)) activations.UnionWith(activationsOf[k]);
        // 4. Q/DQ pairs for activations, placed after their producer; every consumer reads the DQ output.
        var actDt = actType == QuantType.Int8 ? DT.Int8 : DT.Uint8;
        var dqName = new Dictionary<string, string>(StringComparer.Ordinal);
        var pairs = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
        var producers = graph.Node.SelectMany(n => n.Output).ToHashSet(StringComparer.Ordinal);
        var leading = new List<NodeProto>();
        foreach (var t in activations)
        {
            var p = actParams[t];
            string s = index.AddInitializer(Scalar(index.Fresh(t + "_scale"), p.Scale)).Name;
            string z = index.AddInitializer(Bytes(index.Fresh(t + "_zero_point"), actDt, [], [(byte)(sbyte)p.ZeroPoint])).Name;
            string q = index.Fresh(t + "_QuantizeLinear_Output"), dq = index.Fresh(t + "_DequantizeLinear_Output");
            var list = new List<NodeProto>
            {
                Node("QuantizeLinear", index.Fresh(t + "_QuantizeLinear"), [t, s, z], [q], domain),
                Node("DequantizeLinear", index.Fresh(t + "_DequantizeLinear"), [q, s, z], [dq], domain),
            };
            dqName[t] = dq;
            if (producers.Contains(t)) pairs[t] = list; else leading.AddRange(list);
        }

        // 5. Weights and biases of the selected nodes.
        var weights = new Dictionary<string, (string Dq, float[] Scales)>(StringComparer.Ordinal);
        var inserted = new Dictionary<NodeProto, List<NodeProto>>(ReferenceEqualityComparer.Instance);
        long before = 0, after = 0;
        for (int s = 0; s < selected.Count; s++)
        {
            var n = selectedNodes[s];
            cancel.ThrowIfCancellationRequested();
            if (kept.TryGetValue(selected[s], out var why)) { report?.Keep(n, why); continue; }
            var extra = new List<NodeProto>();
            int weightAxis = n.OpType switch
            {
                "Conv" => 0,
                "MatMul" => 1,
                "Gemm" => (IntAttr(n, "transB") ?? 0) != 0 ? 0 : 1,
                _ => -1,
            };
            float[]? wScales = null;
            for (int i = 0; i < n.Input.Count; i++)
            {
                string input = n.Input[i];
                if (!IsFloat(input) || IsAuxiliaryInput(n, i) || index.Constant(input) is not { } tensor) continue;
                bool isWeight = i == 1 && weightAxis >= 0;
                bool isBias = i == 2 && n.OpType is "Conv" or "Gemm" && tensor.Dims.Count == 1;
                if (isBias) continue; // after the weight, below
                string key = index.ConstantSource(input)! + "|" + (isWeight ? weightAxis : -1);
                if (!weights.TryGetValue(key, out var qw))
                {
                    qw = isWeight
                        ? QuantizeWeight(input, tensor, perChannel && tensor.Dims.Count >= 2 ? weightAxis : -1, extra)
                        : QuantizeConstant(input, tensor, extra);
                    weights[key] = qw;
                    before += TensorData.StorageBytes(tensor);
                }
                if (isWeight) wScales = qw.Scales;
                n.Input[i] = qw.Dq;
            }
            if (wScales is not null && n.Input.Count > 2 && n.Input[2].Length > 0 && index.Constant(n.Input[2]) is { } bias && bias.DataType == (int)DT.Float && bias.Dims.Count == 1
                && actParams.TryGetValue(n.Input[0], out var xp))
            {
                if (QuantizeBias(n.Input[2], bias, xp.Scale, wScales, extra) is { } bdq) n.Input[2] = bdq;
                else report?.Note($"Bias of '{n.Name}' stays float32: its int32 quantization would overflow.");
            }
            inserted[n] = extra;
            report?.Done(n, $"QDQ: activations {actType} {(actSymmetric ? "symmetric" : "asymmetric")}{(weightAxis >= 0 ? $", weights {weightType} {(perChannel ? "per channel" : "per tensor")}" : "")}{(outputOf[selected[s]] != n.Output[0] ? $", {consumers[n.Output[0]][0].OpType} folded" : "")}");
        }

        // 6. Rewire consumers to the DQ outputs and assemble the node list.
        foreach (var n in graph.Node)
            for (int i = 0; i < n.Input.Count; i++)
                if (!keptNodes.Contains(n) && dqName.TryGetValue(n.Input[i], out var dq)) n.Input[i] = dq;
        var nodes = new List<NodeProto>(graph.Node.Count * 2);
        nodes.AddRange(leading);
        foreach (var n in graph.Node)
        {
            if (inserted.TryGetValue(n, out var extra)) nodes.AddRange(extra);
            nodes.Add(n);
            foreach (var output in n.Output) if (pairs.TryGetValue(output, out var list)) nodes.AddRange(list);
        }
        graph.Node.Clear();
        graph.Node.AddRange(nodes);
        graph.ValueInfo.Clear();
        RemoveUnused(graph);
        return (before, after);

        (string, float[]) QuantizeWeight(string name, TensorProto tensor, int axis, List<NodeProto> extra)
        {
            var values = TensorData.ToFloat(tensor);
            long[] shape = tensor.Dims.ToArray();
            var (qmin, qmax) = QuantMath.Range(weightType, weightSymmetric, o.ReduceRange);
            QuantParams[] p;
            byte[] q;
            if (axis >= 0)
            {
                p = QuantMath.PerChannel(values, shape, axis, weightType, weightSymmetric, o.ReduceRange, name);
                q = QuantMath.QuantizePerChannel(values, shape, axis, p, qmin, qmax);
            }
            else
            {
                p = [QuantMath.ForTensor(values, weightType, weightSymmetric, o.ReduceRange, name)];
                q = new byte[values.Length];
                QuantMath.Quantize(values, p[0], qmin, qmax, q);
            }
            var dt = weightType == QuantType.Int8 ? DT.Int8 : DT.Uint8;
            long[] pdims = axis >= 0 ? [p.Length] : [];
            string qn = index.AddInitializer(Bytes(index.Fresh(name + "_quantized"), dt, shape, q)).Name;
            string sn = index.AddInitializer(TensorData.FromFloat(index.Fresh(name + "_scale"), pdims, p.Select(x => x.Scale).ToArray())).Name;
            string zn = index.AddInitializer(Bytes(index.Fresh(name + "_zero_point"), dt, pdims, p.Select(x => (byte)(sbyte)x.ZeroPoint).ToArray())).Name;
            string dq = index.Fresh(name + "_DequantizeLinear_Output");
            var attrs = axis >= 0 ? new[] { GraphBuilder.Attr("axis", (long)axis) } : [];
            extra.Add(Node("DequantizeLinear", index.Fresh(name + "_DequantizeLinear"), [qn, sn, zn], [dq], domain, attrs));
            after += q.Length + p.Length * 5L;
            return (dq, p.Select(x => x.Scale).ToArray());
        }

        (string, float[]) QuantizeConstant(string name, TensorProto tensor, List<NodeProto> extra)
        {
            // Constant operands of Add/Mul/Concat...: per tensor with the activation type, as ONNX Runtime's QDQ ops expect.
            var values = TensorData.ToFloat(tensor);
            var p = QuantMath.ForTensor(values, actType, actSymmetric, false, name);
            var q = new byte[values.Length];
            var (qmin, qmax) = QuantMath.Range(actType, actSymmetric);
            QuantMath.Quantize(values, p, qmin, qmax, q);
            string qn = index.AddInitializer(Bytes(index.Fresh(name + "_quantized"), actDt, tensor.Dims.ToArray(), q)).Name;
            string sn = index.AddInitializer(Scalar(index.Fresh(name + "_scale"), p.Scale)).Name;
            string zn = index.AddInitializer(Bytes(index.Fresh(name + "_zero_point"), actDt, [], [(byte)(sbyte)p.ZeroPoint])).Name;
            string dq = index.Fresh(name + "_DequantizeLinear_Output");
            extra.Add(Node("DequantizeLinear", index.Fresh(name + "_DequantizeLinear"), [qn, sn, zn], [dq], domain));
            after += q.Length + 5;
            return (dq, [p.Scale]);
        }

        string? QuantizeBias(string name, TensorProto bias, float inputScale, float[] wScales, List<NodeProto> extra)
        {
            var values = TensorData.ToFloat(bias);
            var scales = new float[values.Length];
            var q = new int[values.Length];
            for (int c = 0; c < values.Length; c++)
            {
                scales[c] = inputScale * (wScales.Length == 1 ? wScales[0] : wScales[c]);
                if (!(scales[c] > 0)) return null;
                double v = Math.Round(values[c] / (double)scales[c], MidpointRounding.ToEven);
                if (double.IsNaN(v) || Math.Abs(v) > int.MaxValue) return null;
                q[c] = (int)v;
            }
            before += TensorData.StorageBytes(bias);
            string qn = index.AddInitializer(Bytes(index.Fresh(name + "_quantized"), DT.Int32, [values.Length], MemoryMarshal.AsBytes(q.AsSpan()).ToArray())).Name;
            string sn = index.AddInitializer(TensorData.FromFloat(index.Fresh(name + "_quantized_scale"), [values.Length], scales)).Name;
            string dq = index.Fresh(name + "_DequantizeLinear_Output");
            extra.Add(Node("DequantizeLinear", index.Fresh(name + "_DequantizeLinear"), [qn, sn], [dq], domain, GraphBuilder.Attr("axis", 0L)));
            after += q.Length * 8L;
            return dq;
        }
        }
    }

    /// <summary>Inputs that are parameters rather than data (Resize's roi/scales, Clip's bounds, ...): never quantized.</summary>
    static bool IsAuxiliaryInput(NodeProto n, int slot) => n.OpType switch
    {
        "Resize" or "Reshape" or "Clip" => slot > 0,
        _ => false,
    };
}
