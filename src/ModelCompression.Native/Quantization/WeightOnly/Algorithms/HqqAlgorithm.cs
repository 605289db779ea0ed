using ModelCompression.Native.Kernels;

namespace ModelCompression.Native.Quantization;

/// <summary>Half-quadratic quantization: no data; each block's scale and zero point optimised against its own weights.</summary>
public sealed record HqqAlgorithm : WeightOnlyAlgorithm
{
    public override string Name => "HQQ";
    public HqqSettings Settings { get; init; } = new();

    internal override BlockQuantized Quantize(float[] weight, WeightOnlyLayerSettings l, CancellationToken cancel) =>
        Hqq.Quantize(weight, l.K, l.N, l.Bits, l.BlockSize, Settings, l.HalfScales, l.What, l.Symmetric);
}
