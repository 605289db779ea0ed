using System.Collections;
using System.Globalization;
using System.Management.Automation;
using System.Management.Automation.Language;
using ModelCompression.Native;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Quantization;

namespace ModelCompression;

/// <summary>
/// Quantizes a model: dynamic int8, static QDQ with calibration, 4/8-bit weight-only with per-layer precision, or
/// float16; with an accuracy budget, the smallest model that keeps it on validation data. Optional parameters keep
/// their value in a nullable field (null: not given), handed to the engine's options as they are.
/// </summary>
[Cmdlet(VerbsLifecycle.Invoke, "ModelQuantization")]
[OutputType(typeof(Model))]
public sealed class InvokeModelQuantizationCommand : ModelCmdletBase
{
    const string Activity = "Quantizing";

    bool? symmetric, perChannel, actOrder, keepIOTypes, storageOnly, skipOptimization, mixedPrecision;
    int? bits, blockSize, accuracyLevel, headBits, calibrationBatchSize;
    double? damping, percentile, maxPerplexityIncrease, minCosine, maxAccuracyDrop;

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
    public SwitchParameter Symmetric { get => symmetric ?? false; set => symmetric = value; }

    [Parameter]
    public SwitchParameter ReduceRange { get; set; }

    [Parameter]
    public SwitchParameter PerChannel { get => perChannel ?? false; set => perChannel = value; }

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
    public int Bits { get => bits ?? 0; set => bits = value; }

    [Parameter]
    [ValidateRange(16, 256)]
    public int BlockSize { get => blockSize ?? 0; set => blockSize = value; }

    [Parameter]
    [ValidateSet("MatMulNBits", "Standard")]
    public string? Format { get; set; }

    [Parameter]
    [ValidateRange(0, 4)]
    public int AccuracyLevel { get => accuracyLevel ?? 0; set => accuracyLevel = value; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    [ValidateWeightOnlyAlgorithm]
    [ArgumentCompleter(typeof(WeightOnlyAlgorithmCompleter))]
    public string[]? Algorithm { get; set; }

    [Parameter]
    [ValidateRange(0.0, 100.0)]
    public double Damping { get => damping ?? 0; set => damping = value; }

    [Parameter]
    public SwitchParameter ActOrder { get => actOrder ?? false; set => actOrder = value; }

    [Parameter]
    [ValidateSet("4", "8")]
    public int HeadBits { get => headBits ?? 0; set => headBits = value; }

    [Parameter]
    [ValidateNotNull]
    public Hashtable? LayerPrecision { get; set; }

    [Parameter]
    public SwitchParameter MixedPrecision { get => mixedPrecision ?? false; set => mixedPrecision = value; }

    [Parameter]
    public SwitchParameter KeepIOTypes { get => keepIOTypes ?? false; set => keepIOTypes = value; }

    [Parameter]
    public SwitchParameter StorageOnly { get => storageOnly ?? false; set => storageOnly = value; }

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
    public double Percentile { get => percentile ?? 0; set => percentile = value; }

    [Parameter]
    [ValidateRange(1, 65536)]
    public int CalibrationBatchSize { get => calibrationBatchSize ?? 0; set => calibrationBatchSize = value; }

    [Parameter]
    public SwitchParameter SkipOptimization { get => skipOptimization ?? false; set => skipOptimization = value; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? ValidationData { get; set; }

    [Parameter]
    [ValidateRange(0.0, double.MaxValue)]
    public double MaxPerplexityIncrease { get => maxPerplexityIncrease ?? 0; set => maxPerplexityIncrease = value; }

    [Parameter]
    [Alias("TargetCosine")]
    [ValidateRange(0.0, 1.0)]
    public double MinCosine { get => minCosine ?? 0; set => minCosine = value; }

    [Parameter]
    [ValidateRange(0.0, 100.0)]
    public double MaxAccuracyDrop { get => maxAccuracyDrop ?? 0; set => maxAccuracyDrop = value; }

    protected override void ProcessRecord()
    {
        var model = InputObject!;
        TryInvoke(() =>
        {
            var options = Options();
            var progress = new PhaseProgress(this);
            var result = ModelQuantizer.Quantize(model.Engine, options, progress, CancellationToken);
            CompleteProgress(Activity);
            Explain(result.Report!);
            WriteVerbose($"'{model.Name}': {result.Report!.Metrics["SizeBefore"]:N0} → {result.Report.Metrics["SizeAfter"]:N0} bytes.");
            WriteObject(new Model(result, model));
        }, model);
    }

    QuantizationOptions Options()
    {
        var settings = new Dictionary<string, object>(StringComparer.Ordinal);
        if (damping is { } d) settings[nameof(Damping)] = d;
        if (actOrder is { } a) settings[nameof(ActOrder)] = a;
        return new QuantizationOptions
        {
            Mode = Enum.Parse<QuantizationMode>(Mode, ignoreCase: true),
            WeightType = WeightType is null ? null : Enum.Parse<QuantType>(WeightType, ignoreCase: true),
            ActivationType = ActivationType is null ? null : Enum.Parse<QuantType>(ActivationType, ignoreCase: true),
            Symmetric = symmetric,
            ReduceRange = ReduceRange.IsPresent,
            PerChannel = perChannel,
            OpTypes = OpType,
            ExcludeNodes = ExcludeNode ?? [],
            Force = Force.IsPresent,
            Bits = bits,
            BlockSize = blockSize,
            Format = Format is null ? null : Enum.Parse<WeightOnlyFormat>(Format, ignoreCase: true),
            AccuracyLevel = accuracyLevel,
            Algorithm = WeightOnlyAlgorithms.Create(Algorithm, settings),
            HeadBits = headBits,
            LayerPrecision = LayerPrecision is null ? null : Rules(LayerPrecision),
            MixedPrecision = mixedPrecision,
            KeepIOTypes = keepIOTypes,
            StorageOnly = storageOnly,
            Float16BlockList = Float16BlockList,
            CalibrationData = CalibrationData is null ? null : CalibrationDataLoader.Load(ResolveOutputPath(CalibrationData)),
            CalibrationMethod = CalibrationMethod is null ? null : Enum.Parse<CalibrationMethod>(CalibrationMethod, ignoreCase: true),
            Percentile = percentile,
            CalibrationBatchSize = calibrationBatchSize,
            SkipOptimization = skipOptimization,
            Budget = Budget(),
            ValidationData = ValidationData is null ? null : CalibrationDataLoader.Load(ResolveOutputPath(ValidationData)),
        };
    }

    /// <summary>The accuracy budget given (at most one of the three).</summary>
    QualityBudget? Budget()
    {
        var given = new[]
        {
            maxPerplexityIncrease is { } p ? QualityBudget.MaxPerplexityIncrease(p) : null,
            minCosine is { } c ? QualityBudget.MinCosine(c) : null,
            maxAccuracyDrop is { } d ? QualityBudget.MaxAccuracyDrop(d) : null,
        }.OfType<QualityBudget>().ToList();
        if (given.Count > 1)
            throw new EngineException("QuantizationBudgetAmbiguous", EngineErrorKind.InvalidArgument,
                $"Give one accuracy budget, not {string.Join(" and ", given.Select(b => "-" + b.ParameterName))}.");
        return given.FirstOrDefault();
    }

    /// <summary>-LayerPrecision @{ 'pattern' = 4 | 8 | 'float' | '4/64' }.</summary>
    List<LayerPrecisionRule> Rules(Hashtable table)
    {
        int defaultBlock = blockSize ?? 32;
        return table.Keys.Cast<object>().Select(key => new LayerPrecisionRule(
            Convert.ToString(key, CultureInfo.InvariantCulture) ?? "",
            Native.Quantization.LayerPrecision.Parse(Convert.ToString(table[key] is PSObject ps ? ps.BaseObject : table[key], CultureInfo.InvariantCulture) ?? "", defaultBlock))).ToList();
    }

    /// <summary>The report as warnings (what the user should act on) and verbose lines (the rest).</summary>
    void Explain(Native.Onnx.ModelReport report)
    {
        foreach (var note in report.Notes) WriteWarning(note);
        foreach (var g in report.Entries.Where(e => e.Action == "Skipped").GroupBy(e => (e.OpType, e.Detail)))
            WriteVerbose($"Skipped {g.Count()} {g.Key.OpType} node(s): {g.Key.Detail} (e.g. '{g.First().Target}').");
        foreach (var (key, value) in report.Metrics.Where(kv => kv.Key.StartsWith("Quantized.", StringComparison.Ordinal)))
            WriteVerbose($"{key["Quantized.".Length..]}: {value} quantized.");
        var kept = report.Entries.Where(e => e.Action == "Kept").ToList();
        if (kept.Count > 0)
            WriteVerbose($"Kept float: {string.Join(", ", kept.Take(10).Select(e => e.Target))}{(kept.Count > 10 ? ", ..." : "")}.");
        if (report.Metrics.TryGetValue("ReconstructionErrorMean", out double meanError))
            WriteVerbose($"Output error of the quantized layers on the calibration activations: mean {meanError:P2}, largest {report.Metrics["ReconstructionErrorMax"]:P2} (per layer in Report.Entries' Error).");
        foreach (var candidate in report.Entries.Where(e => e.Action == "Candidate"))
            WriteVerbose($"{candidate.Target}: {candidate.Detail}");
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
