using System.Diagnostics;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Engine.Tests.Runtime;

public class LatencyMeterTests
{
    static readonly SessionSettings OneThread = new() { IntraOpThreads = 1, InterOpThreads = 1 };

    /// <summary>
    /// Two sessions of one model, measured interleaved, at 99% confidence. The model is heavy enough (a few tenths of a
    /// millisecond) that the small, real differences between two sessions of one model (memory placement; about 1% for
    /// a 20-80 µs model on this machine, enough to flag a 95% interval now and then) stay inside the interval.
    /// </summary>
    [Fact]
    public void ModelAgainstItselfGivesARatioNearOneWithAnIntervalContainingOne()
    {
        var model = TestModels.Mlp(inputs: 512, hidden: 1024, classes: 10, layers: 2);
        var results = LatencyMeter.Measure([model], model, new LatencyOptions
        {
            Warmup = 10, Iterations = 100, Session = OneThread, Synthesis = new SynthesisOptions { BatchSize = 16 }, ConfidenceLevel = 0.99,
        });
        Assert.Equal(2, results.Count);
        Assert.True(results[0].IsBaseline);
        var r = results[1];
        Assert.Equal("mlp", r.Baseline);
        Assert.InRange(r.RatioToBaseline!.Value, 0.85, 1.15);
        Assert.True(r.RatioLower <= 1 && r.RatioUpper >= 1, $"ratio {r.RatioToBaseline} [{r.RatioLower}, {r.RatioUpper}]");
        Assert.False(r.Significant);
        Assert.Equal(0.99, r.ConfidenceLevel);
        Assert.Null(results[0].RatioToBaseline);
    }

    [Fact]
    public void MuchHeavierModelIsSignificantlySlower()
    {
        var light = TestModels.Mlp(inputs: 16, hidden: 16, classes: 4, layers: 1);
        var heavy = TestModels.Mlp(inputs: 16, hidden: 512, classes: 4, layers: 4);
        var results = LatencyMeter.Measure([heavy], light, new LatencyOptions
        {
            Warmup = 5, Iterations = 100, Session = OneThread, Synthesis = new SynthesisOptions { BatchSize = 16 },
        });
        var r = results.Single(x => !x.IsBaseline);
        Assert.True(r.RatioToBaseline > 2, $"ratio {r.RatioToBaseline}");
        Assert.True(r.RatioLower > 1, $"[{r.RatioLower}, {r.RatioUpper}]");
        Assert.True(r.Significant);
    }

    [Fact]
    public void ReportHoldsConsistentStatistics()
    {
        var model = TestModels.ConvNet();
        var r = LatencyMeter.Measure([model], null, new LatencyOptions
        {
            Warmup = 3, Iterations = 50, Session = OneThread, Synthesis = new SynthesisOptions { BatchSize = 4 },
        }).Single();
        Assert.False(r.IsBaseline);
        Assert.Null(r.Significant);
        Assert.Equal(50, r.Iterations);
        Assert.Equal(50, r.SamplesMs.Count);
        Assert.Equal("x[4,3,16,16]", r.Inputs);
        Assert.Equal("Synthesized", r.InputSource);
        Assert.Equal(4, r.BatchSize);
        Assert.Equal("CPU", r.Provider);
        Assert.True(r.SessionCreationMs > 0 && r.FirstRunMs > 0);
        Assert.True(r.MinMs > 0);
        Assert.True(r.MinMs <= r.P50Ms && r.P50Ms <= r.P90Ms && r.P90Ms <= r.P95Ms && r.P95Ms <= r.P99Ms && r.P99Ms <= r.MaxMs);
        Assert.Equal(r.SamplesMs.Min(), r.MinMs);
        Assert.Equal(r.SamplesMs.Average(), r.MeanMs, 9);
        Assert.Equal(Statistics.Median(r.SamplesMs), r.P50Ms, 12);
        Assert.Equal(1000 / r.MeanMs, r.InferencesPerSecond, 6);
        Assert.Equal(4 * r.InferencesPerSecond, r.ItemsPerSecond, 6);
        Assert.True(r.PeakWorkingSetBytes > 10_000_000, $"peak working set {r.PeakWorkingSetBytes}");
    }

    [Fact]
    public void DurationBoundsTheMeasurement()
    {
        var model = TestModels.Mlp();
        var sw = Stopwatch.StartNew();
        var results = LatencyMeter.Measure([model, TestModels.Mlp(seed: 2)], null, new LatencyOptions
        {
            Warmup = 0, Iterations = 1, Duration = TimeSpan.FromMilliseconds(300), Session = OneThread,
        });
        Assert.True(sw.Elapsed.TotalSeconds >= 0.3, $"{sw.Elapsed.TotalSeconds} s"); // a lower bound only: a busy machine is slower, never faster
        Assert.All(results, r => Assert.True(r.Iterations > 10, $"{r.Iterations} iterations"));
        Assert.Equal(results[0].Iterations, results[1].Iterations); // round-robin: every round runs every model
    }

    [Fact]
    public void CancellationStopsPromptly()
    {
        using var cts = new CancellationTokenSource();
        var progress = new SyncProgress(p => { if (p.Phase == "Measuring") cts.Cancel(); });
        // No time limit (a busy machine is slow): a meter that ignored the token would run its 120 s and return normally.
        Assert.ThrowsAny<OperationCanceledException>(() => LatencyMeter.Measure([TestModels.Mlp()], null,
            new LatencyOptions { Warmup = 1, Duration = TimeSpan.FromSeconds(120), Session = OneThread }, progress, cts.Token));
    }

    [Fact]
    public void InterleavedSessionsDoNotSpinAndASingleSessionKeepsTheDefault()
    {
        var settings = new SessionSettings { IntraOpThreads = 2, GraphOptimization = "Basic" };
        Assert.True(LatencyMeter.SessionSettingsFor(settings, 1).AllowSpinning);
        var interleaved = LatencyMeter.SessionSettingsFor(settings, 2);
        Assert.False(interleaved.AllowSpinning);
        Assert.Equal(settings with { AllowSpinning = false }, interleaved);
        // ONNX Runtime takes the setting: an A/B run with two threads per session works.
        var results = LatencyMeter.Measure([TestModels.Mlp()], TestModels.Mlp(seed: 2), new LatencyOptions { Warmup = 1, Iterations = 5, Session = settings });
        Assert.Equal(2, results.Count);
    }

    [Fact]
    public void ProgressGoesThroughThePhases()
    {
        var phases = new List<string>();
        var progress = new SyncProgress(p => { if (phases.Count == 0 || phases[^1] != p.Phase) phases.Add(p.Phase); });
        LatencyMeter.Measure([TestModels.Mlp()], null, new LatencyOptions { Warmup = 1, Iterations = 5 }, progress);
        Assert.Equal(["Creating sessions", "First run", "Done"], phases.Where(p => p != "Warming up" && p != "Measuring"));
    }

    [SharedFact]
    public void DataFileBatchesAreCycledThrough()
    {
        var model = ModelIO.Load(SharedFiles.Model("wine_mlp.onnx"));
        var data = DataSet.Load(SharedFiles.Data("wine_test.npz"));
        var r = LatencyMeter.Measure([model], null, new LatencyOptions
        {
            Warmup = 2, Iterations = 20, Data = data, Synthesis = new SynthesisOptions { BatchSize = 8 }, Session = OneThread,
        }).Single();
        Assert.Equal(8, r.BatchSize);
        Assert.Equal($"features[8,{data.Features[0].Shape[1]}]", r.Inputs);
        Assert.Equal($"wine_test.npz ({data.Rows / 8} batches)", r.InputSource);
    }

    [SharedFact]
    public void CsvDataIsConvertedToTheInputType()
    {
        var model = ModelIO.Load(SharedFiles.Model("breast_cancer_mlp.onnx"));
        var r = LatencyMeter.Measure([model], null, new LatencyOptions
        {
            Warmup = 0, Iterations = 5, Data = DataSet.Load(SharedFiles.Data("breast_cancer_test.csv")), Synthesis = new SynthesisOptions { BatchSize = 1000 },
        }).Single();
        Assert.Equal(DataSet.Load(SharedFiles.Data("breast_cancer_test.csv")).Rows, r.BatchSize); // fewer rows than a batch: all of them
    }

    public static IEnumerable<object[]> SharedModels() => SharedFiles.Models.Select(m => new object[] { Path.GetFileName(m) });

    /// <summary>
    /// Every shared model either measures with the defaults or is refused with an error naming each symbolic dimension
    /// nothing fixes; given those (64 each), it measures.
    /// </summary>
    [SharedTheory]
    [MemberData(nameof(SharedModels))]
    public void SharedModelMeasuresOrNamesItsMissingDimensions(string file)
    {
        var model = ModelIO.Load(SharedFiles.Model(file));
        var options = new LatencyOptions { Warmup = 1, Iterations = 3 };
        // A language model's mask, positions and cache follow from its token ids: only the tokens' dimensions can be missing.
        var derived = DecoderContract.Of(model)?.DerivedInputs.ToHashSet() ?? [];
        var unresolved = InputSynthesizer.Inputs(model).Where(i => !derived.Contains(i.Name))
            .SelectMany(i => i.Shape.Skip(1).Where(d => !long.TryParse(d, out long v) || v <= 0).Select(d => (i.Name, d))).ToList();
        if (unresolved.Count > 0)
        {
            var e = Assert.Throws<EngineException>(() => LatencyMeter.Measure([model], null, options));
            Assert.Equal("InputDimensionUnresolved", e.ErrorId);
            foreach (var (input, dim) in unresolved) Assert.Contains($"{input}[", e.Message);
            foreach (var (_, dim) in unresolved) Assert.Contains($"'{dim}'", e.Message);
            options = options with { Synthesis = new SynthesisOptions { DefaultDimension = 64 } };
        }
        var r = LatencyMeter.Measure([model], null, options).Single();
        Assert.Equal(3, r.Iterations);
        Assert.True(r.P50Ms > 0);
    }

    [SharedFact]
    public void TinyBertMeasuresWithAGivenSequenceLengthAndVocabularyIds()
    {
        var model = ModelIO.Load(SharedFiles.Model("tiny_bert.onnx"));
        var seq = InputSynthesizer.Inputs(model).Single().Shape[1];
        var r = LatencyMeter.Measure([model], null, new LatencyOptions
        {
            Warmup = 1, Iterations = 3, Synthesis = new SynthesisOptions { BatchSize = 2, Dimensions = new Dictionary<string, long> { [seq] = 32 } },
        }).Single();
        Assert.Equal("input_ids[2,32]", r.Inputs);
        Assert.Equal(2, r.BatchSize);
    }

    [Theory]
    [InlineData(-1, 10, "LatencyWarmupOutOfRange")]
    [InlineData(0, 0, "LatencyIterationsOutOfRange")]
    public void BadCountsAreRefused(int warmup, int iterations, string errorId)
    {
        var e = Assert.Throws<EngineException>(() => LatencyMeter.Measure([TestModels.Mlp()], null, new LatencyOptions { Warmup = warmup, Iterations = iterations }));
        Assert.Equal(errorId, e.ErrorId);
    }

    [Fact]
    public void MissingProviderIsRefusedWithTheAvailableOnes()
    {
        var e = Assert.Throws<EngineException>(() => LatencyMeter.Measure([TestModels.Mlp()], null,
            new LatencyOptions { Session = new SessionSettings { Provider = "NoSuchAccelerator" } }));
        Assert.Equal("ExecutionProviderUnavailable", e.ErrorId);
        Assert.Contains("CPU", e.Message);
    }

    [Fact]
    public void SessionSettingsReachTheReport()
    {
        var r = LatencyMeter.Measure([TestModels.Mlp()], null, new LatencyOptions
        {
            Warmup = 0, Iterations = 2, Session = new SessionSettings { IntraOpThreads = 1, InterOpThreads = 1, GraphOptimization = "Basic" },
        }).Single();
        Assert.Equal((1, 1, "Basic"), (r.IntraOpThreads, r.InterOpThreads, r.GraphOptimization));
        var e = Assert.Throws<EngineException>(() => LatencyMeter.Measure([TestModels.Mlp()], null,
            new LatencyOptions { Session = new SessionSettings { GraphOptimization = "Maximum" } }));
        Assert.Equal("GraphOptimizationLevelInvalid", e.ErrorId);
    }

    [Fact]
    public void IntegerRangeIsChecked()
    {
        var e = Assert.Throws<EngineException>(() => LatencyMeter.Measure([TestModels.Mlp()], null,
            new LatencyOptions { Synthesis = new SynthesisOptions { IntegerRange = (5, 5) } }));
        Assert.Equal("IntegerRangeInvalid", e.ErrorId);
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    sealed class SyncProgress(Action<LatencyProgress> report) : IProgress<LatencyProgress>
    {
        public void Report(LatencyProgress value) => report(value);
    }
}
