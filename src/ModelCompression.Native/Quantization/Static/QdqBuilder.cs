using System.Runtime.InteropServices;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Quantization.QuantNodes;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Writes the QDQ graph of a <see cref="StaticPlan"/>: one Q/DQ pair per quantized activation (after its producer; every
/// consumer but the nodes kept in float32 reads the DQ output), int8 weights with a DequantizeLinear before their node,
/// int32 biases. With <see cref="QdqSwitches"/>, every node is quantized but each quantized input is read through
/// Where(flag, dequantized, float) with the flags as graph inputs: one ONNX Runtime session then evaluates any choice of
/// nodes kept in float32 (the accuracy budget's sensitivity runs).
/// </summary>
internal sealed class QdqBuilder(StaticPlan plan, QuantizationOptions o, CancellationToken cancel)
{
    GraphIndex index = null!;
    HashSet<NodeProto> keptNodes = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<string, string> dqName = new(StringComparer.Ordinal);
    readonly Dictionary<string, List<NodeProto>> pairs = new(StringComparer.Ordinal);
    readonly List<NodeProto> leading = [];
    readonly Dictionary<string, (string Dq, float[] Scales)> weights = new(StringComparer.Ordinal);
    readonly Dictionary<NodeProto, List<NodeProto>> inserted = new(ReferenceEqualityComparer.Instance);
    QdqSwitches? switches;
    long before, after;

    DT ActivationDt => plan.ActivationType == QuantType.Int8 ? DT.Int8 : DT.Uint8;

    public (long Before, long After) Build(ModelProto model, IReadOnlyDictionary<int, string> kept, QuantizationReport? report, QdqSwitches? switches = null)
    {
        var graph = model.Graph;
        index = new GraphIndex(model);
        this.switches = switches;
        var selectedNodes = plan.Selected.Select(k => graph.Node[k]).ToList();
        keptNodes = kept.Keys.Select(k => graph.Node[k]).ToHashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var activations = new HashSet<string>(StringComparer.Ordinal);
        foreach (var k in plan.Selected) if (!kept.ContainsKey(k)) activations.UnionWith(plan.ActivationsOf[k]);
        var producers = graph.Node.SelectMany(n => n.Output).ToHashSet(StringComparer.Ordinal);
        foreach (var t in activations.Order(StringComparer.Ordinal)) AddPair(t, producers.Contains(t));
        for (int s = 0; s < plan.Selected.Count; s++)
        {
            cancel.ThrowIfCancellationRequested();
            var n = selectedNodes[s];
            if (kept.TryGetValue(plan.Selected[s], out var why)) { report?.Keep(n, why); continue; }
            QuantizeConstants(n, s, report);
        }
        Rewire(graph, selectedNodes);
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
        switches?.DeclareInputs(graph);
        GraphIndex.RemoveUnused(graph);
        return (before, after);
    }

    /// <summary>The Q/DQ pair of an activation, placed after its producer (or first, for a graph input).</summary>
    void AddPair(string t, bool produced)
    {
        var p = plan.ActivationParams[t];
        string s = index.AddInitializer(Scalar(index.Fresh(t + "_scale"), p.Scale)).Name;
        string z = index.AddInitializer(Bytes(index.Fresh(t + "_zero_point"), ActivationDt, [], [(byte)(sbyte)p.ZeroPoint])).Name;
        string q = index.Fresh(t + "_QuantizeLinear_Output"), dq = index.Fresh(t + "_DequantizeLinear_Output");
        var list = new List<NodeProto>
        {
            Node("QuantizeLinear", index.Fresh(t + "_QuantizeLinear"), [t, s, z], [q]),
            Node("DequantizeLinear", index.Fresh(t + "_DequantizeLinear"), [q, s, z], [dq]),
        };
        dqName[t] = dq;
        if (produced) pairs[t] = list; else leading.AddRange(list);
    }

    /// <summary>Weights, other constants and the bias of selected node <paramref name="s"/>, each once however many nodes share it.</summary>
    void QuantizeConstants(NodeProto n, int s, QuantizationReport? report)
    {
        var handler = StaticQuantizer.Handlers[n.OpType];
        int weightAxis = handler.WeightAxis(n);
        var extra = inserted.TryGetValue(n, out var list) ? list : inserted[n] = [];
        float[]? wScales = null;
        for (int i = 0; i < n.Input.Count; i++)
        {
            string input = n.Input[i];
            if (input.Length == 0 || handler.IsAuxiliaryInput(i) || index.Constant(input) is not { DataType: (int)DT.Float } tensor) continue;
            bool isWeight = i == 1 && weightAxis >= 0;
            if (handler.IsBias(i) && tensor.Dims.Count == 1) continue; // after the weight, below
            string key = index.ConstantSource(input)! + "|" + (isWeight ? weightAxis : -1);
            if (!weights.TryGetValue(key, out var qw))
            {
                qw = isWeight ? QuantizeWeight(input, tensor, plan.PerChannel && tensor.Dims.Count >= 2 ? weightAxis : -1, extra) : QuantizeConstant(input, tensor, extra);
                weights[key] = qw;
                before += TensorData.StorageBytes(tensor);
            }
            if (isWeight) wScales = qw.Scales;
            n.Input[i] = Switched(n, s, qw.Dq, input, extra);
        }
        if (wScales is not null && n.Input.Count > 2 && handler.IsBias(2) && index.Constant(n.Input[2]) is { DataType: (int)DT.Float, Dims.Count: 1 } bias
            && plan.ActivationParams.TryGetValue(n.Input[0], out var xp))
        {
            if (QuantizeBias(n.Input[2], bias, xp.Scale, wScales, extra) is { } bdq) n.Input[2] = Switched(n, s, bdq, n.Input[2], extra);
            else report?.Note($"Bias of '{n.Name}' stays float32: its int32 quantization would overflow.");
        }
        string folded = plan.OutputOf[plan.Selected[s]] != n.Output[0] ? $", {index.ConsumersOf(n.Output[0])[0].Node.OpType} folded" : "";
        report?.Done(n, $"QDQ: activations {plan.ActivationType} {(plan.ActivationSymmetric ? "symmetric" : "asymmetric")}" +
            $"{(weightAxis >= 0 ? $", weights {plan.WeightType} {(plan.PerChannel ? "per channel" : "per tensor")}" : "")}{folded}");
    }

    /// <summary>The dequantized constant, or with switches Where(flag of the node, dequantized, float).</summary>
    string Switched(NodeProto n, int unit, string dq, string original, List<NodeProto> extra)
    {
        if (switches is null) return dq;
        string flag = switches.Weight(index.Fresh("qdq_switch"), unit);
        string output = index.Fresh(dq + "_switched");
        extra.Add(Node("Where", index.Fresh(output), [flag, dq, original], [output]));
        return output;
    }

    /// <summary>Consumers read the DQ output of each quantized activation (all but the kept nodes; with switches through a Where per consumer).</summary>
    void Rewire(GraphProto graph, List<NodeProto> selectedNodes)
    {
        var unitOf = selectedNodes.Select((n, s) => (n, s)).ToDictionary<(NodeProto n, int s), NodeProto, int>(x => x.n, x => x.s, ReferenceEqualityComparer.Instance);
        foreach (var n in graph.Node)
        {
            var switched = new Dictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < n.Input.Count; i++)
            {
                string t = n.Input[i];
                if (keptNodes.Contains(n) || !dqName.TryGetValue(t, out var dq)) continue;
                if (switches is null) { n.Input[i] = dq; continue; }
                if (!switched.TryGetValue(t, out var output))
                {
                    string flag = switches.Activation(index.Fresh("qdq_switch"), unitOf.TryGetValue(n, out int u) ? u : -1, t);
                    output = switched[t] = index.Fresh(dq + "_switched");
                    var where = Node("Where", index.Fresh(output), [flag, dq, t], [output]);
                    if (inserted.TryGetValue(n, out var list)) list.Add(where); else inserted[n] = [where];
                }
                n.Input[i] = output;
            }
        }
    }

    (string, float[]) QuantizeWeight(string name, TensorProto tensor, int axis, List<NodeProto> extra)
    {
        var values = TensorData.ToFloat(tensor);
        long[] shape = tensor.Dims.ToArray();
        var (qmin, qmax) = QuantMath.Range(plan.WeightType, plan.WeightSymmetric, o.ReduceRange);
        QuantParams[] p;
        byte[] q;
        if (axis >= 0)
        {
            p = QuantMath.PerChannel(values, shape, axis, plan.WeightType, plan.WeightSymmetric, o.ReduceRange, name);
            q = QuantMath.QuantizePerChannel(values, shape, axis, p, qmin, qmax);
        }
        else
        {
            p = [QuantMath.ForTensor(values, plan.WeightType, plan.WeightSymmetric, o.ReduceRange, name)];
            q = new byte[values.Length];
            QuantMath.Quantize(values, p[0], qmin, qmax, q);
        }
        var dt = plan.WeightType == QuantType.Int8 ? DT.Int8 : DT.Uint8;
        long[] pdims = axis >= 0 ? [p.Length] : [];
        string qn = index.AddInitializer(Bytes(index.Fresh(name + "_quantized"), dt, shape, q)).Name;
        string sn = index.AddInitializer(TensorData.FromFloat(index.Fresh(name + "_scale"), pdims, p.Select(x => x.Scale).ToArray())).Name;
        string zn = index.AddInitializer(Bytes(index.Fresh(name + "_zero_point"), dt, pdims, p.Select(x => (byte)(sbyte)x.ZeroPoint).ToArray())).Name;
        string dq = index.Fresh(name + "_DequantizeLinear_Output");
        var attrs = axis >= 0 ? new[] { GraphBuilder.Attr("axis", (long)axis) } : [];
        extra.Add(Node("DequantizeLinear", index.Fresh(name + "_DequantizeLinear"), [qn, sn, zn], [dq], "", attrs));
        after += q.Length + p.Length * 5L;
        return (dq, p.Select(x => x.Scale).ToArray());
    }

    /// <summary>Constant operands of Add/Mul/Concat...: per tensor with the activation type, as ONNX Runtime's QDQ ops expect.</summary>
    (string, float[]) QuantizeConstant(string name, TensorProto tensor, List<NodeProto> extra)
    {
        var values = TensorData.ToFloat(tensor);
        var p = QuantMath.ForTensor(values, plan.ActivationType, plan.ActivationSymmetric, false, name);
        var q = new byte[values.Length];
        var (qmin, qmax) = QuantMath.Range(plan.ActivationType, plan.ActivationSymmetric);
        QuantMath.Quantize(values, p, qmin, qmax, q);
        string qn = index.AddInitializer(Bytes(index.Fresh(name + "_quantized"), ActivationDt, tensor.Dims.ToArray(), q)).Name;
        string sn = index.AddInitializer(Scalar(index.Fresh(name + "_scale"), p.Scale)).Name;
        string zn = index.AddInitializer(Bytes(index.Fresh(name + "_zero_point"), ActivationDt, [], [(byte)(sbyte)p.ZeroPoint])).Name;
        string dq = index.Fresh(name + "_DequantizeLinear_Output");
        extra.Add(Node("DequantizeLinear", index.Fresh(name + "_DequantizeLinear"), [qn, sn, zn], [dq]));
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
        extra.Add(Node("DequantizeLinear", index.Fresh(name + "_DequantizeLinear"), [qn, sn], [dq], "", GraphBuilder.Attr("axis", 0L)));
        after += q.Length * 8L;
        return dq;
    }
}
