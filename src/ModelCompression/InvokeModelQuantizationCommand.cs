using System.Collections;
using System.Globalization;
using System.Management.Automation;
using System.Management.Automation.Language;
using ModelCompression.Native;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;

namespace ModelCompression;

/// <summary>
/// Quantizes a model: dynamic int8, static QDQ with calibration, 4/8-bit weight-only with per-layer precision, or
/// float16; with an accuracy budget, the smallest model that keeps it on validation data.
/// </summary>
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
    [ValidateNotNullOrEmpty]
    [ValidateWeightOnlyAlgorithm]
    [ArgumentCompleter(typeof(WeightOnlyAlgorithmCompleter))]
    public string[]? Algorithm { get; set; }

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
    [ValidateNotNull]
    public Hashtable? LayerPrecision { get; set; }

    [Parameter]
    public SwitchParameter MixedPrecision { get => mixedPrecision.GetValueOrDefault(); set => mixedPrecision = value; }
    SwitchParameter? mixedPrecision;

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
    [ValidateNotNullOrEmpty]
    public string? ValidationData { get; set; }

    [Parameter]
    [ValidateRange(0.0, 1.0)]
    public double? MaxPerplexityRise { get; set; }

    [Parameter]
    [Alias("TargetCosine")]
    [ValidateRange(0.0, 1.0)]
    public double? MinCosine { get; set; }

    [Parameter]
    [ValidateRange(0.0, 1.0)]
    public double? MaxAccuracyDrop { get; set; }

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
            var kept = report.Entries.Where(e => e.Action == ReportActions.Kept).ToList();
            if (kept.Count > 0)
                WriteVerbose($"Kept float: {string.Join(", ", kept.Take(10).Select(e => e.Target))}{(kept.Count > 10 ? ", ..." : "")}.");
            foreach (var candidate in report.Entries.Where(e => e.Action == ReportActions.Candidate))
                WriteVerbose($"{candidate.Target}: {candidate.Detail}");
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
        Algorithm = WeightOnlyAlgorithms.Create(Algorithm, AlgorithmSettings()),
        HeadBits = HeadBits,
        LayerPrecision = LayerPrecision is null ? null : Rules(LayerPrecision),
        MixedPrecision = mixedPrecision?.IsPresent,
        KeepIOTypes = keepIOTypes?.IsPresent,
        StorageOnly = storageOnly?.IsPresent,
        Float16BlockList = Float16BlockList,
        CalibrationData = CalibrationData is null ? null : CalibrationDataLoader.Load(ResolveOutputPath(CalibrationData)),
        CalibrationMethod = CalibrationMethod is null ? null : Enum.Parse<CalibrationMethod>(CalibrationMethod, ignoreCase: true),
        Percentile = Percentile,
        CalibrationBatchSize = CalibrationBatchSize,
        SkipOptimization = skipOptimization?.IsPresent,
        Budget = Budget(),
        ValidationData = ValidationData is null ? null : CalibrationDataLoader.Load(ResolveOutputPath(ValidationData)),
    };

    /// <summary>The algorithms' own settings that were given (each algorithm takes those it knows).</summary>
    Dictionary<string, object> AlgorithmSettings()
    {
        var settings = new Dictionary<string, object>(StringComparer.Ordinal);
        if (Damping is { } d) settings[nameof(Damping)] = d;
        if (actOrder is { } a) settings[nameof(ActOrder)] = a.IsPresent;
        return settings;
    }

    /// <summary>The accuracy budget given (at most one of the three).</summary>
    QualityBudget? Budget()
    {
        var given = new[]
        {
            MaxPerplexityRise is { } p ? QualityBudget.MaxPerplexityRise(p) : null,
            MinCosine is { } c ? QualityBudget.MinCosine(c) : null,
            MaxAccuracyDrop is { } d ? QualityBudget.MaxAccuracyDrop(d) : null,
        }.OfType<QualityBudget>().ToList();
        if (given.Count > 1)
            throw new EngineException("QuantizationBudgetAmbiguous", EngineErrorKind.InvalidArgument,
                $"Give one accuracy budget, not {string.Join(" and ", given.Select(b => "-" + b.ParameterName))}.");
        return given.FirstOrDefault();
    }

    /// <summary>-LayerPrecision @{ 'pattern' = 4 | 8 | 'float' | '4/64' }.</summary>
    List<LayerPrecisionRule> Rules(Hashtable table)
    {
        int defaultBlock = BlockSize ?? 32;
        return table.Keys.Cast<object>().Select(key => new LayerPrecisionRule(
            Convert.ToString(key, CultureInfo.InvariantCulture) ?? "",
            Native.Quantization.LayerPrecision.Parse(Convert.ToString(table[key] is PSObject ps ? ps.BaseObject : table[key], CultureInfo.InvariantCulture) ?? "", defaultBlock))).ToList();
    }
}

/// <summary>Completes -OpType with the operator types the quantization modes register.</summary>
public sealed class QuantizationOpTypeCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters) =>
        QuantizationModes.OpTypes.Where(o => o.StartsWith(wordToComplete, StringComparison.OrdinalIgnoreCase)).Select(o => new CompletionResult(o));
}

/// <summary>Completes -Algorithm with the weight-only algorithms the engine registers.</summary>
public sealed class WeightOnlyAlgorithmCompleter : IArgumentCompleter
{
    public IEnumerable<CompletionResult> CompleteArgument(string commandName, string parameterName, string wordToComplete, CommandAst commandAst, IDictionary fakeBoundParameters) =>
        WeightOnlyAlgorithms.All.Where(a => a.Name.StartsWith(wordToComplete, StringComparison.OrdinalIgnoreCase))
            .Select(a => new CompletionResult(a.Name, a.Name, CompletionResultType.ParameterValue, a.Summary));
}

/// <summary>-Algorithm takes the names the engine registers (the table, not a copy).</summary>
public sealed class ValidateWeightOnlyAlgorithmAttribute : ValidateEnumeratedArgumentsAttribute
{
    protected override void ValidateElement(object element)
    {
        string? name = element is PSObject ps ? ps.BaseObject as string : element as string;
        if (name is null || WeightOnlyAlgorithms.Find(name) is null)
            throw new ValidationMetadataException($"'{element}' is not a weight-only algorithm; use {string.Join(", ", WeightOnlyAlgorithms.Names)} (a scaling algorithm may come first: AWQ, GPTQ).");
    }
}
