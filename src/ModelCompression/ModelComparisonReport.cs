using System.Globalization;
using ModelCompression.Native.Runtime;

namespace ModelCompression;

/// <summary>What Compare-Model reports: fidelity per output, size and parameter ratios, the gates checked and missed.</summary>
[EngineRecord(typeof(ModelComparison), Renamed = ["ReferenceSize=ReferenceSizeBytes", "DifferenceSize=DifferenceSizeBytes"])]
public sealed class ModelComparisonReport
{
    /// <summary>The Models' names and files, as Get-Model and the stages named them.</summary>
    public string Reference { get; internal set; } = "";
    public string Difference { get; internal set; } = "";
    public string? ReferencePath { get; internal set; }
    public string? DifferencePath { get; internal set; }
    public long ReferenceSizeBytes { get; init; }
    public long DifferenceSizeBytes { get; init; }
    /// <summary>Difference size over reference size (0.27: the difference is 27% of the reference's size).</summary>
    public double SizeRatio { get; init; }
    public long ReferenceParameters { get; init; }
    public long DifferenceParameters { get; init; }
    public double ParameterRatio { get; init; }
    public string InputSource { get; init; } = "";
    public long Rows { get; init; }
    public OutputComparison[] Outputs { get; init; } = [];
    /// <summary>Compare-Model -Generate: greedy continuations compared token by token; null without -Generate.</summary>
    public GenerationComparison? Generation { get; init; }
    /// <summary>The gates checked, by parameter name, with their thresholds; empty when none was given.</summary>
    public Dictionary<string, double> Gates { get; init; } = [];
    public GateResult[] FailedGates { get; init; } = [];
    /// <summary>True when every gate held, false when one was missed, null when no gate was given (nothing was claimed).</summary>
    public bool? Passed { get; init; }

    /// <summary>The lowest cosine similarity over the outputs.</summary>
    public double Cosine => Outputs.Length == 0 ? double.NaN : Outputs.Min(o => o.Cosine);
    public double MaxAbsError => Outputs.Length == 0 ? double.NaN : Outputs.Max(o => o.MaxAbsError);
    /// <summary>The lowest top-1 agreement over the outputs that have a class axis; null when none has.</summary>
    public double? Top1Agreement => Outputs.Where(o => o.Top1Agreement is not null).Select(o => o.Top1Agreement).DefaultIfEmpty(null).Min();
    /// <summary>The largest accuracy drop over the outputs scored against labels; null without labels.</summary>
    public double? AccuracyDrop => Outputs.Where(o => o.AccuracyDrop is not null).Select(o => o.AccuracyDrop).DefaultIfEmpty(null).Max();
    /// <summary>The output whose perplexity rose most, of those scored per position; null without.</summary>
    OutputComparison? WorstPerplexity => Outputs.Where(o => o.PerplexityRise is not null).MaxBy(o => o.PerplexityRise);
    /// <summary>The largest perplexity rise, a fraction of the reference's perplexity (0.05: 5 % higher).</summary>
    public double? PerplexityRise => WorstPerplexity?.PerplexityRise;
    /// <summary>The two perplexities of that output.</summary>
    public double? ReferencePerplexity => WorstPerplexity?.ReferencePerplexity;
    public double? DifferencePerplexity => WorstPerplexity?.DifferencePerplexity;

    /// <summary>The cosine as the views show it: five decimals, more when five would round a miss up to 1.</summary>
    public string CosineText => Cosine < 1 && Math.Round(Cosine, 5) >= 1
        ? ModelComparison.Apart(Cosine, 1)
        : Cosine.ToString("F5", CultureInfo.CurrentCulture);

    internal static ModelComparisonReport From(ModelComparison c, Model reference, Model difference)
    {
        var report = EngineRecords.Map<ModelComparisonReport>(c);
        report.Reference = reference.Name;
        report.Difference = difference.Name;
        report.ReferencePath = reference.Path;
        report.DifferencePath = difference.Path;
        return report;
    }

    public override string ToString() => $"{Difference} vs {Reference}: cosine {CosineText}" +
        (Passed is null ? ", no gate" : Passed.Value ? ", passed" : $", {FailedGates.Length} gate(s) failed");
}

/// <summary>How closely one output of the difference model follows the reference's.</summary>
[EngineRecord(typeof(OutputFidelity))]
public sealed class OutputComparison
{
    public string Output { get; init; } = "";
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
    /// <summary>How much the perplexity rose, as a fraction of the reference's (0.05: 5 % higher).</summary>
    public double? PerplexityRise { get; init; }

    public override string ToString() => $"{Output}: cosine {Cosine:G6}";
}

/// <summary>A gate Compare-Model checked and the comparison missed.</summary>
[EngineRecord(typeof(GateFailure))]
public sealed class GateResult
{
    public string Gate { get; init; } = "";
    public string ErrorId { get; init; } = "";
    public string Output { get; init; } = "";
    public double Threshold { get; init; }
    /// <summary>The measured value; null when it could not be measured.</summary>
    public double? Actual { get; init; }
    public string Message { get; init; } = "";

    public override string ToString() => Message;
}

/// <summary>The exception in the error record Compare-Model writes for a missed gate.</summary>
public sealed class ModelGateException(GateResult gate) : Exception(gate.Message)
{
    public GateResult Gate { get; } = gate;
}
