using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Runtime;

/// <summary>How to measure latency.</summary>
public sealed record LatencyOptions
{
    /// <summary>Untimed runs of every model before measuring (after the one timed first run).</summary>
    public int Warmup { get; init; } = 10;
    /// <summary>Timed runs of every model; ignored when <see cref="Duration"/> is set.</summary>
    public int Iterations { get; init; } = 100;
    /// <summary>Measure for this long in total (all models together) instead of a fixed number of iterations.</summary>
    public TimeSpan? Duration { get; init; }
    public SessionSettings Session { get; init; } = new();
    /// <summary>How inputs are synthesized when there is no <see cref="Data"/>.</summary>
    public SynthesisOptions Synthesis { get; init; } = new();
    /// <summary>Real inputs: batches of <see cref="SynthesisOptions.BatchSize"/> rows, cycled through.</summary>
    public DataSet? Data { get; init; }
    /// <summary>At most this many different input batches are prepared from <see cref="Data"/> and cycled through.</summary>
    public int MaxDataBatches { get; init; } = 16;
    public double ConfidenceLevel { get; init; } = 0.95;
    public int BootstrapResamples { get; init; } = 10000;
    public ulong Seed { get; init; } = 1234;
    /// <summary>How often the process's working set is sampled while measuring.</summary>
    public TimeSpan MemorySampleInterval { get; init; } = TimeSpan.FromMilliseconds(20);
}

/// <summary>Where a measurement stands: phase ("Creating sessions", "Warming up", "Measuring") and the fraction of that phase done.</summary>
public sealed record LatencyProgress(string Phase, double Fraction, string? Model, int Round);

/// <summary>The latency of one model in one measurement run. Times in milliseconds.</summary>
public sealed record LatencyResult
{
    public required string Model { get; init; }
    public string? Path { get; init; }
    public bool IsBaseline { get; init; }
    public required string Provider { get; init; }
    public int IntraOpThreads { get; init; }
    public int InterOpThreads { get; init; }
    public string? GraphOptimization { get; init; }
    /// <summary>Input shapes, e.g. "x[1,3,48,320]"; with several inputs separated by "; ".</summary>
    public required string Inputs { get; init; }
    public required string InputSource { get; init; }
    public long BatchSize { get; init; }
    public int Warmup { get; init; }
    public int Iterations { get; init; }
    /// <summary>Serializing the model and opening its ONNX Runtime session (what a user pays to load it).</summary>
    public double SessionCreationMs { get; init; }
    /// <summary>The first run after the session opened (lazy allocations, kernel choice), not part of the statistics.</summary>
    public double FirstRunMs { get; init; }
    public double MeanMs { get; init; }
    public double StdDevMs { get; init; }
    public double MinMs { get; init; }
    public double P50Ms { get; init; }
    public double P90Ms { get; init; }
    public double P95Ms { get; init; }
    public double P99Ms { get; init; }
    public double MaxMs { get; init; }
    /// <summary>Inferences per second, from the mean latency of the timed runs.</summary>
    public double InferencesPerSecond { get; init; }
    /// <summary>Items (batch rows) per second.</summary>
    public double ItemsPerSecond { get; init; }
    /// <summary>Peak working set of the whole process while this run (all its models) was measured.</summary>
    public long PeakWorkingSetBytes { get; init; }
    public string? Baseline { get; init; }
    /// <summary>Median latency over the baseline's median latency (below 1: faster than the baseline).</summary>
    public double? RatioToBaseline { get; init; }
    public double? RatioLower { get; init; }
    public double? RatioUpper { get; init; }
    public double? ConfidenceLevel { get; init; }
    /// <summary>The confidence interval of the ratio excludes 1.</summary>
    public bool? Significant { get; init; }
    /// <summary>Every timed run, in the order measured.</summary>
    public required IReadOnlyList<double> SamplesMs { get; init; }
}

/// <summary>
/// Measures inference latency of several models (and optionally a baseline) in one run: sessions are created,
/// each model runs once (the first-run time), then warm-up rounds, then timed rounds. Every round runs every model
/// once, the starting model rotating from round to round (A B, B A, A B, ...) so that drift of a shared machine and
/// cache effects of the model run before hit all alike. Inputs are built once, as ONNX Runtime values, before
/// anything is timed; the timed region is the ONNX Runtime call alone.
/// </summary>
public static class LatencyMeter
{
    public static IReadOnlyList<LatencyResult> Measure(IReadOnlyList<OnnxModel> models, OnnxModel? baseline, LatencyOptions options,
        IProgress<LatencyProgress>? progress = null, CancellationToken cancel = default)
    {
        Validate(models, options);
        var all = new List<(OnnxModel Model, bool IsBaseline)>();
        if (baseline is not null) all.Add((baseline, true));
        all.AddRange(models.Select(m => (m, false)));

        var members = new List<Member>();
        using var memory = new MemoryWatch(options.MemorySampleInterval);
        try
        {
            // Inputs first: a model whose inputs cannot be built fails before any session is opened.
            foreach (var (model, isBaseline) in all) members.Add(new Member(model, isBaseline, PrepareInputs(model, options)));
            OpenSessions(members, options, memory, progress, cancel);
            using var runOptions = OrtObjects.RunOptions();
            using var terminate = cancel.Register(() => runOptions.Terminate = true);
            try
            {
                foreach (var m in members)
                {
                    cancel.ThrowIfCancellationRequested();
                    progress?.Report(new LatencyProgress("First run", 0, m.Model.Name, 0));
                    m.FirstRunMs = Time(m, 0, runOptions);
                }
                memory.Sample();
                Rounds(members, options, runOptions, record: false, progress, cancel);
                memory.Start();
                Rounds(members, options, runOptions, record: true, progress, cancel);
                memory.Stop();
            }
            catch (OnnxRuntimeException) when (cancel.IsCancellationRequested)
            {
                throw new OperationCanceledException(cancel);
            }
            catch (OnnxRuntimeException e)
            {
                var failing = members.FirstOrDefault(m => m.Running) ?? members[0];
                throw new EngineException("ModelRunFailed", EngineErrorKind.InvalidOperation,
                    $"ONNX Runtime failed to run '{failing.Model.Name}': {e.Message}", e) { Target = failing.Model.SourcePath };
            }
            progress?.Report(new LatencyProgress("Done", 1, null, 0));
            return Results(members, options, memory.Peak);
        }
        finally
        {
            foreach (var m in members) m.Dispose();
        }
    }

    static void OpenSessions(List<Member> members, LatencyOptions options, MemoryWatch memory, IProgress<LatencyProgress>? progress, CancellationToken cancel)
    {
        foreach (var m in members)
        {
            cancel.ThrowIfCancellationRequested();
            progress?.Report(new LatencyProgress("Creating sessions", 0, m.Model.Name, 0));
            var sw = Stopwatch.StartNew();
            m.Session = new ModelSession(m.Model, SessionSettingsFor(options.Session, members.Count), cancel);
            m.SessionCreationMs = sw.Elapsed.TotalMilliseconds;
            memory.Sample();
        }
    }

    /// <summary>
    /// The warm-up rounds (untimed, <paramref name="record"/> false) or the timed ones: -Warmup of them, or -Iterations
    /// or as many as fit in -Duration; progress at most every 100 ms.
    /// </summary>
    static void Rounds(List<Member> members, LatencyOptions options, RunOptions runOptions, bool record, IProgress<LatencyProgress>? progress, CancellationToken cancel)
    {
        string phase = record ? "Measuring" : "Warming up";
        if (!record && options.Warmup == 0) return;
        progress?.Report(new LatencyProgress(phase, 0, null, 0));
        var clock = Stopwatch.StartNew();
        var lastReport = TimeSpan.Zero;
        for (int r = 0; ; r++)
        {
            if (!record ? r >= options.Warmup : options.Duration is { } d ? clock.Elapsed >= d && r > 0 : r >= options.Iterations) break;
            cancel.ThrowIfCancellationRequested();
            Round(members, r, runOptions, record);
            if (clock.Elapsed - lastReport > TimeSpan.FromMilliseconds(100))
            {
                lastReport = clock.Elapsed;
                double fraction = !record ? (r + 1.0) / options.Warmup : options.Duration is { } total ? clock.Elapsed / total : (r + 1.0) / options.Iterations;
                progress?.Report(new LatencyProgress(phase, Math.Min(1, fraction), null, r + 1));
            }
        }
    }

    static void Validate(IReadOnlyList<OnnxModel> models, LatencyOptions o)
    {
        if (models.Count == 0)
            throw new EngineException("LatencyNoModel", EngineErrorKind.InvalidArgument, "There is no model to measure.");
        if (o.Warmup < 0)
            throw new EngineException("LatencyWarmupOutOfRange", EngineErrorKind.InvalidArgument, $"Warm-up runs must be 0 or more, not {o.Warmup}.");
        if (o.Duration is null && o.Iterations < 1)
            throw new EngineException("LatencyIterationsOutOfRange", EngineErrorKind.InvalidArgument, $"Iterations must be 1 or more, not {o.Iterations}.");
        if (o.Duration is { } d && d <= TimeSpan.Zero)
            throw new EngineException("LatencyDurationOutOfRange", EngineErrorKind.InvalidArgument, $"Duration must be positive, not {d}.");
        if (o.Synthesis.BatchSize < 1)
            throw new EngineException("BatchSizeOutOfRange", EngineErrorKind.InvalidArgument, $"Batch size must be 1 or more, not {o.Synthesis.BatchSize}.");
        if (o.MaxDataBatches < 1)
            throw new EngineException("LatencyDataBatchesOutOfRange", EngineErrorKind.InvalidArgument, $"At least one data batch is needed, not {o.MaxDataBatches}.");
        if (o.ConfidenceLevel is <= 0 or >= 1 || double.IsNaN(o.ConfidenceLevel))
            throw new EngineException("ConfidenceLevelOutOfRange", EngineErrorKind.InvalidArgument, $"Confidence level {o.ConfidenceLevel} is not between 0 and 1 (exclusive).");
        if (o.Synthesis.IntegerRange is { } range && range.Max <= range.Min)
            throw new EngineException("IntegerRangeInvalid", EngineErrorKind.InvalidArgument, $"Integer range [{range.Min}, {range.Max}) is empty.");
    }

    static void Round(List<Member> members, int round, RunOptions runOptions, bool record)
    {
        int k = members.Count;
        for (int j = 0; j < k; j++)
        {
            var m = members[(j + round) % k];
            double ms = Time(m, round, runOptions);
            if (record) m.Samples.Add(ms);
        }
    }

    /// <summary>
    /// Interleaved sessions do not spin: two sessions' spinning pools would fight over the cores, a condition no
    /// deployment of one model has (measured: 13.3 ms alone, 27.9 ms each interleaved, 14.7 ms interleaved without spinning).
    /// </summary>
    internal static SessionSettings SessionSettingsFor(SessionSettings settings, int sessions) =>
        sessions > 1 ? settings with { AllowSpinning = false } : settings;

    static double Time(Member m, int round, RunOptions runOptions)
    {
        var batch = m.Inputs.Batches[round % m.Inputs.Batches.Count];
        m.Running = true;
        long start = Stopwatch.GetTimestamp();
        m.Session!.RunDiscard(m.Inputs.Names, batch, runOptions);
        long end = Stopwatch.GetTimestamp();
        m.Running = false;
        return (end - start) * 1000.0 / Stopwatch.Frequency;
    }

    static List<LatencyResult> Results(List<Member> members, LatencyOptions o, long peak)
    {
        var baseline = members.FirstOrDefault(m => m.IsBaseline);
        var results = new List<LatencyResult>();
        for (int i = 0; i < members.Count; i++)
        {
            var m = members[i];
            var s = Statistics.Summarize(m.Samples);
            RatioEstimate? ratio = baseline is null || m.IsBaseline ? null
                : Statistics.MedianRatio(m.Samples, baseline.Samples, o.ConfidenceLevel, o.BootstrapResamples, o.Seed + (ulong)i);
            double perSecond = s.Mean > 0 ? 1000.0 / s.Mean : double.PositiveInfinity;
            results.Add(new LatencyResult
            {
                Model = m.Model.Name,
                Path = m.Model.SourcePath,
                IsBaseline = m.IsBaseline,
                Provider = o.Session.Provider,
                IntraOpThreads = o.Session.IntraOpThreads,
                InterOpThreads = o.Session.InterOpThreads,
                GraphOptimization = o.Session.GraphOptimization,
                Inputs = m.Inputs.Description,
                InputSource = m.Inputs.Source,
                BatchSize = m.Inputs.Items,
                Warmup = o.Warmup,
                Iterations = s.Count,
                SessionCreationMs = m.SessionCreationMs,
                FirstRunMs = m.FirstRunMs,
                MeanMs = s.Mean, StdDevMs = s.StdDev, MinMs = s.Min, P50Ms = s.P50, P90Ms = s.P90, P95Ms = s.P95, P99Ms = s.P99, MaxMs = s.Max,
                InferencesPerSecond = perSecond,
                ItemsPerSecond = perSecond * m.Inputs.Items,
                PeakWorkingSetBytes = peak,
                Baseline = baseline is null || m.IsBaseline ? null : baseline.Model.Name,
                RatioToBaseline = ratio?.Ratio,
                RatioLower = ratio?.Lower,
                RatioUpper = ratio?.Upper,
                ConfidenceLevel = ratio?.ConfidenceLevel,
                Significant = ratio?.Significant,
                SamplesMs = m.Samples.ToArray(),
            });
        }
        return results;
    }

    /// <summary>The input batches a model is timed on, as ONNX Runtime values built once.</summary>
    internal sealed class PreparedInputs(IReadOnlyList<string> names, List<OrtValue[]> batches, long items, string description, string source) : IDisposable
    {
        public IReadOnlyList<string> Names { get; } = names;
        public List<OrtValue[]> Batches { get; } = batches;
        public long Items { get; } = items;
        public string Description { get; } = description;
        public string Source { get; } = source;
        public void Dispose() { foreach (var b in Batches) foreach (var v in b) v.Dispose(); }
    }

    internal static PreparedInputs PrepareInputs(OnnxModel model, LatencyOptions options)
    {
        var signatures = InputSynthesizer.Inputs(model);
        var names = signatures.Select(s => s.Name).ToList();
        var arrays = new List<IReadOnlyDictionary<string, NamedArray>>();
        string source;
        if (options.Data is { } data)
        {
            var map = ModelInputs.Bind(model, data);
            long batch = options.Synthesis.BatchSize, rows = data.Rows;
            if (rows <= batch) arrays.Add(map);
            else
                for (long start = 0; start + batch <= rows && arrays.Count < options.MaxDataBatches; start += batch)
                    arrays.Add(map.ToDictionary(kv => kv.Key, kv => kv.Value.Slice(start, batch)));
            source = $"{System.IO.Path.GetFileName(data.Source)} ({arrays.Count} batch{(arrays.Count == 1 ? "" : "es")})";
        }
        else
        {
            arrays.Add(InputSynthesizer.Synthesize(model, options.Synthesis));
            source = "Synthesized";
        }
        var batches = new List<OrtValue[]>();
        try
        {
            foreach (var a in arrays)
                batches.Add(signatures.Select(s => ModelSession.ToOrtValue(a[s.Name])).ToArray());
        }
        catch
        {
            foreach (var b in batches) foreach (var v in b) v.Dispose();
            throw;
        }
        var first = arrays[0];
        string description = string.Join("; ", signatures.Select(s => $"{s.Name}[{string.Join(",", first[s.Name].Shape)}]"));
        long items = signatures.Count == 0 || first[signatures[0].Name].Shape.Length == 0 ? 1 : first[signatures[0].Name].Shape[0];
        return new PreparedInputs(names, batches, items, description, source);
    }

    sealed class Member(OnnxModel model, bool isBaseline, PreparedInputs inputs) : IDisposable
    {
        public OnnxModel Model { get; } = model;
        public bool IsBaseline { get; } = isBaseline;
        public PreparedInputs Inputs { get; } = inputs;
        public ModelSession? Session { get; set; }
        public double SessionCreationMs { get; set; }
        public double FirstRunMs { get; set; }
        public bool Running { get; set; }
        public List<double> Samples { get; } = [];
        public void Dispose() { Session?.Dispose(); Inputs.Dispose(); }
    }
}
