using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;

namespace ModelCompression.Native.Quantization;

public enum QuantizationMode { Dynamic, Static, WeightOnly, Float16 }

public enum WeightOnlyFormat { MatMulNBits, Standard }

public enum CalibrationMethod { MinMax, Percentile, Entropy }

/// <summary>
/// What to quantize and how. Options that only some modes use are nullable: null means "not given", and a
/// value given to a mode that does not use it is refused (<see cref="Validate"/>), never ignored.
/// </summary>
public sealed record QuantizationOptions
{
    public QuantizationMode Mode { get; init; } = QuantizationMode.Dynamic;

    // Common
    /// <summary>Int8 or UInt8 weights (Dynamic, Static; WeightOnly uses <see cref="Bits"/>).</summary>
    public QuantType? WeightType { get; init; }
    /// <summary>Symmetric weights; null: the mode's default (int8 weights symmetric, uint8 asymmetric; weight-only symmetric).</summary>
    public bool? Symmetric { get; init; }
    /// <summary>7-bit weights, for CPUs without VNNI whose int8 dot products saturate.</summary>
    public bool ReduceRange { get; init; }
    /// <summary>One scale per output channel (Dynamic; Static always quantizes weights per channel unless false).</summary>
    public bool? PerChannel { get; init; }
    /// <summary>Operator types to quantize; null: the mode's defaults.</summary>
    public IReadOnlyList<string>? OpTypes { get; init; }
    /// <summary>Node names (wildcards * and ?) left as they are.</summary>
    public IReadOnlyList<string> ExcludeNodes { get; init; } = [];
    /// <summary>Quantize a model that is already quantized (otherwise refused).</summary>
    public bool Force { get; init; }

    // WeightOnly
    public int? Bits { get; init; }
    public int? BlockSize { get; init; }
    public WeightOnlyFormat? Format { get; init; }
    public int? AccuracyLevel { get; init; }
    /// <summary>How codes are chosen (RTN, HQQ, GPTQ with their settings); null: round to nearest.</summary>
    public WeightOnlyAlgorithm? Algorithm { get; init; }
    /// <summary>Bits of the output head (the MatMul/Gemm producing a graph output); null: <see cref="Bits"/>.</summary>
    public int? HeadBits { get; init; }
    /// <summary>Per-layer precision by node-name pattern, over -Bits, -HeadBits and the mixed preset (<see cref="PrecisionPlan"/>).</summary>
    public IReadOnlyList<LayerPrecisionRule>? LayerPrecision { get; init; }
    /// <summary>The mixed preset: 8 bits for the layers known to be sensitive (<see cref="Quantization.MixedPrecision"/>).</summary>
    public bool? MixedPrecision { get; init; }

    // Float16
    public bool? KeepIOTypes { get; init; }
    /// <summary>float16 weights stored, float32 computation (Cast after each weight).</summary>
    public bool? StorageOnly { get; init; }
    /// <summary>Operator types kept in float32 in Float16 mode; null: <see cref="Float16Converter.DefaultBlockList"/>.</summary>
    public IReadOnlyList<string>? Float16BlockList { get; init; }

    // Static; WeightOnly (GPTQ needs it; with any algorithm it yields each layer's output error)
    public DataSet? CalibrationData { get; init; }
    public CalibrationMethod? CalibrationMethod { get; init; }
    public double? Percentile { get; init; }
    /// <summary>Int8 (symmetric) or UInt8 (asymmetric) activations.</summary>
    public QuantType? ActivationType { get; init; }
    public bool? SkipOptimization { get; init; }
    public int? CalibrationBatchSize { get; init; }

    // WeightOnly, Static: an accuracy budget
    /// <summary>
    /// The accuracy the result must keep on <see cref="ValidationData"/>: each layer's (node's) precision is chosen to make
    /// the file smallest within it (<see cref="BudgetSearch"/>).
    /// </summary>
    public QualityBudget? Budget { get; init; }
    /// <summary>Data the budget is measured on (not the calibration data).</summary>
    public DataSet? ValidationData { get; init; }

    /// <summary>Refuses values that do not apply to the mode or are out of range, naming the parameter.</summary>
    public void Validate()
    {
        var notFor = new List<string>();
        void Only(bool given, string name, params QuantizationMode[] modes)
        {
            if (given && !modes.Contains(Mode)) notFor.Add(name);
        }
        const QuantizationMode D = QuantizationMode.Dynamic, S = QuantizationMode.Static, W = QuantizationMode.WeightOnly, F = QuantizationMode.Float16;
        Only(WeightType is not null, "WeightType", D, S);
        Only(Symmetric is not null, "Symmetric", D, S, W);
        Only(ReduceRange, "ReduceRange", D, S);
        Only(PerChannel is not null, "PerChannel", D, S);
        Only(OpTypes is not null, "OpType", D, S, W);
        Only(Bits is not null, "Bits", W);
        Only(BlockSize is not null, "BlockSize", W);
        Only(Format is not null, "Format", W);
        Only(AccuracyLevel is not null, "AccuracyLevel", W);
        Only(Algorithm is not null, "Algorithm", W);
        Only(HeadBits is not null, "HeadBits", W);
        Only(LayerPrecision is not null, "LayerPrecision", W);
        Only(MixedPrecision is not null, "MixedPrecision", W);
        Only(KeepIOTypes is not null, "KeepIOTypes", F);
        Only(StorageOnly is not null, "StorageOnly", F);
        Only(Float16BlockList is not null, "Float16BlockList", F);
        Only(CalibrationData is not null, "CalibrationData", S, W);
        Only(CalibrationMethod is not null, "CalibrationMethod", S);
        Only(Percentile is not null, "Percentile", S);
        Only(ActivationType is not null, "ActivationType", S);
        Only(SkipOptimization is not null, "SkipOptimization", S);
        Only(CalibrationBatchSize is not null, "CalibrationBatchSize", S, W);
        Only(Budget is not null, Budget?.ParameterName ?? "", S, W);
        Only(ValidationData is not null, "ValidationData", S, W);
        if (notFor.Count > 0)
            throw Invalid("QuantizationParameterNotApplicable",
                $"{string.Join(", ", notFor.Select(p => "-" + p))} {(notFor.Count == 1 ? "does" : "do")} not apply to -Mode {Mode}; remove {(notFor.Count == 1 ? "it" : "them")}.");

        if (WeightType is not null and not (QuantType.Int8 or QuantType.UInt8))
            throw Invalid("QuantizationWeightTypeInvalid", $"-WeightType must be Int8 or UInt8 (got {WeightType}); 4-bit weights are -Mode WeightOnly -Bits 4.");
        if (ActivationType is not null and not (QuantType.Int8 or QuantType.UInt8))
            throw Invalid("QuantizationActivationTypeInvalid", $"-ActivationType must be Int8 or UInt8 (got {ActivationType}).");
        if (Bits is not null and not (4 or 8))
            throw Invalid("QuantizationBitsInvalid", $"-Bits must be 4 or 8 (got {Bits}).");
        if (HeadBits is not null and not (4 or 8))
            throw Invalid("QuantizationBitsInvalid", $"-HeadBits must be 4 or 8 (got {HeadBits}).");
        if (Mode == QuantizationMode.WeightOnly && Algorithm is { NeedsCalibrationData: true } && CalibrationData is null)
            throw Invalid("QuantizationCalibrationDataMissing",
                $"-Algorithm {Algorithm.Name} needs -CalibrationData (a .npz/.npy/.csv file or a folder of them): it compensates each layer's rounding error with the second moments of the layer's inputs.");
        if (Algorithm is HqqAlgorithm hqq) hqq.Settings.Validate();
        if (((Algorithm as AwqAlgorithm)?.Codes ?? Algorithm) is GptqAlgorithm gptq) gptq.Settings.Validate();
        ValidateBudget();
        if (Mode == QuantizationMode.WeightOnly && CalibrationBatchSize is not null && CalibrationData is null)
            throw Invalid("QuantizationParameterNotApplicable", "-CalibrationBatchSize applies with -CalibrationData only.");
        if (BlockSize is { } bs && (bs < 16 || bs > 256 || (bs & (bs - 1)) != 0))
            throw Invalid("QuantizationBlockSizeInvalid", $"-BlockSize must be a power of two from 16 to 256 (got {bs}).");
        if (AccuracyLevel is { } al && (al < 0 || al > 4))
            throw Invalid("QuantizationAccuracyLevelInvalid", $"-AccuracyLevel must be 0 to 4 (got {al}).");
        if (AccuracyLevel is not null && Format == WeightOnlyFormat.Standard)
            throw Invalid("QuantizationParameterNotApplicable", "-AccuracyLevel applies to the MatMulNBits format only, not to -Format Standard.");
        if (Percentile is { } p && (p <= 0 || p > 100 || double.IsNaN(p)))
            throw Invalid("QuantizationPercentileInvalid", $"-Percentile must be in (0, 100] (got {p}).");
        if (Percentile is not null && CalibrationMethod is not Quantization.CalibrationMethod.Percentile)
            throw Invalid("QuantizationParameterNotApplicable", "-Percentile applies to -CalibrationMethod Percentile only.");
        if (CalibrationBatchSize is { } cb && cb < 1)
            throw Invalid("QuantizationCalibrationBatchInvalid", $"-CalibrationBatchSize must be at least 1 (got {cb}).");
        if (Mode == QuantizationMode.Static && CalibrationData is null)
            throw Invalid("QuantizationCalibrationDataMissing", "-Mode Static needs -CalibrationData (a .npz/.npy/.csv file or a folder of them) to measure activation ranges.");
        if (ExcludeNodes.Count > 0 && StorageOnly == true)
            throw Invalid("QuantizationParameterNotApplicable", "-ExcludeNode does not apply to -StorageOnly (it converts weights, not nodes).");
        if (StorageOnly == true && (KeepIOTypes is not null || Float16BlockList is not null))
            throw Invalid("QuantizationParameterNotApplicable",
                "-KeepIOTypes and -Float16BlockList shape the float16 conversion of computation; -StorageOnly converts stored weights only (nodes and I/O stay float32).");
        if (ReduceRange && Mode == QuantizationMode.WeightOnly)
            throw Invalid("QuantizationParameterNotApplicable", "-ReduceRange does not apply to -Mode WeightOnly.");
    }

    void ValidateBudget()
    {
        if (ValidationData is not null && Budget is null)
            throw Invalid("QuantizationParameterNotApplicable", "-ValidationData is what an accuracy budget is measured on; give -MaxPerplexityRise, -MinCosine or -MaxAccuracyDrop with it.");
        if (Budget is null) return;
        Budget.Validate();
        if (ValidationData is null)
            throw Invalid("QuantizationValidationDataMissing",
                $"{Budget} is measured on -ValidationData (a .npz/.npy/.csv file the model was not calibrated on{(Budget.Metric == BudgetMetric.Cosine ? "" : ", with labels")}); give it.");
        if (Budget.Metric != BudgetMetric.Cosine && ValidationData.LabelArray is null)
            throw Invalid("QuantizationValidationLabelsMissing",
                $"{Budget} needs labels in -ValidationData ('{ValidationData.Source}' has no 'y', 'label' or 'labels' array){(Budget.Metric == BudgetMetric.PerplexityRise ? ": the next token at each position" : "")}.");
        var fixing = new[] { (LayerPrecision is not null, "-LayerPrecision"), (MixedPrecision is not null, "-MixedPrecision"), (HeadBits is not null, "-HeadBits") }.Where(p => p.Item1).Select(p => p.Item2).ToList();
        if (fixing.Count > 0)
            throw Invalid("QuantizationParameterNotApplicable", $"{string.Join(", ", fixing)} fix{(fixing.Count == 1 ? "es" : "")} precisions that an accuracy budget chooses; give one or the other.");
    }

    static EngineException Invalid(string id, string message) => new(id, EngineErrorKind.InvalidArgument, message);
}
