using ModelCompression.Native.Runtime.Generation;

namespace ModelCompression;

/// <summary>
/// Generation figures of one model from Measure-ModelLatency -Generate: time to first token, per-token decode latency,
/// tokens per second and memory; with a baseline, Speedup is the baseline's decode latency over this model's (above 1:
/// faster) with its bootstrap confidence interval. Times in milliseconds.
/// </summary>
public sealed class GenerationReport
{
    public required string Model { get; init; }
    public string? Path { get; init; }
    /// <summary>"Baseline" for the -Baseline model, "Model" for the others.</summary>
    public required string Role { get; init; }
    /// <summary>OnnxRuntime (the module's own greedy loop) or GenAI (ONNX Runtime GenAI).</summary>
    public required string Engine { get; init; }
    public required string Provider { get; init; }
    public int PromptLength { get; init; }
    public int NewTokens { get; init; }
    public required string PromptSource { get; init; }
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
    public string? Baseline { get; init; }
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

    internal static GenerationReport From(GenerationResult r, Model model, Model? baseline) => new()
    {
        Model = model.Name,
        Path = model.Path ?? r.Path,
        Role = r.IsBaseline ? "Baseline" : "Model",
        Engine = r.Engine,
        Provider = r.Provider,
        PromptLength = r.PromptLength,
        NewTokens = r.NewTokens,
        PromptSource = r.PromptSource,
        Runs = r.Runs,
        TimeToFirstTokenMs = r.TimeToFirstTokenMs,
        DecodeMeanMs = r.DecodeMeanMs,
        DecodeP50Ms = r.DecodeP50Ms,
        DecodeP90Ms = r.DecodeP90Ms,
        DecodeP99Ms = r.DecodeP99Ms,
        TokensPerSecond = r.TokensPerSecond,
        EndToEndTokensPerSecond = r.EndToEndTokensPerSecond,
        ModelMemoryBytes = r.ModelMemoryBytes,
        PeakWorkingSetBytes = r.PeakWorkingSetBytes,
        CacheBytesPerToken = r.CacheBytesPerToken,
        Baseline = r.IsBaseline ? null : baseline?.Name,
        Speedup = r.SpeedupToBaseline,
        SpeedupLower = r.SpeedupLower,
        SpeedupUpper = r.SpeedupUpper,
        Significant = r.Significant,
        TimeToFirstTokenRatio = r.TimeToFirstTokenRatio,
        MemoryRatio = r.MemoryRatio,
    };

    public override string ToString() => $"{Model}: {TokensPerSecond:F1} tokens/s, first token {TimeToFirstTokenMs:F1} ms";
}

/// <summary>Compare-Model -Generate: greedy continuations of the same prompts by both models, compared token by token.</summary>
public sealed class GenerationComparison
{
    public required string Engine { get; init; }
    public int Prompts { get; init; }
    public int PromptLength { get; init; }
    public int NewTokens { get; init; }
    public required string PromptSource { get; init; }
    /// <summary>The share of generated positions where both models chose the same token.</summary>
    public double TokenAgreement { get; init; }
    /// <summary>Mean position of the first different token (NewTokens when continuations are identical).</summary>
    public double MeanFirstDivergence { get; init; }
    public int IdenticalContinuations { get; init; }
    /// <summary>The share of repeated 4-grams in each model's continuations (loops show here).</summary>
    public double ReferenceRepetition { get; init; }
    public double DifferenceRepetition { get; init; }

    internal static GenerationComparison From(GenerationAgreement a) => new()
    {
        Engine = a.Engine,
        Prompts = a.Prompts,
        PromptLength = a.PromptLength,
        NewTokens = a.NewTokens,
        PromptSource = a.PromptSource,
        TokenAgreement = a.TokenAgreement,
        MeanFirstDivergence = a.MeanFirstDivergence,
        IdenticalContinuations = a.IdenticalContinuations,
        ReferenceRepetition = a.ReferenceRepetition,
        DifferenceRepetition = a.DifferenceRepetition,
    };

    public override string ToString() => string.Create(System.Globalization.CultureInfo.InvariantCulture,
        $"{TokenAgreement:P1} of tokens agree, first divergence at {MeanFirstDivergence:F1} of {NewTokens}");
}
