using System.Diagnostics;
using System.Globalization;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Accuracy-driven fallback for static quantization (-TargetCosine): measures the output cosine of the quantized
/// model against the float model in ONNX Runtime on held-out rows and, while it is below the target, keeps quantized
/// nodes in float32. Quantization error compounds from the input onward (on the PP-OCR detector the first layers
/// alone cost most of it), so the nodes are taken in topological order: a bisection finds the shortest prefix whose
/// float32 fallback reaches the target, a second one the latest start of that window that still does (error that
/// starts mid-graph keeps only mid-graph nodes), then each eighth of that window is given back to quantization,
/// latest first, wherever the target still holds: about 2·log2(nodes) + 10 evaluations, never more than
/// <see cref="MaxEvaluations"/>. (Ranking nodes by the error each adds, measured on exposed intermediate outputs,
/// was tried and kept four times as many nodes on the detector for the same target.)
/// </summary>
internal sealed class AccuracyTuner(OnnxModel reference, DataSet validation, int batchSize, IProgress<QuantizationProgress>? progress, CancellationToken cancel)
{
    public const int MaxEvaluations = 32;

    /// <summary>Splits calibration data: the last quarter of the rows (at least one) is held out for validation.</summary>
    public static (DataSet Calibration, DataSet Validation) Split(DataSet data)
    {
        long rows = data.Rows, held = Math.Max(1, rows / 4);
        if (rows < 2)
            throw new EngineException("QuantizationValidationRowsMissing", EngineErrorKind.InvalidArgument,
                $"-TargetCosine holds out part of -CalibrationData to measure accuracy on; it needs at least 2 rows (got {rows}).");
        return (new DataSet(data.Source, data.Arrays.Select(a => a.Slice(0, rows - held)).ToList()),
                new DataSet(data.Source, data.Arrays.Select(a => a.Slice(rows - held, held)).ToList()));
    }

    List<IReadOnlyDictionary<string, NamedArray>> batches = [];
    List<Dictionary<string, float[]>> expected = [];
    List<string> outputs = [];

    /// <summary>
    /// The nodes (positions in <paramref name="selected"/>) to keep in float32, each with the reason, such that the
    /// model <paramref name="build"/> makes with them reaches <paramref name="target"/>; throws when it cannot.
    /// </summary>
    public Dictionary<int, string> Tune(double target, IReadOnlyList<int> selected,
        Func<IReadOnlyDictionary<int, string>, ModelProto> build, QuantizationReport report)
    {
        var clock = Stopwatch.StartNew();
        outputs = reference.Proto.Graph.Output.Select(v => v.Name).ToList();
        batches = ModelInputs.Batches(reference, new InputSource { Data = validation, BatchSize = batchSize }).Select(b => b.Inputs).ToList();
        using (var session = new ModelSession(reference, new SessionSettings { GraphOptimization = "None" }))
            foreach (var batch in batches)
            {
                var results = session.Run(batch, outputs, cancel);
                expected.Add(Enumerable.Range(0, outputs.Count).ToDictionary(i => outputs[i], i => results[i].AsFloat(), StringComparer.Ordinal));
            }

        int evaluations = 0;
        var measured = new Dictionary<(int Start, int End), double>();
        var order = selected.ToList(); // graph order is topological
        double Measure(int start, int end)
        {
            cancel.ThrowIfCancellationRequested();
            var c = Evaluate(build(order.Skip(start).Take(end - start).ToDictionary(k => k, _ => "")));
            evaluations++;
            measured[(start, end)] = c;
            progress?.Report(new QuantizationProgress($"Tuning for cosine {target.ToString(CultureInfo.InvariantCulture)} (nodes {start}..{end} in float32: cosine {c:F4})", Math.Min(1, (double)evaluations / MaxEvaluations)));
            return c;
        }
        string NotMet(string why) =>
            $"-TargetCosine {target.ToString(CultureInfo.InvariantCulture)} {why} (output cosine on {validation.Rows} held-out row(s): {measured[(0, 0)]:F4} with every node quantized). " +
            "Lower the target, give more representative -CalibrationData, or try -CalibrationMethod Percentile or Entropy.";
        var kept = new Dictionary<int, string>();
        double first = Measure(0, 0), best = first;
        if (first < target)
        {
            int n = order.Count;
            if (Measure(0, n) < target)
                throw new EngineException("QuantizationTargetCosineNotMet", EngineErrorKind.InvalidOperation,
                    NotMet($"cannot be reached: even with all {n} quantizable node(s) in float32 the output cosine is {measured[(0, n)]:F4}"));
            // 1. The shortest prefix (in topological order) whose float32 fallback reaches the target.
            int lo = 0, end = n;
            while (end - lo > 1 && evaluations < MaxEvaluations / 2)
            {
                int mid = lo + (end - lo) / 2;
                if (Measure(0, mid) >= target) end = mid; else lo = mid;
            }
            // 2. The latest start of that window that still reaches it: error that starts mid-graph keeps only mid-graph nodes.
            int start = 0, fails = end;
            measured.TryAdd((end, end), first);
            while (fails - start > 1 && evaluations < MaxEvaluations)
            {
                int mid = start + (fails - start) / 2;
                if (Measure(mid, end) >= target) start = mid; else fails = mid;
            }
            if (end - start == n)
                throw new EngineException("QuantizationTargetCosineNotMet", EngineErrorKind.InvalidOperation,
                    NotMet($"is reached only with every one of the {n} quantizable node(s) in float32"));
            best = measured[(start, end)];
            // 3. Thin the window: give each of 8 chunks back to quantization, latest first, where the target still holds.
            var window = Enumerable.Range(start, end - start).ToHashSet();
            // One pass only: finer thinning fits the few held-out rows rather than the model (measured: held-out cosine
            // on other images fell below the target on the recognizer when the chunks were halved down to single nodes).
            int chunk = Math.Max(1, (window.Count + 7) / 8);
            for (int c = end; c > start && evaluations < MaxEvaluations; c -= chunk)
            {
                var trial = window.Where(i => i < Math.Max(start, c - chunk) || i >= c).ToHashSet();
                if (trial.Count == window.Count || trial.Count == 0) continue;
                cancel.ThrowIfCancellationRequested();
                double cosine = Evaluate(build(trial.ToDictionary(i => order[i], _ => "")));
                evaluations++;
                if (cosine >= target) { window = trial; best = cosine; }
            }
            foreach (int i in window.Order())
                kept[order[i]] = string.Create(CultureInfo.InvariantCulture,
                    $"kept in float32 by -TargetCosine {target}: quantizable node {i + 1} of {n} in topological order, inside the narrowest window found to reach the target (nodes {start + 1}..{end}, {window.Count} of them kept after thinning: output cosine {best:F4})");
        }

        report.Note(string.Create(CultureInfo.InvariantCulture,
            $"-TargetCosine {target}: output cosine on {validation.Rows} held-out calibration row(s) {first:F4} with every node quantized, {best:F4} with {kept.Count} of {selected.Count} node(s) kept in float32 ({evaluations} evaluations, {clock.Elapsed.TotalSeconds:F1} s)."));
        var metrics = report.Report.Metrics;
        metrics["TargetCosine"] = target;
        metrics["CosineAllQuantized"] = first;
        metrics["CosineReached"] = best;
        metrics["NodesKeptFloat"] = kept.Count;
        metrics["TuningEvaluations"] = evaluations;
        metrics["TuningSeconds"] = clock.Elapsed.TotalSeconds;
        return kept;
    }

    /// <summary>The smallest output cosine over the graph outputs on the held-out rows.</summary>
    double Evaluate(ModelProto candidate)
    {
        using var session = new ModelSession(new OnnxModel(candidate, reference.SourcePath, []));
        var acc = outputs.ToDictionary(o => o, o => new FidelityAccumulator(o), StringComparer.Ordinal);
        for (int b = 0; b < batches.Count; b++)
        {
            cancel.ThrowIfCancellationRequested();
            var results = session.Run(batches[b], outputs, cancel);
            for (int i = 0; i < outputs.Count; i++)
                acc[outputs[i]].Add(new NamedArray(outputs[i], results[i].Shape, expected[b][outputs[i]]), results[i]);
        }
        double cosine = outputs.Min(o => acc[o].Result().Cosine);
        return double.IsNaN(cosine) ? double.NegativeInfinity : cosine;
    }
}
