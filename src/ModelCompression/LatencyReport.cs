using System.Globalization;
using ModelCompression.Native.Runtime;

namespace ModelCompression;

/// <summary>
/// The latency of one model from Measure-ModelLatency. Times are in milliseconds; with a baseline, RatioToBaseline is
/// this model's median over the baseline's (below 1: faster) with its bootstrap confidence interval.
/// </summary>
[EngineRecord(typeof(LatencyResult), Omitted = [
    nameof(LatencyResult.IsBaseline),   // shown as Role
    nameof(LatencyResult.SamplesMs),    // every timed run: thousands with -Duration; the statistics summarize them
])]
public sealed class LatencyReport
{
    /// <summary>The Model's name and file, as Get-Model and the stages named them.</summary>
    public string Model { get; internal set; } = "";
    public string? Path { get; internal set; }
    /// <summary>"Baseline" for the -Baseline model, "Model" for the others.</summary>
    public string Role { get; internal set; } = "";
    public string Provider { get; init; } = "";
    public int IntraOpThreads { get; init; }
    public int InterOpThreads { get; init; }
    public string? GraphOptimization { get; init; }
    public string Inputs { get; init; } = "";
    public string InputSource { get; init; } = "";
    public long BatchSize { get; init; }
    public int Warmup { get; init; }
    public int Iterations { get; init; }
    public double SessionCreationMs { get; init; }
    public double FirstRunMs { get; init; }
    public double MeanMs { get; init; }
    public double StdDevMs { get; init; }
    public double MinMs { get; init; }
    public double P50Ms { get; init; }
    public double P90Ms { get; init; }
    public double P95Ms { get; init; }
    public double P99Ms { get; init; }
    public double MaxMs { get; init; }
    public double InferencesPerSecond { get; init; }
    public double ItemsPerSecond { get; init; }
    /// <summary>Peak working set of the whole process during the run (all models of the run together).</summary>
    public long PeakWorkingSetBytes { get; init; }
    public string? Baseline { get; internal set; }
    public double? RatioToBaseline { get; init; }
    public double? RatioLower { get; init; }
    public double? RatioUpper { get; init; }
    public double? ConfidenceLevel { get; init; }
    public bool? Significant { get; init; }

    /// <summary>"0.52 [0.49, 0.55]*" (the star: significant), empty without a baseline.</summary>
    public string RatioText => RatioToBaseline is { } r
        ? string.Create(CultureInfo.InvariantCulture, $"{r:F3} [{RatioLower:F3}, {RatioUpper:F3}]{(Significant == true ? "*" : "")}")
        : "";

    /// <summary>Names and paths come from the cmdlet's models (<see cref="ModelCompression.Model.Name"/>), not the engine's.</summary>
    internal static LatencyReport From(LatencyResult r, Model model, Model? baseline)
    {
        var report = EngineRecords.Map<LatencyReport>(r);
        report.Model = model.Name;
        report.Path = model.Path;
        report.Role = r.IsBaseline ? "Baseline" : "Model";
        report.Baseline = r.IsBaseline ? null : baseline?.Name;
        return report;
    }

    public override string ToString() => $"{Model}: P50 {P50Ms:F3} ms";
}
