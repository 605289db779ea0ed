using System.Globalization;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Prunes MatMul/Gemm/Conv weights of an ONNX model: unstructured (per layer or global), N:M semi-structured,
/// or structured (whole output channels removed and the graph rewritten so the model is physically smaller).
/// </summary>
public static class ModelPruner
{
    public const string StageName = "Pruning";

    /// <summary>Largest model (serialized bytes) for which unstructured pruning runs ONNX Runtime once to count FLOPs.</summary>
    public const long FlopsProbeLimit = 256_000_000;

    public static OnnxModel Prune(OnnxModel model, PruningOptions options, IProgress<double>? progress = null, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (model.Proto.Graph is null)
            throw new EngineException("ModelHasNoGraph", EngineErrorKind.InvalidData, $"Model '{model.Name}' has no graph.") { Target = model.SourcePath };

        model = WeightConstantsAsInitializers(model);
        if (options.Structured || options.RemovesBlocks) return StructuredPruner.Prune(model, options, progress, cancel);

        // Activation statistics come from the original model, before any edit.
        Dictionary<string, double[]>? activations = null;
        var probeIndex = new GraphIndex(model.Proto.Graph, inputInitializersAreConstant: true);
        var probeTargets = WeightTargets.Find(probeIndex, options, []);
        if (probeTargets.Count == 0) throw NothingToPrune(model, options, probeIndex);
        if (options.Criterion == PruningCriterion.Activation)
            activations = ActivationStats.ChannelNorms(model, probeTargets.SelectMany(t => t.ActivationInputs()).Distinct().ToList(),
                options.CalibrationData!, options.CalibrationBatchSize, Scaled(progress, 0, 0.3), cancel);
        var (probe, probeProblem) = FlopsProbe(model, options, cancel);

        return model.Derive(StageName, options.ToParameters(), proto =>
        {
            var graph = proto.Graph;
            var index = new GraphIndex(graph, inputInitializersAreConstant: true);
            var skipped = new List<ReportEntry>();
            var targets = WeightTargets.Find(index, options, skipped);
            long nonZeroBefore = NonZeroWeights(graph);
            long parameters = CostModel.Parameters(graph);
            var counts = new UnstructuredPruner(targets, options, activations).Run(graph, Scaled(progress, activations is null ? 0 : 0.3, 1), cancel);
            return UnstructuredReport(options, graph, targets, counts, skipped, nonZeroBefore, parameters, probe, probeProblem);
        });
    }

    /// <summary>
    /// FLOPs need activation shapes: one ONNX Runtime run on synthesized inputs (skipped with a reason when it cannot
    /// run). That run costs about as much as loading the model into ONNX Runtime, more than the pruning itself for large
    /// models, and unstructured pruning leaves dense FLOPs unchanged: above <see cref="FlopsProbeLimit"/> bytes it is skipped.
    /// </summary>
    static (ShapeProbe? Probe, string? Problem) FlopsProbe(OnnxModel model, PruningOptions options, CancellationToken cancel)
    {
        if (model.SerializedSize > FlopsProbeLimit)
            return (null, $"the model is larger than {FlopsProbeLimit / 1_000_000} MB; dense FLOPs are unchanged by unstructured pruning");
        try { return (ShapeProbe.Run(model, options.ProbeDimension, cancel), null); }
        catch (EngineException e) { return (null, "the model could not be run on synthesized inputs: " + e.Message); }
    }

    /// <summary>The report of unstructured and N:M pruning: sparsity per weight, parameters, and dense and sparse FLOPs.</summary>
    static ModelReport UnstructuredReport(PruningOptions options, GraphProto graph, List<WeightTarget> targets, PrunedCounts[] counts, List<ReportEntry> skipped,
        long nonZeroBefore, long parameters, ShapeProbe? probe, string? probeProblem)
    {
        var report = new ModelReport { Stage = StageName };
        long zeros = 0, elements = 0, newZeros = 0;
        for (int t = 0; t < targets.Count; t++)
        {
            var (before, z, n) = counts[t];
            zeros += z; elements += n; newZeros += z - before;
            report.Entries.Add(new ReportEntry(targets[t].Label, targets[t].OpType, "Pruned",
                $"weight '{targets[t].Name}' [{string.Join(",", targets[t].Tensor.Dims)}]: sparsity {Pct((double)z / n)} ({z:N0} of {n:N0} zero)"));
        }
        report.Entries.AddRange(skipped);
        // Only the targets changed, and their zeros were counted as they were rewritten: no second read of every weight.
        report.Metrics["Sparsity"] = elements == 0 ? 0 : (double)zeros / elements;
        report.Metrics["PrunedTensors"] = targets.Count;
        report.Metrics["PrunedTensorElements"] = elements;
        report.Metrics["ParametersBefore"] = parameters;
        report.Metrics["ParametersAfter"] = parameters;
        report.Metrics["NonZeroParametersBefore"] = nonZeroBefore;
        report.Metrics["NonZeroParametersAfter"] = nonZeroBefore - newZeros;
        string flopsNote = $"FLOPs not computed: {probeProblem}.";
        if (probe is not null)
        {
            // Dense FLOPs do not change; "sparse" FLOPs count only multiplications by non-zero weights.
            long dense = CostModel.Flops(graph, probe);
            double sparse = dense;
            for (int t = 0; t < targets.Count; t++)
                foreach (var node in targets[t].Nodes)
                    sparse -= CostModel.Flops(node, probe) * (double)counts[t].Zeros / counts[t].Elements;
            report.Metrics["FlopsBefore"] = dense;
            report.Metrics["FlopsAfter"] = dense;
            report.Metrics["SparseFlopsAfter"] = Math.Round(sparse);
            flopsNote = $"FLOPs ({CostModel.Counted}, at probe inputs {probe.InputDescription}): {dense:N0} dense, unchanged; {sparse:N0} counting only non-zero weights.";
        }
        report.Notes.Add($"{options.Method} pruning, criterion {options.Criterion}" +
            (options.Pattern is null ? $", scope {options.Scope}, rate {options.Rate!.Value.ToString("0.###", CultureInfo.InvariantCulture)}" : "") +
            $": {targets.Count} weight tensor(s), {zeros:N0} of {elements:N0} elements zero ({Pct(elements == 0 ? 0 : (double)zeros / elements)}).");
        if (options.Scope == PruningScope.Global && options.Pattern is null && options.Criterion != PruningCriterion.Random)
            report.Notes.Add("Global scope: one threshold over the raw scores (|w|, or |w| x activation norm) of all selected layers, so layers are pruned unevenly.");
        report.Notes.Add(flopsNote);
        report.Notes.Add("Zeroed weights keep their place: the file and dense FLOPs are unchanged (ONNX Runtime runs them densely); use -Structured to make the model physically smaller.");
        return report;
    }

    /// <summary>
    /// Exporters such as paddle2onnx store weights as Constant nodes. A copy of the model holds the ones that layers
    /// (MatMul, Gemm, Conv, ...: whose rule says they read weights) read as initializers instead (same name, same
    /// values), so every method treats them alike; other Constant nodes stay. The input model is not touched.
    /// </summary>
    internal static OnnxModel WeightConstantsAsInitializers(OnnxModel model)
    {
        var graph = model.Proto.Graph;
        var weightInputs = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            if (ChannelRules.For(n)?.ReadsWeights == true)
                for (int i = 1; i < n.Input.Count; i++) weightInputs.Add(n.Input[i]);
        bool Candidate(NodeProto n) => n.OpType == "Constant" && n.Domain.Length == 0 && n.Output.Count == 1 && weightInputs.Contains(n.Output[0])
            && n.Attribute.Count == 1 && n.Attribute[0].Name == "value" && n.Attribute[0].T is not null;
        if (!graph.Node.Any(Candidate)) return model;
        var proto = model.Proto.Clone();
        var g = proto.Graph;
        for (int i = g.Node.Count - 1; i >= 0; i--)
        {
            var n = g.Node[i];
            if (!Candidate(n)) continue;
            var t = n.Attribute[0].T.Clone();
            t.Name = n.Output[0];
            g.Initializer.Add(t);
            g.Node.RemoveAt(i);
            if (proto.IrVersion < 4)
                g.Input.Add(GraphBuilder.Value(t.Name, (TensorProto.Types.DataType)t.DataType, t.Dims.Cast<object>().ToArray()));
        }
        return new OnnxModel(proto, model.SourcePath, model.History, model.Report);
    }

    internal static EngineException NothingToPrune(OnnxModel model, PruningOptions options, GraphIndex index)
    {
        var skipped = new List<ReportEntry>();
        WeightTargets.Find(index, options, skipped);
        string why = skipped.Count == 0
            ? $"it has no {string.Join("/", options.EffectiveOpTypes)} node with a constant weight"
            : "every candidate was skipped: " + string.Join("; ", skipped.Take(5).Select(s => $"{s.Target}: {s.Detail}")) + (skipped.Count > 5 ? $"; and {skipped.Count - 5} more" : "");
        return new EngineException("PruningNothingToPrune", EngineErrorKind.InvalidOperation, $"Model '{model.Name}' has no weight to prune: {why}.") { Target = model.SourcePath };
    }

    internal static long NonZeroWeights(GraphProto graph)
    {
        long n = 0;
        foreach (var t in graph.Initializer)
            if (t.DataType is (int)TensorProto.Types.DataType.Float or (int)TensorProto.Types.DataType.Float16 or (int)TensorProto.Types.DataType.Bfloat16)
                n += TensorData.ElementCount(t) - TensorData.CountZeros(t);
        return n;
    }

    internal static string Pct(double v) => v.ToString("P2", CultureInfo.InvariantCulture);

    internal static IProgress<double>? Scaled(IProgress<double>? progress, double from, double to) =>
        progress is null ? null : new Progress(progress, from, to);

    sealed class Progress(IProgress<double> inner, double from, double to) : IProgress<double>
    {
        public void Report(double value) => inner.Report(from + (to - from) * Math.Clamp(value, 0, 1));
    }
}
