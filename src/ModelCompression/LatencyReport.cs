using ModelCompression.Native.Data;
using ModelCompression.Native.Runtime;

namespace ModelCompression;

/// <summary>
/// The latency of one model from Measure-ModelLatency. Times are in milliseconds; with a baseline, RatioToBaseline is
/// this model's median over the baseline's (below 1: faster) with its bootstrap confidence interval.
/// </summary>
public sealed class LatencyReport
{
    public required string Model { get; init; }
    public string? Path { get; init; }
    /// <summary>"Baseline" for the -Baseline model, "Model" for the others.</summary>
    public required string Role { get; init; }
    public required string Provider { get; init; }
    public int IntraOpThreads { get; init; }
    public int InterOpThreads { get; init; }
    public string? GraphOptimization { get; init; }
    public required string Inputs { get; init; }
    public required string InputSource { get; init; }
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
    public string? Baseline { get; init; }
    public double? RatioToBaseline { get; init; }
    public double? RatioLower { get; init; }
    public double? RatioUpper { get; init; }
    public double? ConfidenceLevel { get; init; }
    public bool? Significant { get; init; }

    /// <summary>"0.52 [0.49, 0.55]*" (the star: significant), empty without a baseline.</summary>
    public string RatioText => RatioToBaseline is { } r
        ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{r:F3} [{RatioLower:F3}, {RatioUpper:F3}]{(Significant == true ? "*" : "")}")
        : "";

    /// <summary>Names and paths come from the cmdlet's models (<see cref="ModelCompression.Model.Name"/>), not the engine's.</summary>
    internal static LatencyReport From(LatencyResult r, Model model, Model? baseline) => new()
    {
        Model = model.Name,
        Path = model.Path,
        Role = r.IsBaseline ? "Baseline" : "Model",
        Provider = r.Provider,
        IntraOpThreads = r.IntraOpThreads,
        InterOpThreads = r.InterOpThreads,
        GraphOptimization = r.GraphOptimization,
        Inputs = r.Inputs,
        InputSource = r.InputSource,
        BatchSize = r.BatchSize,
        Warmup = r.Warmup,
        Iterations = r.Iterations,
        SessionCreationMs = r.SessionCreationMs,
        FirstRunMs = r.FirstRunMs,
        MeanMs = r.MeanMs,
        StdDevMs = r.StdDevMs,
        MinMs = r.MinMs,
        P50Ms = r.P50Ms,
        P90Ms = r.P90Ms,
        P95Ms = r.P95Ms,
        P99Ms = r.P99Ms,
        MaxMs = r.MaxMs,
        InferencesPerSecond = r.InferencesPerSecond,
        ItemsPerSecond = r.ItemsPerSecond,
        PeakWorkingSetBytes = r.PeakWorkingSetBytes,
        Baseline = r.IsBaseline ? null : baseline?.Name,
        RatioToBaseline = r.RatioToBaseline,
        RatioLower = r.RatioLower,
        RatioUpper = r.RatioUpper,
        ConfidenceLevel = r.ConfidenceLevel,
        Significant = r.Significant,
    };

    public override string ToString() => $"{Model}: P50 {P50Ms:F3} ms";
}
