using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Runtime.Generation;

/// <summary>How to measure generation: prompts and lengths, untimed and timed generations per model.</summary>
public sealed record GenerationMeasureOptions
{
    public GenerationSettings Generation { get; init; } = new();
    /// <summary>Untimed generations of every model before measuring.</summary>
    public int Warmup { get; init; } = 1;
    /// <summary>Timed generations of every model (interleaved across models).</summary>
    public int Runs { get; init; } = 3;
    public double ConfidenceLevel { get; init; } = 0.95;
    public int BootstrapResamples { get; init; } = 10000;
    public ulong Seed { get; init; } = 1234;
}

/// <summary>What a user of a language model feels, for one model in one measurement run. Times in milliseconds.</summary>
public sealed record GenerationResult
{
    public required string Model { get; init; }
    public string? Path { get; init; }
    public bool IsBaseline { get; init; }
    public required string Engine { get; init; }
    public required string Provider { get; init; }
    public int PromptLength { get; init; }
    public int NewTokens { get; init; }
    public required string PromptSource { get; init; }
    public int Runs { get; init; }
    /// <summary>The prompt's run and the first new token (median over runs).</summary>
    public double TimeToFirstTokenMs { get; init; }
    /// <summary>Per-token latency of the decode steps after the first token, over all runs.</summary>
    public double DecodeMeanMs { get; init; }
    public double DecodeP50Ms { get; init; }
    public double DecodeP90Ms { get; init; }
    public double DecodeP99Ms { get; init; }
    /// <summary>Decode throughput: 1000 / the mean decode step.</summary>
    public double TokensPerSecond { get; init; }
    /// <summary>New tokens over the whole generation, first token included (median run).</summary>
    public double EndToEndTokensPerSecond { get; init; }
    /// <summary>
    /// What the model needs to generate, counted: its weights as stored and its key/value cache at the end of a
    /// generation (prompt and new tokens). Comparable across models in one process, where a measured rise is not
    /// (memory a model frees stays with the process for the next one).
    /// </summary>
    public long ModelMemoryBytes { get; init; }
    /// <summary>Peak working set of the whole process, measured while this model's session opened and it first generated.</summary>
    public long PeakWorkingSetBytes { get; init; }
    /// <summary>Bytes the key/value cache grows by per token of context.</summary>
    public long CacheBytesPerToken { get; init; }
    public string? Baseline { get; init; }
    /// <summary>Decode tokens per second over the baseline's (above 1: faster), with its confidence interval from the per-token latencies.</summary>
    public double? SpeedupToBaseline { get; init; }
    public double? SpeedupLower { get; init; }
    public double? SpeedupUpper { get; init; }
    public bool? Significant { get; init; }
    public double? TimeToFirstTokenRatio { get; init; }
    public double? MemoryRatio { get; init; }
    public required IReadOnlyList<double> TimeToFirstTokenSamplesMs { get; init; }
    public required IReadOnlyList<double> DecodeSamplesMs { get; init; }
}

/// <summary>
/// Measures greedy generation with the key/value cache: time to first token, per-token decode latency, tokens per
/// second and memory, for several models (and a baseline) in one run. Each model's session is opened and its first
/// generation run with the process's working set sampled; then warm-up and timed generations run round by round, the
/// starting model rotating, so that drift of a shared machine hits all alike.
/// </summary>
public static class GenerationMeter
{
    public static IReadOnlyList<GenerationResult> Measure(IReadOnlyList<OnnxModel> models, OnnxModel? baseline, GenerationMeasureOptions options,
        IProgress<double>? progress = null, CancellationToken cancel = default)
    {
        if (models.Count == 0) throw new EngineException("LatencyNoModel", EngineErrorKind.InvalidArgument, "There is no model to measure.");
        if (options.Runs < 1) throw new EngineException("LatencyIterationsOutOfRange", EngineErrorKind.InvalidArgument, $"Timed generations must be 1 or more, not {options.Runs}.");
        if (options.Warmup < 0) throw new EngineException("LatencyWarmupOutOfRange", EngineErrorKind.InvalidArgument, $"Warm-up generations must be 0 or more, not {options.Warmup}.");
        var all = (baseline is null ? models : [baseline, .. models]).ToList();
        var g = options.Generation;
        int rounds = options.Warmup + options.Runs;
        var prompts = all.Select(m => Prompts.Make(m, g, rounds + 1)).ToList();
        var members = new List<Member>();
        var engine = Prompts.Resolve(all, g.Engine);
        try
        {
            foreach (var m in all)
            {
                cancel.ThrowIfCancellationRequested();
                GC.Collect();
                GC.WaitForPendingFinalizers();
                using var watch = new MemoryWatch(TimeSpan.FromMilliseconds(20));
                watch.Start();
                var generator = Prompts.Open([m], engine, g.Session).Generators[0];
                members.Add(new Member(m, generator, ReferenceEquals(m, baseline)));
                generator.Generate(prompts[members.Count - 1][rounds], g.NewTokens, cancel);
                watch.Stop();
                members[^1].Peak = watch.Peak;
                progress?.Report(0.1 * members.Count / all.Count);
            }
            for (int r = 0; r < rounds; r++)
                for (int j = 0; j < members.Count; j++)
                {
                    cancel.ThrowIfCancellationRequested();
                    int index = (j + r) % members.Count;
                    var m = members[index];
                    var run = m.Generator.Generate(prompts[index][r], g.NewTokens, cancel);
                    if (r >= options.Warmup) m.Runs.Add(run);
                    progress?.Report(0.1 + 0.9 * (r * members.Count + j + 1) / (rounds * members.Count));
                }
            return Results(members, options, engine);
        }
        finally
        {
            foreach (var m in members) m.Generator.Dispose();
        }
    }

    static List<GenerationResult> Results(List<Member> members, GenerationMeasureOptions o, GenerationEngine engine)
    {
        var g = o.Generation;
        var baseline = members.FirstOrDefault(m => m.IsBaseline);
        var results = new List<GenerationResult>();
        for (int i = 0; i < members.Count; i++)
        {
            var m = members[i];
            var decode = m.DecodeSamples;
            var d = Statistics.Summarize(decode.Count > 0 ? decode : [double.NaN]);
            double ttft = Statistics.Median(m.Runs.Select(r => r.StepMs[0]));
            RatioEstimate? ratio = baseline is null || m.IsBaseline || decode.Count == 0 ? null
                // The baseline's latency over this one's: how many times faster this model decodes.
                : Statistics.MedianRatio(baseline.DecodeSamples, decode, o.ConfidenceLevel, o.BootstrapResamples, o.Seed + (ulong)i);
            results.Add(new GenerationResult
            {
                Model = m.Model.Name,
                Path = m.Model.Folder?.Path ?? m.Model.SourcePath,
                IsBaseline = m.IsBaseline,
                Engine = engine.ToString(),
                Provider = g.Session.Provider,
                PromptLength = g.PromptLength,
                NewTokens = g.NewTokens,
                PromptSource = g.Data is null ? "Random tokens" : System.IO.Path.GetFileName(g.Data.Source),
                Runs = m.Runs.Count,
                TimeToFirstTokenMs = ttft,
                DecodeMeanMs = d.Mean, DecodeP50Ms = d.P50, DecodeP90Ms = d.P90, DecodeP99Ms = d.P99,
                TokensPerSecond = d.Mean > 0 ? 1000 / d.Mean : double.NaN,
                EndToEndTokensPerSecond = 1000.0 * g.NewTokens / Statistics.Median(m.Runs.Select(r => r.StepMs.Sum())),
                ModelMemoryBytes = m.ModelMemory(g),
                PeakWorkingSetBytes = m.Peak,
                CacheBytesPerToken = DecoderContract.Of(m.Model)?.CacheBytesPerToken ?? 0,
                Baseline = baseline is null || m.IsBaseline ? null : baseline.Model.Name,
                SpeedupToBaseline = ratio?.Ratio, SpeedupLower = ratio?.Lower, SpeedupUpper = ratio?.Upper, Significant = ratio?.Significant,
                TimeToFirstTokenRatio = baseline is null || m.IsBaseline ? null : ttft / Statistics.Median(baseline.Runs.Select(r => r.StepMs[0])),
                MemoryRatio = baseline is null || m.IsBaseline ? null : (double)m.ModelMemory(g) / baseline.ModelMemory(g),
                TimeToFirstTokenSamplesMs = m.Runs.Select(r => r.StepMs[0]).ToArray(),
                DecodeSamplesMs = decode,
            });
        }
        return results;
    }

    sealed class Member(OnnxModel model, IGreedyGenerator generator, bool isBaseline)
    {
        public OnnxModel Model { get; } = model;
        public IGreedyGenerator Generator { get; } = generator;
        public bool IsBaseline { get; } = isBaseline;
        public List<GenerationRun> Runs { get; } = [];
        public long Peak { get; set; }
        public long ModelMemory(GenerationSettings g) =>
            Model.SerializedSize + (DecoderContract.Of(Model)?.CacheBytesPerToken ?? 0) * (g.PromptLength + (long)g.NewTokens);
        public List<double> DecodeSamples => Runs.SelectMany(r => r.StepMs.Skip(1)).ToList();
    }
}
