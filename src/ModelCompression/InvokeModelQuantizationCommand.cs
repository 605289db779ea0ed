using System.Collections;
using System.Management.Automation;
using System.Management.Automation.Language;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
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
    public SwitchParameter Symmetric { get => symmetric.GetValueOrDefault(); set => symmetric = value; }
    SwitchParameter? symmetric;

    [Parameter]
    public SwitchParameter ReduceRange { get; set; }

    [Parameter]
    public SwitchParameter PerChannel { get => perChannel.GetValueOrDefault(); set => perChannel = value; }
    SwitchParameter? perChannel;

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
    public int? Bits { get; set; }

    [Parameter]
    [ValidateRange(16, 256)]
    public int? BlockSize { get; set; }

    [Parameter]
    [ValidateSet("MatMulNBits", "Standard")]
    public string? Format { get; set; }

    [Parameter]
    [ValidateRange(0, 4)]
    public int? AccuracyLevel { get; set; }

    [Parameter]
    [ValidateSet("RTN", "HQQ", "GPTQ")]
    public string? Algorithm { get; set; }

    [Parameter]
    [ValidateRange(0.0, 100.0)]
    public double? Damping { get; set; }

    [Parameter]
    public SwitchParameter ActOrder { get => actOrder.GetValueOrDefault(); set => actOrder = value; }
    SwitchParameter? actOrder;

    [Parameter]
    [ValidateSet("4", "8")]
    public int? HeadBits { get; set; }

    [Parameter]
    public SwitchParameter KeepIOTypes { get => keepIOTypes.GetValueOrDefault(); set => keepIOTypes = value; }
    SwitchParameter? keepIOTypes;

    [Parameter]
    public SwitchParameter StorageOnly { get => storageOnly.GetValueOrDefault(); set => storageOnly = value; }
    SwitchParameter? storageOnly;

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
    public double? Percentile { get; set; }

    [Parameter]
    [ValidateRange(1, 65536)]
    public int? CalibrationBatchSize { get; set; }

    [Parameter]
    public SwitchParameter SkipOptimization { get => skipOptimization.GetValueOrDefault(); set => skipOptimization = value; }
    SwitchParameter? skipOptimization;

    [Parameter]
    [ValidateRange(0.0, 1.0)]
    public double? TargetCosine { get; set; }

    protected override void ProcessRecord()
    {
        var model = InputObject!;
        var progress = NewProgress(Activity);
        TryInvoke(() =>
        {
            var result = ModelQuantizer.Quantize(model.Engine, Options(), new Reporter<QuantizationProgress>(p => progress.Report(p.Phase, p.Fraction)), CancellationToken);
            progress.Complete();
            var report = result.Report!;
            WriteStageReport(model, report);
            foreach (var g in report.Entries.Where(e => e.Action == ReportActions.Skipped).GroupBy(e => (e.OpType, e.Detail)))
                WriteVerbose($"Skipped {g.Count()} {g.Key.OpType} node(s): {g.Key.Detail} (e.g. '{g.First().Target}').");
            foreach (var (key, value) in report.Metrics.Where(kv => kv.Key.StartsWith(ReportMetrics.QuantizedPrefix, StringComparison.Ordinal)))
                WriteVerbose($"{key[ReportMetrics.QuantizedPrefix.Length..]}: {value} quantized.");
            if (report.Metrics.TryGetValue(ReportMetrics.ReconstructionErrorMean, out double meanError))
                WriteVerbose($"Output error of the quantized layers on the calibration activations: mean {meanError:P2}, largest {report.Metrics[ReportMetrics.ReconstructionErrorMax]:P2} (per layer in Report.Entries' Error).");
            WriteVerbose($"'{model.Name}': {report.Metrics[ReportMetrics.SizeBefore]:N0} → {report.Metrics[ReportMetrics.SizeAfter]:N0} bytes.");
            WriteObject(new Model(result, model));
        }, model);
    }

    /// <summary>The one options object the engine gets: a parameter not given stays null, and the engine picks its default.</summary>
    QuantizationOptions Options() => new()
    {
        Mode = Enum.Parse<QuantizationMode>(Mode, ignoreCase: true),
        WeightType = WeightType is null ? null : Enum.Parse<QuantType>(WeightType, ignoreCase: true),
        ActivationType = ActivationType is null ? null : Enum.Parse<QuantType>(ActivationType, ignoreCase: true),
        Symmetric = symmetric?.IsPresent,
        ReduceRange = ReduceRange.IsPresent,
        PerChannel = perChannel?.IsPresent,
        OpTypes = OpType,
        ExcludeNodes = ExcludeNode ?? [],
        Force = Force.IsPresent,
        Bits = Bits,
        BlockSize = BlockSize,
        Format = Format is null ? null : Enum.Parse<WeightOnlyFormat>(Format, ignoreCase: true),
        AccuracyLevel = AccuracyLevel,
        Algorithm = WeightOnlyAlgorithm.Create(Algorithm, Damping, actOrder?.IsPresent),
        HeadBits = HeadBits,
        KeepIOTypes = keepIOTypes?.IsPresent,
        StorageOnly = storageOnly?.IsPresent,
        Float16BlockList = Float16BlockList,
        CalibrationData = CalibrationData is null ? null : CalibrationDataLoader.Load(ResolveOutputPath(CalibrationData)),
        CalibrationMethod = CalibrationMethod is null ? null : Enum.Parse<CalibrationMethod>(CalibrationMethod, ignoreCase: true),
        Percentile = Percentile,
        CalibrationBatchSize = CalibrationBatchSize,
        SkipOptimization = skipOptimization?.IsPresent,
        TargetCosine = TargetCosine,
    };
}

/// <summary>Completes -OpType with the operator types quantization knows.</summary>
public sealed class QuantizationOpTypeCompleter : IArgumentCompleter
{
    static readonly string[] OpTypes = ["Conv", "MatMul", "Gemm", "Gather", "Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool", "MaxPool", "Sigmoid", "LeakyRelu", "Softmax", "Resize", "Transpose", "Reshape", "Flatten"];

    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters) =>
        OpTypes.Where(o => o.StartsWith(wordToComplete, StringComparison.OrdinalIgnoreCase)).Select(o => new CompletionResult(o));
}
