using ModelCompression.Native.Data;
using ModelCompression.Native.Runtime;

namespace ModelCompression;

/// <summary>What Compare-Model reports: fidelity per output, size and parameter ratios, and the gates missed.</summary>
public sealed class ModelComparisonReport
{
    public required string Reference { get; init; }
    public required string Difference { get; init; }
    public string? ReferencePath { get; init; }
    public string? DifferencePath { get; init; }
    public long ReferenceSizeBytes { get; init; }
    public long DifferenceSizeBytes { get; init; }
    /// <summary>Difference size over reference size (0.27: the difference is 27% of the reference's size).</summary>
    public double SizeRatio { get; init; }
    public long ReferenceParameters { get; init; }
    public long DifferenceParameters { get; init; }
    public double ParameterRatio { get; init; }
    public required string InputSource { get; init; }
    public long Rows { get; init; }
    public required OutputComparison[] Outputs { get; init; }
    /// <summary>Compare-Model -Generate: greedy continuations compared token by token; null without -Generate.</summary>
    public GenerationComparison? Generation { get; init; }
    public required GateResult[] FailedGates { get; init; }
    public bool Passed => FailedGates.Length == 0;

    /// <summary>The lowest cosine similarity over the outputs.</summary>
    public double Cosine => Outputs.Length == 0 ? double.NaN : Outputs.Min(o => o.Cosine);
    public double MaxAbsError => Outputs.Length == 0 ? double.NaN : Outputs.Max(o => o.MaxAbsError);
    /// <summary>The lowest top-1 agreement over the outputs that have a class axis; null when none has.</summary>
    public double? Top1Agreement => Outputs.Where(o => o.Top1Agreement is not null).Select(o => o.Top1Agreement).DefaultIfEmpty(null).Min();
    /// <summary>The largest accuracy drop over the outputs scored against labels; null without labels.</summary>
    public double? AccuracyDrop => Outputs.Where(o => o.AccuracyDrop is not null).Select(o => o.AccuracyDrop).DefaultIfEmpty(null).Max();
    /// <summary>The largest perplexity increase (percent) over the sequence outputs scored against labels per position; null without.</summary>
    public double? PerplexityIncrease => Outputs.Where(o => o.PerplexityIncrease is not null).Select(o => o.PerplexityIncrease).DefaultIfEmpty(null).Max();

    internal static ModelComparisonReport From(ModelComparison c, Model reference, Model difference) => new()
    {
        Reference = reference.Name,
        Difference = difference.Name,
        ReferencePath = reference.Path,
        DifferencePath = difference.Path,
        ReferenceSizeBytes = c.ReferenceSize,
        DifferenceSizeBytes = c.DifferenceSize,
        SizeRatio = c.SizeRatio,
        ReferenceParameters = c.ReferenceParameters,
        DifferenceParameters = c.DifferenceParameters,
        ParameterRatio = c.ParameterRatio,
        InputSource = c.InputSource,
        Rows = c.Rows,
        Outputs = c.Outputs.Select(OutputComparison.From).ToArray(),
        Generation = c.Generation is null ? null : GenerationComparison.From(c.Generation),
        FailedGates = c.FailedGates.Select(GateResult.From).ToArray(),
    };

    public override string ToString() => $"{Difference} vs {Reference}: cosine {Cosine:G6}{(Passed ? "" : ", " + FailedGates.Length + " gate(s) failed")}";
}

/// <summary>How closely one output of the difference model follows the reference's.</summary>
public sealed class OutputComparison
{
    public required string Output { get; init; }
    public long Values { get; init; }
    public double Cosine { get; init; }
    public double MaxAbsError { get; init; }
    public double MeanAbsError { get; init; }
    public double? Top1Agreement { get; init; }
    public double? ReferenceAccuracy { get; init; }
    public double? DifferenceAccuracy { get; init; }
    public double? AccuracyDrop => ReferenceAccuracy - DifferenceAccuracy;
    /// <summary>exp(mean cross-entropy) of the reference over the labelled positions, for a sequence of scores ([batch, sequence, classes]).</summary>
    public double? ReferencePerplexity { get; init; }
    public double? DifferencePerplexity { get; init; }
    /// <summary>How much the perplexity rose, in percent of the reference's.</summary>
    public double? PerplexityIncrease { get; init; }

    internal static OutputComparison From(OutputFidelity f) => new()
    {
        Output = f.Output,
        Values = f.Values,
        Cosine = f.Cosine,
        MaxAbsError = f.MaxAbsError,
        MeanAbsError = f.MeanAbsError,
        Top1Agreement = f.Top1Agreement,
        ReferenceAccuracy = f.ReferenceAccuracy,
        DifferenceAccuracy = f.DifferenceAccuracy,
        ReferencePerplexity = f.ReferencePerplexity,
        DifferencePerplexity = f.DifferencePerplexity,
        PerplexityIncrease = f.PerplexityIncrease,
    };

    public override string ToString() => $"{Output}: cosine {Cosine:G6}";
}

/// <summary>A gate Compare-Model checked and the comparison missed.</summary>
public sealed class GateResult
{
    public required string Gate { get; init; }
    public required string ErrorId { get; init; }
    public required string Output { get; init; }
    public double Threshold { get; init; }
    /// <summary>The measured value; null when it could not be measured.</summary>
    public double? Actual { get; init; }
    public required string Message { get; init; }

    internal static GateResult From(GateFailure g) => new()
    {
        Gate = g.Gate, ErrorId = g.ErrorId, Output = g.Output, Threshold = g.Threshold, Actual = g.Actual, Message = g.Message,
    };

    public override string ToString() => Message;
}

/// <summary>The exception in the error record Compare-Model writes for a missed gate.</summary>
public sealed class ModelGateException(GateResult gate) : Exception(gate.Message)
{
    public GateResult Gate { get; } = gate;
}
