using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Training;

/// <summary>
/// Patterns the training engine runs as one op instead of several: each elementwise op is a full pass over its tensor,
/// forward and backward, and a GPT step spends more time moving activations through such passes than computing them.
/// Only the execution plan changes: the model (and what <see cref="TrainingGraph.WriteBack"/> writes) keeps its nodes.
/// A pattern is fused only when its intermediate values have no other reader and are not graph outputs.
/// <list type="bullet">
/// <item>GELU as exporters write it before opset 20: Mul(Mul(x, Add(Erf(Div(x, √2)), 1)), 0.5) → one exact GELU.</item>
/// <item>MatMul by a 2-D weight followed by Add of a 1-D bias → one MatMul that starts from the bias.</item>
/// </list>
/// </summary>
internal static class Fusions
{
    public const string FusedGelu = "Gelu(fused Erf)";
    public const string FusedMatMulAdd = "MatMul+Add(fused)";

    /// <summary>The nodes to run, in order, with fused patterns replaced by synthetic nodes (a fused node keeps the last node's outputs).</summary>
    public static List<NodeProto> Apply(List<NodeProto> ordered, IReadOnlyDictionary<string, TensorProto> initializers, IReadOnlyCollection<string> graphOutputs)
    {
        var producer = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        var readers = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var n in ordered)
        {
            foreach (var o in n.Output) producer[o] = n;
            foreach (var i in n.Input) readers[i] = readers.GetValueOrDefault(i) + 1;
        }
        foreach (var o in graphOutputs) readers[o] = readers.GetValueOrDefault(o) + 1;
        bool Private(string value) => readers.GetValueOrDefault(value) == 1;
        float? Scalar(string value)
        {
            var t = initializers.TryGetValue(value, out var init) ? init : producer.TryGetValue(value, out var p) ? GraphIndex.ConstantValue(p) : null;
            return t is not null && TensorData.ElementCount(t) == 1 && t.DataType == (int)TensorProto.Types.DataType.Float ? TensorData.ToFloat(t)[0] : null;
        }
        NodeProto? From(string value, string opType) => producer.TryGetValue(value, out var p) && p.OpType == opType && p.Domain is "" or "ai.onnx" ? p : null;
        // (the other input of a binary node, given one of them)
        string Other(NodeProto n, string one) => n.Input[0] == one ? n.Input[1] : n.Input[0];

        var replaced = new Dictionary<NodeProto, NodeProto?>(ReferenceEqualityComparer.Instance);   // node -> fused node (at its place) or null (dropped)
        foreach (var last in ordered)
        {
            if (replaced.ContainsKey(last)) continue;
            if (last.OpType == "Mul" && last.Input.Count == 2 && TryGelu(last) is { } gelu)
            {
                var (x, nodes) = gelu;
                foreach (var n in nodes) replaced[n] = null;
                replaced[last] = Synthetic(FusedGelu, last, [x]);
            }
            else if (last.OpType == "Add" && last.Input.Count == 2 && TryMatMulAdd(last) is { } mm)
            {
                replaced[mm.MatMul] = null;
                replaced[last] = Synthetic(FusedMatMulAdd, last, [mm.MatMul.Input[0], mm.MatMul.Input[1], mm.Bias]);
            }
        }
        return ordered.Select(n => replaced.TryGetValue(n, out var r) ? r : n).Where(n => n is not null).Select(n => n!).ToList();

        // Mul(m, 0.5) with m = Mul(x, a), a = Add(e, 1), e = Erf(d), d = Div(x, √2)
        (string X, NodeProto[] Nodes)? TryGelu(NodeProto last)
        {
            foreach (var m in last.Input)
            {
                if (Scalar(Other(last, m)) is not 0.5f || From(m, "Mul") is not { Input.Count: 2 } mul || !Private(m)) continue;
                foreach (var a in mul.Input)
                {
                    if (From(a, "Add") is not { Input.Count: 2 } add || !Private(a)) continue;
                    string x = Other(mul, a);
                    foreach (var e in add.Input)
                    {
                        if (Scalar(Other(add, e)) is not 1f || From(e, "Erf") is not { } erf || !Private(e)) continue;
                        if (From(erf.Input[0], "Div") is not { Input.Count: 2 } div || !Private(erf.Input[0]) || div.Input[0] != x) continue;
                        if (Scalar(div.Input[1]) is not { } s || Math.Abs(s - Math.Sqrt(2)) > 1e-6) continue;
                        if (replaced.ContainsKey(mul) || replaced.ContainsKey(add) || replaced.ContainsKey(erf) || replaced.ContainsKey(div)) continue;
                        return (x, [mul, add, erf, div]);
                    }
                }
            }
            return null;
        }

        // Add(MatMul(x, W), b) with W a 2-D initializer [k, n] and b a 1-D initializer [n], in either order
        (NodeProto MatMul, string Bias)? TryMatMulAdd(NodeProto add)
        {
            foreach (var v in add.Input)
            {
                string bias = Other(add, v);
                if (From(v, "MatMul") is not { } mm || !Private(v) || replaced.ContainsKey(mm)) continue;
                if (!initializers.TryGetValue(mm.Input[1], out var w) || w.Dims.Count != 2) continue;
                if (!initializers.TryGetValue(bias, out var b) || b.Dims.Count != 1 || b.Dims[0] != w.Dims[1] || b.DataType != (int)TensorProto.Types.DataType.Float) continue;
                return (mm, bias);
            }
            return null;
        }
    }

    static NodeProto Synthetic(string opType, NodeProto last, string[] inputs)
    {
        var n = new NodeProto { OpType = opType, Name = last.Name };
        n.Input.AddRange(inputs);
        n.Output.AddRange(last.Output);
        return n;
    }
}
