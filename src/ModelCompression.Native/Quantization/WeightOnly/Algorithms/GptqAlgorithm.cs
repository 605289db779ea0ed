using ModelCompression.Native.Kernels;

namespace ModelCompression.Native.Quantization;

/// <summary>GPTQ: error compensation row by row with the inverse of the layer's input second moments (needs calibration data).</summary>
public sealed record GptqAlgorithm : WeightOnlyAlgorithm
{
    /// <summary>The cmdlet settings GPTQ reads: -Damping (percent of the mean diagonal) and -ActOrder.</summary>
    public static readonly IReadOnlyList<string> SettingNames = ["Damping", "ActOrder"];

    public override string Name => "GPTQ";
    public override bool NeedsCalibrationData => true;
    public GptqSettings Settings { get; init; } = new();

    public static GptqAlgorithm From(AlgorithmSettings s) =>
        new() { Settings = new GptqSettings { DampingPercent = s.Double("Damping") ?? 1, ActOrder = s.Switch("ActOrder") ?? false } };

    internal override BlockQuantized Quantize(float[] weight, WeightOnlyLayerSettings l, CancellationToken cancel) =>
        l.Hessian is { } h
            ? Gptq.Quantize(weight, l.K, l.N, h, l.Bits, l.BlockSize, l.Symmetric, Settings, l.HalfScales, l.What, cancel)
            // Layers without activations (embedding tables) have no second moments to compensate with.
            : RoundToNearest.Quantize(weight, l.K, l.N, l.Bits, l.BlockSize, l.Symmetric, l.HalfScales, l.What);
}
