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
    public int? BatchSize { get; set; }

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
    public int? Warmup { get; set; }

    [Parameter(ParameterSetName = IterationsSet)]
    [Parameter(ParameterSetName = GenerateSet)]
    [ValidateRange(1, int.MaxValue)]
    public int? Iterations { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = DurationSet)]
    [SecondsToTimeSpan]
    public TimeSpan Duration { get; set; }

    [Parameter]
    [ValidateRange(0.5, 0.9999)]
    public double? ConfidenceLevel { get; set; }

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
        if (Baseline is null && ConfidenceLevel is not null)
            ThrowArgumentError("LatencyParameterNotApplicable", "-ConfidenceLevel is the level of the interval on the ratio to -Baseline; without -Baseline there is no ratio.", ConfidenceLevel);
        if (Generate) { MeasureGeneration(); return; }
        var progress = NewProgress(Activity);
        var results = InvokeOrTerminate(() =>
        {
            var engineModels = models.Select(m => m.Engine).ToList();
            var all = Baseline is null ? engineModels : [.. engineModels, Baseline.Engine];
            var (data, synthesis) = InputArguments.Inputs(this, all, InputData, BatchSize ?? 1, BatchSize is not null, InputShape, IntegerRange);
            var options = new LatencyOptions
            {
                Warmup = Warmup ?? 10,
                Iterations = Iterations ?? 100,
                Duration = ParameterSetName == DurationSet ? Duration : null,
                Session = new SessionSettings { Provider = Provider, IntraOpThreads = IntraOpThreads, InterOpThreads = InterOpThreads, GraphOptimization = GraphOptimization },
                Synthesis = synthesis,
                Data = data,
                ConfidenceLevel = ConfidenceLevel ?? new LatencyOptions().ConfidenceLevel,
            };
            WriteVerbose($"Measuring {models.Count} model(s){(Baseline is null ? "" : $" against baseline '{Baseline.Name}'")}: " +
                (options.Duration is { } d ? $"{d.TotalSeconds:G4} s" : $"{options.Iterations} iterations") + $" after {options.Warmup} warm-up runs, provider {Provider}.");
            return LatencyMeter.Measure(engineModels, Baseline?.Engine, options,
                new Reporter<LatencyProgress>(p => progress.Report(p.Phase, p.Fraction,
                    (p.Model is null ? p.Phase : $"{p.Phase}: {p.Model}") + (p.Round > 0 ? $" (round {p.Round})" : ""))), CancellationToken);
        }, models[0]);
        progress.Complete();
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
        var progress = NewProgress(Activity);
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
                Warmup = Warmup ?? 1,
                Runs = Iterations ?? 3,
                ConfidenceLevel = ConfidenceLevel ?? new GenerationMeasureOptions().ConfidenceLevel,
            };
            WriteVerbose($"Generating {NewTokens} tokens after prompts of {PromptLength}, {options.Runs} timed generation(s) per model after {options.Warmup} warm-up.");
            return GenerationMeter.Measure(models.Select(m => m.Engine).ToList(), Baseline?.Engine, options, progress.Phase("Generating"), CancellationToken);
        }, models[0]);
        progress.Complete();
        var measured = Baseline is null ? models : [Baseline, .. models];
        for (int i = 0; i < results.Count; i++) WriteObject(GenerationReport.From(results[i], measured[i], Baseline));
    }
}
