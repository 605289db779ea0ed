using ModelCompression.Native.Kernels;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// How -Mode WeightOnly picks each block's codes: one typed options record per algorithm (the shape of ONNX Runtime's
/// weight-only quantizer configs). Null in <see cref="QuantizationOptions.Algorithm"/> means round to nearest.
/// </summary>
public abstract record WeightOnlyAlgorithm
{
    /// <summary>RTN, HQQ or GPTQ.</summary>
    public abstract string Name { get; }

    /// <summary>Whether the algorithm needs the layer's input second moments (calibration data).</summary>
    public virtual bool NeedsCalibrationData => false;

    /// <summary>Quantizes weight[K, N] (row-major).</summary>
    internal abstract BlockQuantized Quantize(float[] weight, WeightOnlyLayerSettings layer, CancellationToken cancel);

    /// <summary>
    /// The record for an algorithm name and its settings as a cmdlet binds them (null: not given); settings of another
    /// algorithm are refused, never ignored.
    /// </summary>
    public static WeightOnlyAlgorithm? Create(string? name, double? damping = null, bool? actOrder = null)
    {
        var algorithm = name?.ToUpperInvariant() switch
        {
            null => null,
            "RTN" => new RoundToNearestAlgorithm(),
            "HQQ" => new HqqAlgorithm(),
            "GPTQ" => (WeightOnlyAlgorithm)new GptqAlgorithm { Settings = new GptqSettings { DampingPercent = damping ?? 1, ActOrder = actOrder ?? false } },
            _ => throw new EngineException("QuantizationAlgorithmUnknown", EngineErrorKind.InvalidArgument, $"-Algorithm must be RTN, HQQ or GPTQ (got '{name}')."),
        };
        if (algorithm is not GptqAlgorithm)
        {
            var notFor = new[] { (damping is not null, "-Damping"), (actOrder is not null, "-ActOrder") }.Where(p => p.Item1).Select(p => p.Item2).ToList();
            if (notFor.Count > 0)
                throw new EngineException("QuantizationParameterNotApplicable", EngineErrorKind.InvalidArgument,
                    $"{string.Join(", ", notFor)} {(notFor.Count == 1 ? "applies" : "apply")} to -Algorithm GPTQ only{(algorithm is null ? "" : $", not to {algorithm.Name}")}; remove {(notFor.Count == 1 ? "it" : "them")}.");
        }
        return algorithm;
    }
}

/// <summary>Round to nearest (the default): each block's range from its minimum and maximum.</summary>
public sealed record RoundToNearestAlgorithm : WeightOnlyAlgorithm
{
    public override string Name => "RTN";

    internal override BlockQuantized Quantize(float[] weight, WeightOnlyLayerSettings l, CancellationToken cancel) =>
        RoundToNearest.Quantize(weight, l.K, l.N, l.Bits, l.BlockSize, l.Symmetric, l.HalfScales, l.What);
}

/// <summary>Half-quadratic quantization: no data; each block's scale and zero point optimised against its own weights.</summary>
public sealed record HqqAlgorithm : WeightOnlyAlgorithm
{
    public override string Name => "HQQ";
    public HqqSettings Settings { get; init; } = new();

    internal override BlockQuantized Quantize(float[] weight, WeightOnlyLayerSettings l, CancellationToken cancel) =>
        Hqq.Quantize(weight, l.K, l.N, l.Bits, l.BlockSize, Settings, l.HalfScales, l.What, l.Symmetric);
}

/// <summary>GPTQ: error compensation row by row with the inverse of the layer's input second moments (needs calibration data).</summary>
public sealed record GptqAlgorithm : WeightOnlyAlgorithm
{
    public override string Name => "GPTQ";
    public override bool NeedsCalibrationData => true;
    public GptqSettings Settings { get; init; } = new();

    internal override BlockQuantized Quantize(float[] weight, WeightOnlyLayerSettings l, CancellationToken cancel) =>
        l.Hessian is { } h
            ? Gptq.Quantize(weight, l.K, l.N, h, l.Bits, l.BlockSize, l.Symmetric, Settings, l.HalfScales, l.What, cancel)
            // Layers without activations (embedding tables) have no second moments to compensate with.
            : RoundToNearest.Quantize(weight, l.K, l.N, l.Bits, l.BlockSize, l.Symmetric, l.HalfScales, l.What);
}

/// <summary>What an algorithm needs to know about one layer's weight.</summary>
internal sealed record WeightOnlyLayerSettings(int K, int N, int Bits, int BlockSize, bool Symmetric, bool HalfScales, string What, float[]? Hessian);
