using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Quantization;

namespace ModelCompression;

/// <summary>Quantizes a model: dynamic int8, static QDQ with calibration, 4/8-bit weight-only, or float16.</summary>
[Cmdlet(VerbsLifecycle.Invoke, "ModelQuantization")]
[OutputType(typeof(Model))]
public sealed class InvokeModelQuantizationCommand : ModelCmdletBase
{
    const string Activity = "Quantizing";

    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    [ValidateNotNull]
    [ModelArgument]
    public Model? InputObject { get; set; }

    [Parameter]
    [ValidateSet("Dynamic", "Static", "WeightOnly", "Float16")]
    public string Mode { get; set; } = "Dynamic";

    [Parameter]
    [ValidateSet("Int8", "UInt8")]
    public string? WeightType { get; set; }

    [Parameter]
    [ValidateSet("Int8", "UInt8")]
    public string? ActivationType { get; set; }

    [Parameter]
    public SwitchParameter Symmetric { get; set; }

    [Parameter]
    public SwitchParameter ReduceRange { get; set; }

    [Parameter]
    public SwitchParameter PerChannel { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(QuantizationOpTypeCompleter))]
    public string[]? OpType { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[]? ExcludeNode { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    [ValidateSet("4", "8")]
    public int Bits { get; set; }

    [Parameter]
    [ValidateRange(16, 256)]
    public int BlockSize { get; set; }

    [Parameter]
    [ValidateSet("MatMulNBits", "Standard")]
    public string? Format { get; set; }

    [Parameter]
    [ValidateRange(0, 4)]
    public int AccuracyLevel { get; set; }

    [Parameter]
    [ValidateSet("RTN", "HQQ", "GPTQ")]
    public string? Algorithm { get; set; }

    [Parameter]
    [ValidateRange(0.0, 100.0)]
    public double Damping { get; set; }

    [Parameter]
    public SwitchParameter ActOrder { get; set; }

    [Parameter]
    [ValidateSet("4", "8")]
    public int HeadBits { get; set; }

    [Parameter]
    public SwitchParameter KeepIOTypes { get; set; }

    [Parameter]
    public SwitchParameter StorageOnly { get; set; }

    [Parameter]
    [ValidateNotNull]
    public string[]? Float16BlockList { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? CalibrationData { get; set; }

    [Parameter]
    [ValidateSet("MinMax", "Percentile", "Entropy")]
    public string? CalibrationMethod { get; set; }

    [Parameter]
    public double Percentile { get; set; }

    [Parameter]
    [ValidateRange(1, 65536)]
    public int CalibrationBatchSize { get; set; }

    [Parameter]
    public SwitchParameter SkipOptimization { get; set; }

    [Parameter]
    [ValidateRange(0.0, 1.0)]
    public double TargetCosine { get; set; }

    protected override void ProcessRecord()
    {
        var model = InputObject!;
        var bound = MyInvocation.BoundParameters;
        bool Has(string name) => bound.ContainsKey(name);
        TryInvoke(() =>
        {
            var options = new QuantizationOptions
            {
                Mode = Enum.Parse<QuantizationMode>(Mode, ignoreCase: true),
                WeightType = WeightType is null ? null : Enum.Parse<QuantType>(WeightType, ignoreCase: true),
                ActivationType = ActivationType is null ? null : Enum.Parse<QuantType>(ActivationType, ignoreCase: true),
                Symmetric = Has(nameof(Symmetric)) ? Symmetric.IsPresent : null,
                ReduceRange = ReduceRange.IsPresent,
                PerChannel = Has(nameof(PerChannel)) ? PerChannel.IsPresent : null,
                OpTypes = OpType,
                ExcludeNodes = ExcludeNode ?? [],
                Force = Force.IsPresent,
                Bits = Has(nameof(Bits)) ? Bits : null,
                BlockSize = Has(nameof(BlockSize)) ? BlockSize : null,
                Format = Format is null ? null : Enum.Parse<WeightOnlyFormat>(Format, ignoreCase: true),
                AccuracyLevel = Has(nameof(AccuracyLevel)) ? AccuracyLevel : null,
                Algorithm = WeightOnlyAlgorithm.Create(Algorithm, Has(nameof(Damping)) ? Damping : null, Has(nameof(ActOrder)) ? ActOrder.IsPresent : null),
                HeadBits = Has(nameof(HeadBits)) ? HeadBits : null,
                KeepIOTypes = Has(nameof(KeepIOTypes)) ? KeepIOTypes.IsPresent : null,
                StorageOnly = Has(nameof(StorageOnly)) ? StorageOnly.IsPresent : null,
                Float16BlockList = Float16BlockList,
                CalibrationData = CalibrationData is null ? null : CalibrationDataLoader.Load(ResolveOutputPath(CalibrationData)),
                CalibrationMethod = CalibrationMethod is null ? null : Enum.Parse<CalibrationMethod>(CalibrationMethod, ignoreCase: true),
                Percentile = Has(nameof(Percentile)) ? Percentile : null,
                CalibrationBatchSize = Has(nameof(CalibrationBatchSize)) ? CalibrationBatchSize : null,
                SkipOptimization = Has(nameof(SkipOptimization)) ? SkipOptimization.IsPresent : null,
                TargetCosine = Has(nameof(TargetCosine)) ? TargetCosine : null,
            };
            var progress = new PhaseProgress(this);
            var result = ModelQuantizer.Quantize(model.Engine, options, progress, CancellationToken);
            CompleteProgress(Activity);
            var report = result.Report!;
            foreach (var note in report.Notes) WriteWarning(note);
            var skipped = report.Entries.Where(e => e.Action == "Skipped").GroupBy(e => (e.OpType, e.Detail)).ToList();
            foreach (var g in skipped)
                WriteVerbose($"Skipped {g.Count()} {g.Key.OpType} node(s): {g.Key.Detail} (e.g. '{g.First().Target}').");
            foreach (var (key, value) in report.Metrics.Where(kv => kv.Key.StartsWith("Quantized.", StringComparison.Ordinal)))
                WriteVerbose($"{key["Quantized.".Length..]}: {value} quantized.");
            var keptFloat = report.Entries.Where(e => e.Action == "Kept" && e.Detail.Contains("-TargetCosine", StringComparison.Ordinal)).ToList();
            if (keptFloat.Count > 0)
                WriteVerbose($"-TargetCosine kept {keptFloat.Count} node(s) in float32: {string.Join(", ", keptFloat.Take(10).Select(e => e.Target))}{(keptFloat.Count > 10 ? ", ..." : "")}.");
            if (report.Metrics.TryGetValue("ReconstructionErrorMean", out double meanError))
                WriteVerbose($"Output error of the quantized layers on the calibration activations: mean {meanError:P2}, largest {report.Metrics["ReconstructionErrorMax"]:P2} (per layer in Report.Entries' Error).");
            WriteVerbose($"'{model.Name}': {report.Metrics["SizeBefore"]:N0} → {report.Metrics["SizeAfter"]:N0} bytes.");
            WriteObject(new Model(result, model));
        }, model);
    }

    /// <summary>Engine progress (phase and fraction) as a progress record on the pipeline thread.</summary>
    sealed class PhaseProgress(InvokeModelQuantizationCommand cmdlet) : IProgress<QuantizationProgress>
    {
        readonly int thread = Environment.CurrentManagedThreadId;
        (string, int) last = ("", -1);

        public void Report(QuantizationProgress value)
        {
            if (Environment.CurrentManagedThreadId != thread) return;
            int percent = (int)Math.Clamp(value.Fraction * 100, 0, 100);
            if (last == (value.Phase, percent)) return;
            last = (value.Phase, percent);
            cmdlet.WriteProgress(new ProgressRecord(1, Activity, value.Phase) { PercentComplete = percent });
        }
    }
}

/// <summary>Completes -OpType with the operator types quantization knows.</summary>
public sealed class QuantizationOpTypeCompleter : IArgumentCompleter
{
    static readonly string[] OpTypes = ["Conv", "MatMul", "Gemm", "Gather", "Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool", "MaxPool", "Sigmoid", "LeakyRelu", "Softmax", "Resize", "Transpose", "Reshape", "Flatten"];

    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters) =>
        OpTypes.Where(o => o.StartsWith(wordToComplete, StringComparison.OrdinalIgnoreCase)).Select(o => new CompletionResult(o));
}
