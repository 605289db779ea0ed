using ModelCompression.Native.Runtime.Generation;

namespace ModelCompression;

/// <summary>
/// Generation figures of one model from Measure-ModelLatency -Generate: time to first token, per-token decode latency,
/// tokens per second and memory; with a baseline, Speedup is the baseline's decode latency over this model's (above 1:
/// faster) with its bootstrap confidence interval. Times in milliseconds.
/// </summary>
[EngineRecord(typeof(GenerationResult), Renamed = ["SpeedupToBaseline=Speedup"], Omitted = [
    nameof(GenerationResult.IsBaseline),                  // shown as Role
    nameof(GenerationResult.TimeToFirstTokenSamplesMs),   // every timed run; the statistics summarize them
    nameof(GenerationResult.DecodeSamplesMs),
])]
public sealed class GenerationReport
{
    /// <summary>The Model's name and file, as Get-Model and the stages named them.</summary>
    public string Model { get; internal set; } = "";
    public string? Path { get; internal set; }
    /// <summary>"Baseline" for the -Baseline model, "Model" for the others.</summary>
    public string Role { get; internal set; } = "";
    /// <summary>OnnxRuntime (the module's own greedy loop) or GenAI (ONNX Runtime GenAI).</summary>
    public string Engine { get; init; } = "";
    public string Provider { get; init; } = "";
    public int PromptLength { get; init; }
    public int NewTokens { get; init; }
    public string PromptSource { get; init; } = "";
    public int Runs { get; init; }
    public double TimeToFirstTokenMs { get; init; }
    public double DecodeMeanMs { get; init; }
    public double DecodeP50Ms { get; init; }
    public double DecodeP90Ms { get; init; }
    public double DecodeP99Ms { get; init; }
    public double TokensPerSecond { get; init; }
    public double EndToEndTokensPerSecond { get; init; }
    /// <summary>What the model needs to generate, counted: its weights as stored and its cache at the end of a generation.</summary>
    public long ModelMemoryBytes { get; init; }
    public long PeakWorkingSetBytes { get; init; }
    public long CacheBytesPerToken { get; init; }
    public string? Baseline { get; internal set; }
    public double? Speedup { get; init; }
    public double? SpeedupLower { get; init; }
    public double? SpeedupUpper { get; init; }
    public bool? Significant { get; init; }
    public double? TimeToFirstTokenRatio { get; init; }
    public double? MemoryRatio { get; init; }

    /// <summary>"3.12x [3.05, 3.20]*" (the star: significant), empty without a baseline.</summary>
    public string SpeedupText => Speedup is { } r
        ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{r:F2}x [{SpeedupLower:F2}, {SpeedupUpper:F2}]{(Significant == true ? "*" : "")}")
        : "";

    /// <summary>Names and paths come from the cmdlet's models, not the engine's.</summary>
    internal static GenerationReport From(GenerationResult r, Model model, Model? baseline)
    {
        var report = EngineRecords.Map<GenerationReport>(r);
        report.Model = model.Name;
        report.Path = model.Path ?? r.Path;
        report.Role = r.IsBaseline ? "Baseline" : "Model";
        report.Baseline = r.IsBaseline ? null : baseline?.Name;
        return report;
    }

    public override string ToString() => $"{Model}: {TokensPerSecond:F1} tokens/s, first token {TimeToFirstTokenMs:F1} ms";
}

/// <summary>Compare-Model -Generate: greedy continuations of the same prompts by both models, compared token by token.</summary>
[EngineRecord(typeof(GenerationAgreement))]
public sealed class GenerationComparison
{
    public string Engine { get; init; } = "";
    public int Prompts { get; init; }
    public int PromptLength { get; init; }
    public int NewTokens { get; init; }
    public string PromptSource { get; init; } = "";
    /// <summary>The share of generated positions where both models chose the same token.</summary>
    public double TokenAgreement { get; init; }
    /// <summary>Mean position of the first different token (NewTokens when continuations are identical).</summary>
    public double MeanFirstDivergence { get; init; }
    public int IdenticalContinuations { get; init; }
    /// <summary>The share of repeated 4-grams in each model's continuations (loops show here).</summary>
    public double ReferenceRepetition { get; init; }
    public double DifferenceRepetition { get; init; }

    public override string ToString() => string.Create(System.Globalization.CultureInfo.InvariantCulture,
        $"{TokenAgreement:P1} of tokens agree, first divergence at {MeanFirstDivergence:F1} of {NewTokens}");
}
