using System.Collections;
using System.Management.Automation;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Runtime.Generation;

namespace ModelCompression;

/// <summary>
/// Measures inference latency of models in ONNX Runtime, interleaved round-robin with an optional baseline,
/// with percentiles, throughput, peak memory and, against the baseline, a ratio of medians with a confidence interval.
/// </summary>
[Cmdlet(VerbsDiagnostic.Measure, "ModelLatency", DefaultParameterSetName = IterationsSet)]
[OutputType(typeof(LatencyReport), typeof(GenerationReport))]
public sealed class MeasureModelLatencyCommand : ModelCmdletBase
{
    const string IterationsSet = "Iterations";
    const string DurationSet = "Duration";
    const string GenerateSet = "Generate";
    const string Activity = "Measuring model latency";

    readonly List<Model> models = [];

    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    [ValidateNotNull]
    [ModelArgument]
    public Model? InputObject { get; set; }

    [Parameter]
    [ValidateNotNull]
    [ModelArgument]
    public Model? Baseline { get; set; }

    [Parameter(ParameterSetName = IterationsSet)]
    [Parameter(ParameterSetName = DurationSet)]
    public Hashtable? InputShape { get; set; }

    [Parameter(ParameterSetName = IterationsSet)]
    [Parameter(ParameterSetName = DurationSet)]
    [ValidateRange(1, int.MaxValue)]
    public int BatchSize { get; set; } = 1;

    [Parameter(ParameterSetName = IterationsSet)]
    [Parameter(ParameterSetName = DurationSet)]
    [ValidateCount(2, 2)]
    public long[]? IntegerRange { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? InputData { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(ExecutionProviderCompleter))]
    public string Provider { get; set; } = "CPU";

    [Parameter]
    [ValidateRange(0, 1024)]
    public int IntraOpThreads { get; set; }

    [Parameter(ParameterSetName = IterationsSet)]
    [Parameter(ParameterSetName = DurationSet)]
    [ValidateRange(0, 1024)]
    public int InterOpThreads { get; set; }

    [Parameter]
    [ValidateSet("None", "Basic", "Extended", "All")]
    public string? GraphOptimization { get; set; }

    [Parameter]
    [ValidateRange(0, int.MaxValue)]
    public int Warmup { get; set; } = 10;

    [Parameter(ParameterSetName = IterationsSet)]
    [Parameter(ParameterSetName = GenerateSet)]
    [ValidateRange(1, int.MaxValue)]
    public int Iterations { get; set; } = 100;

    [Parameter(Mandatory = true, ParameterSetName = DurationSet)]
    [SecondsToTimeSpan]
    public TimeSpan Duration { get; set; }

    [Parameter]
    [ValidateRange(0.5, 0.9999)]
    public double ConfidenceLevel { get; set; } = 0.95;

    [Parameter(Mandatory = true, ParameterSetName = GenerateSet)]
    public SwitchParameter Generate { get; set; }

    [Parameter(ParameterSetName = GenerateSet)]
    [ValidateRange(1, int.MaxValue)]
    public int PromptLength { get; set; } = 128;

    [Parameter(ParameterSetName = GenerateSet)]
    [ValidateRange(1, int.MaxValue)]
    public int NewTokens { get; set; } = 128;

    [Parameter(ParameterSetName = GenerateSet)]
    [ValidateSet("Auto", "OnnxRuntime", "GenAI")]
    public string GenerationEngine { get; set; } = "Auto";

    protected override void ProcessRecord() => models.Add(InputObject!);

    protected override void EndProcessing()
    {
        if (models.Count == 0) return;
        if (ParameterSetName == DurationSet && Duration <= TimeSpan.Zero)
            ThrowArgumentError("LatencyDurationOutOfRange", $"-Duration must be positive, not {Duration}.", Duration);
        if (Baseline is null && MyInvocation.BoundParameters.ContainsKey(nameof(ConfidenceLevel)))
            ThrowArgumentError("LatencyParameterNotApplicable", "-ConfidenceLevel is the level of the interval on the ratio to -Baseline; without -Baseline there is no ratio.", ConfidenceLevel);
        if (Generate) { MeasureGeneration(); return; }
        var results = InvokeOrTerminate(() =>
        {
            var engineModels = models.Select(m => m.Engine).ToList();
            var all = Baseline is null ? engineModels : [.. engineModels, Baseline.Engine];
            var synthesis = InputShapeSpec.Apply(
                new SynthesisOptions { BatchSize = BatchSize, IntegerRange = InputArguments.Range(IntegerRange) },
                all, InputArguments.Shapes(InputShape));
            var options = new LatencyOptions
            {
                Warmup = Warmup,
                Iterations = Iterations,
                Duration = ParameterSetName == DurationSet ? Duration : null,
                Session = new SessionSettings { Provider = Provider, IntraOpThreads = IntraOpThreads, InterOpThreads = InterOpThreads, GraphOptimization = GraphOptimization },
                Synthesis = synthesis,
                Data = InputArguments.Data(this, InputData, InputShape, IntegerRange),
                ConfidenceLevel = ConfidenceLevel,
            };
            WriteVerbose($"Measuring {models.Count} model(s){(Baseline is null ? "" : $" against baseline '{Baseline.Name}'")}: " +
                (options.Duration is { } d ? $"{d.TotalSeconds:G4} s" : $"{Iterations} iterations") + $" after {Warmup} warm-up runs, provider {Provider}.");
            return LatencyMeter.Measure(engineModels, Baseline?.Engine, options, new PhaseProgress(this), CancellationToken);
        }, models[0]);
        CompleteProgress(Activity);
        // The engine reports the baseline first, then the models in order.
        var measured = Baseline is null ? models : [Baseline, .. models];
        for (int i = 0; i < results.Count; i++) WriteObject(LatencyReport.From(results[i], measured[i], Baseline));
        base.EndProcessing();
    }

    /// <summary>
    /// -Generate: greedy generation with the cache, timed per token. Defaults fit generation: 3 timed generations after
    /// 1 warm-up (a generation is many runs); input shapes and batch sizes are not in its parameter set.
    /// </summary>
    void MeasureGeneration()
    {
        var results = InvokeOrTerminate(() =>
        {
            var options = new GenerationMeasureOptions
            {
                Generation = new GenerationSettings
                {
                    PromptLength = PromptLength, NewTokens = NewTokens, Engine = Enum.Parse<GenerationEngine>(GenerationEngine),
                    Data = InputArguments.Data(this, InputData, null, null),
                    Session = new SessionSettings { Provider = Provider, IntraOpThreads = IntraOpThreads, GraphOptimization = GraphOptimization },
                },
                Warmup = MyInvocation.BoundParameters.ContainsKey(nameof(Warmup)) ? Warmup : 1,
                Runs = MyInvocation.BoundParameters.ContainsKey(nameof(Iterations)) ? Iterations : 3,
                ConfidenceLevel = ConfidenceLevel,
            };
            WriteVerbose($"Generating {NewTokens} tokens after prompts of {PromptLength}, {options.Runs} timed generation(s) per model after {options.Warmup} warm-up.");
            return GenerationMeter.Measure(models.Select(m => m.Engine).ToList(), Baseline?.Engine, options, Progress(Activity, "Generating"), CancellationToken);
        }, models[0]);
        CompleteProgress(Activity);
        var measured = Baseline is null ? models : [Baseline, .. models];
        for (int i = 0; i < results.Count; i++) WriteObject(GenerationReport.From(results[i], measured[i], Baseline));
    }

    /// <summary>Writes the engine's phases as progress records, on the pipeline thread only, at most every 100 ms (the engine throttles).</summary>
    sealed class PhaseProgress(MeasureModelLatencyCommand cmdlet) : IProgress<LatencyProgress>
    {
        readonly int thread = Environment.CurrentManagedThreadId;

        public void Report(LatencyProgress p)
        {
            if (Environment.CurrentManagedThreadId != thread) return;
            string status = p.Model is null ? p.Phase : $"{p.Phase}: {p.Model}";
            if (p.Round > 0) status += $" (round {p.Round})";
            cmdlet.WriteProgress(new ProgressRecord(1, Activity, status) { PercentComplete = (int)Math.Clamp(p.Fraction * 100, 0, 100) });
        }
    }
}
