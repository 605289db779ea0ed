using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Runtime;

/// <summary>A generation comparison to run beside the fidelity one: how many prompts, and how they are made and continued (data: the comparison's when not given).</summary>
public sealed record GenerationComparisonRequest(Generation.GenerationSettings Settings, int Prompts = 16);

/// <summary>Thresholds a comparison must meet (null: not checked). Every output that reports the metric is checked.</summary>
public sealed record ComparisonGates
{
    /// <summary>Every compared output's cosine similarity must be at least this.</summary>
    public double? MinCosine { get; init; }
    /// <summary>Reference accuracy minus the other model's accuracy must be at most this (a fraction, 0.01 = one point); needs labels.</summary>
    public double? MaxAccuracyDrop { get; init; }
    /// <summary>The fraction of rows whose top-1 class agrees must be at least this.</summary>
    public double? MinTop1Agreement { get; init; }
    /// <summary>The other model's perplexity may exceed the reference's by at most this percentage; needs labels per position.</summary>
    public double? MaxPerplexityIncrease { get; init; }

    /// <summary>The share of greedily generated tokens that agree must be at least this (a fraction); needs a generation comparison.</summary>
    public double? MinGenerationAgreement { get; init; }

    public bool Any => MinCosine is not null || MaxAccuracyDrop is not null || MinTop1Agreement is not null || MaxPerplexityIncrease is not null || MinGenerationAgreement is not null;
}

/// <summary>A gate the comparison did not pass. <see cref="ErrorId"/> is stable; <see cref="Actual"/> is null when the metric could not be computed.</summary>
public sealed record GateFailure(string Gate, string ErrorId, string Output, double Threshold, double? Actual, string Message);

/// <summary>Everything Compare-Model reports: fidelity per output, size and parameter ratios, failed gates.</summary>
public sealed record ModelComparison
{
    public required string Reference { get; init; }
    public required string Difference { get; init; }
    public string? ReferencePath { get; init; }
    public string? DifferencePath { get; init; }
    /// <summary>Serialized sizes in bytes (what a single-file export would write).</summary>
    public long ReferenceSize { get; init; }
    public long DifferenceSize { get; init; }
    /// <summary>DifferenceSize / ReferenceSize.</summary>
    public double SizeRatio { get; init; }
    /// <summary>Parameters (<see cref="ParameterCount"/>): logical weights, whatever their storage.</summary>
    public long ReferenceParameters { get; init; }
    public long DifferenceParameters { get; init; }
    public double ParameterRatio { get; init; }
    public required string InputSource { get; init; }
    public long Rows { get; init; }
    public required IReadOnlyList<OutputFidelity> Outputs { get; init; }
    /// <summary>Greedy continuations compared token by token, when asked for.</summary>
    public Generation.GenerationAgreement? Generation { get; init; }
    public required IReadOnlyList<GateFailure> FailedGates { get; init; }
    public bool Passed => FailedGates.Count == 0;

    /// <summary>
    /// Runs both models on the same inputs (<see cref="ModelComparer.Compare"/>), adds size and parameter ratios and
    /// evaluates <paramref name="gates"/>. A gate that needs labels when the inputs have none is refused before anything runs.
    /// </summary>
    public static ModelComparison Run(OnnxModel reference, OnnxModel difference, InputSource inputs, ComparisonGates? gates = null,
        SessionSettings? settings = null, IProgress<double>? progress = null, CancellationToken cancel = default, GenerationComparisonRequest? generation = null)
    {
        gates ??= new ComparisonGates();
        ValidateGates(gates, inputs);
        if (gates.MinGenerationAgreement is { } ga && (ga < 0 || ga > 1 || double.IsNaN(ga)))
            throw new EngineException("MinGenerationAgreementOutOfRange", EngineErrorKind.InvalidArgument, $"A minimum generation agreement is a fraction between 0 and 1, not {ga}.");
        if (gates.MinGenerationAgreement is not null && generation is null)
            throw new EngineException("GenerationGateRequiresGenerate", EngineErrorKind.InvalidArgument, "A minimum generation agreement needs the generation comparison (-Generate).");
        var outputs = ModelComparer.Compare(reference, difference, inputs, settings, ProgressRelay.Range(progress, 0, generation is null ? 1 : 0.5), cancel);
        var agreement = generation is null ? null : Runtime.Generation.GenerationAgreement.Measure(reference, difference,
            generation.Settings with { Data = generation.Settings.Data ?? inputs.Data }, generation.Prompts, ProgressRelay.Range(progress, 0.5, 1), cancel);
        long refSize = reference.SerializedSize, diffSize = difference.SerializedSize;
        long refParams = Parameters(reference), diffParams = Parameters(difference);
        string source;
        long rows;
        if (inputs.Data is { } data)
        {
            rows = data.Rows;
            source = $"{Path.GetFileName(data.Source)} ({rows} rows{(data.Labels is null ? "" : ", labelled")})";
        }
        else
        {
            rows = inputs.SyntheticBatches * inputs.Synthesis.BatchSize;
            source = $"Synthesized ({inputs.SyntheticBatches} batch{(inputs.SyntheticBatches == 1 ? "" : "es")} of {inputs.Synthesis.BatchSize})";
        }
        return new ModelComparison
        {
            Reference = reference.Name,
            Difference = difference.Name,
            ReferencePath = reference.SourcePath,
            DifferencePath = difference.SourcePath,
            ReferenceSize = refSize,
            DifferenceSize = diffSize,
            SizeRatio = refSize == 0 ? double.NaN : (double)diffSize / refSize,
            ReferenceParameters = refParams,
            DifferenceParameters = diffParams,
            ParameterRatio = refParams == 0 ? double.NaN : (double)diffParams / refParams,
            InputSource = source,
            Rows = rows,
            Outputs = outputs,
            Generation = agreement,
            FailedGates = [.. Evaluate(gates, outputs), .. EvaluateGeneration(gates, agreement)],
        };
    }

    static void ValidateGates(ComparisonGates g, InputSource inputs)
    {
        if (inputs.Synthesis.IntegerRange is { } range && range.Max <= range.Min)
            throw new EngineException("IntegerRangeInvalid", EngineErrorKind.InvalidArgument, $"Integer range [{range.Min}, {range.Max}) is empty.");
        if (inputs.BatchSize < 1 || inputs.Synthesis.BatchSize < 1)
            throw new EngineException("BatchSizeOutOfRange", EngineErrorKind.InvalidArgument, $"Batch size must be 1 or more, not {Math.Min(inputs.BatchSize, inputs.Synthesis.BatchSize)}.");
        if (g.MinCosine is { } c && (c < -1 || c > 1 || double.IsNaN(c)))
            throw new EngineException("MinCosineOutOfRange", EngineErrorKind.InvalidArgument, $"A minimum cosine similarity is between -1 and 1, not {c}.");
        if (g.MinTop1Agreement is { } t && (t < 0 || t > 1 || double.IsNaN(t)))
            throw new EngineException("MinTop1AgreementOutOfRange", EngineErrorKind.InvalidArgument, $"A minimum top-1 agreement is a fraction between 0 and 1, not {t}.");
        if (g.MaxPerplexityIncrease is { } pi)
        {
            if (pi < 0 || double.IsNaN(pi) || double.IsInfinity(pi))
                throw new EngineException("MaxPerplexityIncreaseOutOfRange", EngineErrorKind.InvalidArgument, $"A maximum perplexity increase is a percentage of 0 or more, not {pi}.");
            if (inputs.Data?.Labels is null)
                throw new EngineException("PerplexityGateRequiresLabels", EngineErrorKind.InvalidArgument,
                    inputs.Data is null
                        ? "A maximum perplexity increase needs labelled data (-InputData with a 'y' or 'label' array of the next token at each position); synthesized inputs have no labels."
                        : $"A maximum perplexity increase needs labels, but data file '{inputs.Data.Source}' has no 'y', 'label' or 'labels' array.");
        }
        if (g.MaxAccuracyDrop is { } d)
        {
            if (d < 0 || d > 1 || double.IsNaN(d))
                throw new EngineException("MaxAccuracyDropOutOfRange", EngineErrorKind.InvalidArgument, $"A maximum accuracy drop is a fraction between 0 and 1, not {d}.");
            if (inputs.Data?.Labels is null)
                throw new EngineException("AccuracyGateRequiresLabels", EngineErrorKind.InvalidArgument,
                    inputs.Data is null
                        ? "A maximum accuracy drop needs labelled data (-InputData with a 'y' or 'label' array); synthesized inputs have no labels."
                        : $"A maximum accuracy drop needs labels, but data file '{inputs.Data.Source}' has no 'y', 'label' or 'labels' array.");
        }
    }

    /// <summary>The gates the outputs miss; a gate no output can be judged on is a failure too (a gate that cannot fail would be meaningless in CI).</summary>
    public static IReadOnlyList<GateFailure> Evaluate(ComparisonGates gates, IReadOnlyList<OutputFidelity> outputs)
    {
        var failed = new List<GateFailure>();
        if (gates.MinCosine is { } minCos)
            foreach (var o in outputs)
                if (!(o.Cosine >= minCos))
                    failed.Add(new GateFailure("MinCosine", "CosineBelowMinimum", o.Output, minCos, o.Cosine,
                        $"Output '{o.Output}': cosine similarity {o.Cosine:G6} is below the minimum {minCos:G6}."));
        if (gates.MinTop1Agreement is { } minTop1)
        {
            var judged = outputs.Where(o => o.Top1Agreement is not null).ToList();
            if (judged.Count == 0)
                failed.Add(new GateFailure("MinTop1Agreement", "Top1AgreementNotMeasurable", string.Join(",", outputs.Select(o => o.Output)), minTop1, null,
                    "No compared output has a class axis (a last dimension of 2 or more), so top-1 agreement cannot be measured."));
            foreach (var o in judged)
                if (!(o.Top1Agreement >= minTop1))
                    failed.Add(new GateFailure("MinTop1Agreement", "Top1AgreementBelowMinimum", o.Output, minTop1, o.Top1Agreement,
                        $"Output '{o.Output}': top-1 agreement {o.Top1Agreement:P2} is below the minimum {minTop1:P2}."));
        }
        if (gates.MaxAccuracyDrop is { } maxDrop)
        {
            var judged = outputs.Where(o => o.ReferenceAccuracy is not null && o.DifferenceAccuracy is not null).ToList();
            if (judged.Count == 0)
                failed.Add(new GateFailure("MaxAccuracyDrop", "AccuracyNotMeasurable", string.Join(",", outputs.Select(o => o.Output)), maxDrop, null,
                    "No compared output could be scored against the labels (an output needs a class axis and one row per label), so the accuracy drop cannot be measured."));
            foreach (var o in judged)
            {
                double drop = o.ReferenceAccuracy!.Value - o.DifferenceAccuracy!.Value;
                if (!(drop <= maxDrop + 1e-12))
                    failed.Add(new GateFailure("MaxAccuracyDrop", "AccuracyDropAboveMaximum", o.Output, maxDrop, drop,
                        $"Output '{o.Output}': accuracy dropped from {o.ReferenceAccuracy:P2} to {o.DifferenceAccuracy:P2} ({drop:P2}), more than the maximum {maxDrop:P2}."));
            }
        }
        if (gates.MaxPerplexityIncrease is { } maxIncrease)
        {
            var judged = outputs.Where(o => o.PerplexityIncrease is not null).ToList();
            if (judged.Count == 0)
                failed.Add(new GateFailure("MaxPerplexityIncrease", "PerplexityNotMeasurable", string.Join(",", outputs.Select(o => o.Output)), maxIncrease, null,
                    "No compared output is a sequence of scores ([batch, sequence, classes]) with a label per position, so perplexity cannot be measured."));
            foreach (var o in judged)
                if (!(o.PerplexityIncrease <= maxIncrease + 1e-9))
                    failed.Add(new GateFailure("MaxPerplexityIncrease", "PerplexityIncreaseAboveMaximum", o.Output, maxIncrease, o.PerplexityIncrease,
                        $"Output '{o.Output}': perplexity rose from {o.ReferencePerplexity:G6} to {o.DifferencePerplexity:G6} ({o.PerplexityIncrease:F3}%), more than the maximum {maxIncrease:G4}%."));
        }
        return failed;
    }

    static IEnumerable<GateFailure> EvaluateGeneration(ComparisonGates gates, Generation.GenerationAgreement? a)
    {
        if (gates.MinGenerationAgreement is { } min && a is not null && !(a.TokenAgreement >= min))
            yield return new GateFailure("MinGenerationAgreement", "GenerationAgreementBelowMinimum", "generation", min, a.TokenAgreement,
                $"Greedy generation: {a.TokenAgreement:P2} of the generated tokens agree ({a.Prompts} prompts of {a.PromptLength} tokens, {a.NewTokens} new each; first divergence at {a.MeanFirstDivergence:F1} on average), below the minimum {min:P2}.");
    }

    static long Parameters(OnnxModel model) => ParameterCount.Of(model.Proto);
}
