using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Distillation;

/// <summary>
/// Folds an inference BatchNormalization into the Conv that feeds it: W' = W·s/√(v+ε) per output channel,
/// b' = (b − μ)·s/√(v+ε) + β, and the BatchNormalization node goes. Only where that is exact: the Conv's output
/// feeds nothing else and is no graph output, every tensor involved is a float initializer used by that node alone,
/// and the BatchNormalization's optional outputs are unused.
/// </summary>
public static class BatchNormFolding
{
    public static int Fold(ModelProto proto, ICollection<ReportEntry>? report = null)
    {
        var graph = proto.Graph;
        var inits = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        int folded = 0;
        foreach (var bn in graph.Node.Where(n => n.OpType == "BatchNormalization" && n.Domain is "" or "ai.onnx").ToList())
        {
            if (bn.Input.Count < 5 || bn.Output.Skip(1).Any(o => o.Length > 0)) continue;
            if (bn.Attribute.Any(a => a.Name == "training_mode" && a.I != 0)) continue;
            string convOut = bn.Input[0];
            var conv = graph.Node.FirstOrDefault(n => n.Output.Contains(convOut));
            if (conv is null || conv.OpType != "Conv" || !(conv.Domain is "" or "ai.onnx") || conv.Output.Count != 1) continue;
            if (graph.Output.Any(o => o.Name == convOut) || Uses(graph, convOut) != 1) continue;
            string[] names = [conv.Input[1], .. bn.Input.Skip(1).Take(4)];
            if (conv.Input.Count > 2 && conv.Input[2].Length > 0) names = [.. names, conv.Input[2]];
            if (names.Any(n => !inits.TryGetValue(n, out var t) || (DT)t.DataType != DT.Float || Uses(graph, n) != 1 || graph.Input.Any(i => i.Name == n))) continue;

            float eps = bn.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5f;
            var w = inits[conv.Input[1]];
            var weights = TensorData.ToFloat(w);
            var scale = TensorData.ToFloat(inits[bn.Input[1]]); var beta = TensorData.ToFloat(inits[bn.Input[2]]);
            var mean = TensorData.ToFloat(inits[bn.Input[3]]); var variance = TensorData.ToFloat(inits[bn.Input[4]]);
            int m = (int)w.Dims[0];
            if (scale.Length != m || beta.Length != m || mean.Length != m || variance.Length != m) continue;
            bool hasBias = conv.Input.Count > 2 && conv.Input[2].Length > 0;
            var bias = hasBias ? TensorData.ToFloat(inits[conv.Input[2]]) : new float[m];
            int per = weights.Length / m;
            for (int o = 0; o < m; o++)
            {
                double k = scale[o] / Math.Sqrt(variance[o] + (double)eps);
                for (int i = 0; i < per; i++) weights[o * per + i] = (float)(weights[o * per + i] * k);
                bias[o] = (float)((bias[o] - mean[o]) * k + beta[o]);
            }
            Replace(graph, TensorData.FromFloat(w.Name, w.Dims.ToArray(), weights));
            string biasName = hasBias ? conv.Input[2] : UniqueName(graph, conv.Input[1] + "_folded_bias");
            if (hasBias) Replace(graph, TensorData.FromFloat(biasName, [m], bias));
            else
            {
                graph.Initializer.Add(TensorData.FromFloat(biasName, [m], bias));
                while (conv.Input.Count < 2) conv.Input.Add("");
                if (conv.Input.Count == 2) conv.Input.Add(biasName); else conv.Input[2] = biasName;
            }
            foreach (var n in bn.Input.Skip(1).Take(4).Distinct())
            {
                var t = graph.Initializer.First(x => x.Name == n);
                graph.Initializer.Remove(t);
                inits.Remove(n);
            }
            conv.Output[0] = bn.Output[0];
            graph.Node.Remove(bn);
            var stale = graph.ValueInfo.FirstOrDefault(v => v.Name == convOut);
            if (stale is not null) graph.ValueInfo.Remove(stale);
            inits = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
            report?.Add(new ReportEntry(string.IsNullOrEmpty(bn.Name) ? bn.Output[0] : bn.Name, "BatchNormalization", "Folded", $"into Conv '{conv.Name}'"));
            folded++;
        }
        return folded;
    }

    static int Uses(GraphProto graph, string name) => graph.Node.Sum(n => n.Input.Count(i => i == name));

    static void Replace(GraphProto graph, TensorProto t)
    {
        for (int i = 0; i < graph.Initializer.Count; i++)
            if (graph.Initializer[i].Name == t.Name) { graph.Initializer[i] = t; return; }
    }

    static string UniqueName(GraphProto graph, string name)
    {
        var taken = graph.Initializer.Select(t => t.Name).Concat(graph.Node.SelectMany(n => n.Output)).Concat(graph.Input.Select(i => i.Name)).ToHashSet(StringComparer.Ordinal);
        string candidate = name;
        for (int i = 1; taken.Contains(candidate); i++) candidate = name + "_" + i;
        return candidate;
    }
}
