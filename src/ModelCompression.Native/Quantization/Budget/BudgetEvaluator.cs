using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Measures a budget's figure for candidate models on the validation data: the float model's outputs are computed once,
/// then each candidate run is compared with them (<see cref="FidelityAccumulator"/>: perplexity, accuracy, cosine).
/// Sensitivity runs use the first <see cref="SensitivityRows"/> rows; verification uses them all.
/// </summary>
internal sealed class BudgetEvaluator
{
    /// <summary>Rows a single-layer sensitivity run measures on (all rows verify a whole configuration).</summary>
    public const int SensitivityRows = 16;

    readonly QualityBudget budget;
    readonly List<InputBatch> batches;
    readonly List<IReadOnlyList<NamedArray>> expected = [];
    readonly int sensitivityBatches;
    readonly CancellationToken cancel;

    public BudgetEvaluator(OnnxModel reference, DataSet validation, QualityBudget budget, int batchSize, CancellationToken cancel)
    {
        this.budget = budget;
        this.cancel = cancel;
        batches = ModelInputs.Batches(reference, new InputSource { Data = validation, BatchSize = batchSize }).ToList();
        var decoder = DecoderContract.Of(reference);
        var state = decoder?.Cache.Select(c => c.Output).ToHashSet(StringComparer.Ordinal) ?? [];
        using var session = new ModelSession(reference);
        Outputs = session.OutputNames.Where(o => !state.Contains(o)).ToList();
        foreach (var batch in batches) expected.Add(session.Run(batch.Inputs, Outputs, cancel));
        Rows = validation.Rows;
        long rows = 0;
        sensitivityBatches = batches.TakeWhile(b => (rows += b.Inputs.Values.First().Shape[0]) <= SensitivityRows).Count();
        sensitivityBatches = Math.Clamp(sensitivityBatches, 1, batches.Count);
        SensitivityRowCount = batches.Take(sensitivityBatches).Sum(b => b.Inputs.Values.First().Shape[0]);
        Evaluations = 0;
    }

    /// <summary>
    /// Refuses, before anything runs, validation data that does not fit the model and a budget no output can be measured
    /// on (by the outputs' declared ranks: perplexity needs [batch, sequence, vocabulary], accuracy a class axis).
    /// </summary>
    public static void Check(OnnxModel model, DataSet validation, QualityBudget budget)
    {
        ModelInputs.Bind(model, validation);
        if (budget.Metric == BudgetMetric.Cosine) return;
        var ranks = model.Proto.Graph.Output.Select(o => o.Type?.TensorType?.Shape?.Dim.Count ?? 0).Where(r => r > 0).ToList();
        int needed = budget.Metric == BudgetMetric.PerplexityRise ? 3 : 2;
        if (ranks.Count == model.Proto.Graph.Output.Count && !ranks.Any(r => r >= needed))
            throw NotMeasurable(budget);
    }

    static EngineException NotMeasurable(QualityBudget budget) => new("QuantizationBudgetNotMeasurable", EngineErrorKind.InvalidArgument,
        budget.Metric == BudgetMetric.PerplexityRise
            ? $"{budget} needs a language model's logits ([batch, sequence, vocabulary]) and a label per position in -ValidationData; no output of the model is scored that way."
            : $"{budget} needs an output with a class axis and one label per row in -ValidationData; no output of the model is scored that way.");

    public IReadOnlyList<string> Outputs { get; }
    public long Rows { get; }
    public long SensitivityRowCount { get; }
    public int Evaluations { get; private set; }

    /// <summary>The figure of a candidate run by <paramref name="session"/> with <paramref name="extra"/> inputs (weights, switches) beside each batch.</summary>
    public double Measure(ModelSession session, IReadOnlyDictionary<string, NamedArray> extra, bool sensitivity)
    {
        Evaluations++;
        var acc = Outputs.ToDictionary(o => o, o => new FidelityAccumulator(o), StringComparer.Ordinal);
        int count = sensitivity ? sensitivityBatches : batches.Count;
        for (int b = 0; b < count; b++)
        {
            cancel.ThrowIfCancellationRequested();
            var inputs = new Dictionary<string, NamedArray>(batches[b].Inputs, StringComparer.Ordinal);
            foreach (var (name, value) in extra) inputs[name] = value;
            var results = session.Run(inputs, Outputs, cancel);
            for (int i = 0; i < Outputs.Count; i++) acc[Outputs[i]].Add(expected[b][i], results[i], batches[b].Labels);
        }
        return Figure(acc.Values.Select(a => a.Result()).ToList());
    }

    /// <summary>The budget's figure from the outputs' fidelity: perplexity rise, smallest cosine, or accuracy drop (fractions).</summary>
    double Figure(IReadOnlyList<OutputFidelity> outputs)
    {
        switch (budget.Metric)
        {
            case BudgetMetric.Cosine:
                double cosine = outputs.Min(o => o.Cosine);
                return double.IsNaN(cosine) ? double.NegativeInfinity : cosine;
            case BudgetMetric.PerplexityRise:
                var ppl = outputs.Where(o => o.PerplexityRise is not null).ToList();
                if (ppl.Count == 0) throw NotMeasurable(budget);
                return ppl.Max(o => o.PerplexityRise!.Value);
            default:
                var acc = outputs.Where(o => o.ReferenceAccuracy is not null && o.DifferenceAccuracy is not null).ToList();
                if (acc.Count == 0) throw NotMeasurable(budget);
                return acc.Max(o => o.ReferenceAccuracy!.Value - o.DifferenceAccuracy!.Value);
        }
    }
}
