using ModelCompression.Native.Kernels;

namespace ModelCompression.Native.Quantization;

/// <summary>Round to nearest (the default): each block's range from its minimum and maximum.</summary>
public sealed record RoundToNearestAlgorithm : WeightOnlyAlgorithm
{
    public override string Name => "RTN";

    internal override BlockQuantized Quantize(float[] weight, WeightOnlyLayerSettings l, CancellationToken cancel) =>
        RoundToNearest.Quantize(weight, l.K, l.N, l.Bits, l.BlockSize, l.Symmetric, l.HalfScales, l.What);
}
