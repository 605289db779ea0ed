using System.Runtime.Intrinsics;

namespace ModelCompression.Native.Kernels;

/// <summary>
/// Half-quadratic quantization (HQQ; Badri and Shaji, 2023): no data, each block's scale and zero point fitted to the
/// block's own weights. The error W - dequant(quant(W)) is split off as a sparse variable W_e (the half-quadratic
/// splitting of an l_p loss with p &lt; 1, solved by generalized soft-thresholding), and the quantization parameters
/// are refitted to W - W_e, alternating with re-rounding, while beta grows by kappa each step.
/// Here the refit is a least-squares line through (codes, W - W_e) for both the scale and the zero point, the zero point
/// is kept an integer (so ONNX Runtime's packed 4-bit kernels run the result; fractional zero points force its slow
/// unpacked path), and each block stops as soon as its squared error stops falling, keeping its best parameters. The
/// first parameters tried are round-to-nearest's (asymmetric), so no block ends worse than that.
/// </summary>
public static class Hqq
{
    /// <summary>Quantizes weight[K, N] (row-major) block-wise along K with asymmetric codes and integer zero points.</summary>
    public static BlockQuantized Quantize(ReadOnlySpan<float> weight, int k, int n, int bits, int blockSize, HqqSettings settings, bool halfScales = false, string? what = null, bool symmetric = false)
    {
        settings.Validate();
        var q = BlockQuantized.Create(k, n, bits, blockSize, symmetric);
        BlockTiles.Run(weight, q, new Tile(bits, symmetric, settings, halfScales, what));
        return q;
    }

    readonly unsafe struct Tile(int bits, bool symmetric, HqqSettings settings, bool halfScales, string? what) : BlockTiles.ITileQuantizer
    {
        public void Quantize(float* tile, int stride, int rows, float* scales, byte* zeroPoints, byte* codes)
        {
            const int L = BlockTiles.Lanes;
            float* min = stackalloc float[L], max = stackalloc float[L], buffer = stackalloc float[L];
            BlockTiles.MinMax(tile, stride, rows, min, max, what);
            for (int j = 0; j < L; j++) (scales[j], zeroPoints[j]) = BlockQuantized.Params(min[j], max[j], bits, symmetric, halfScale: false, what);
            var (qmin, qmax) = BlockQuantized.Range(bits, symmetric);
            var lo = Vector256.Create((float)qmin);
            var hi = Vector256.Create((float)qmax);
            var scale = Vector256.Load(scales);
            var zero = BlockTiles.ZeroPointVector(zeroPoints);
            var bestScale = scale;
            var bestZero = zero;
            var bestError = Vector256.Create(float.PositiveInfinity);
            var active = Vector256<float>.AllBitsSet;
            var count = Vector256.Create((float)rows);
            float beta = (float)settings.Beta, p = (float)settings.LpNorm;

            for (int iteration = 0; iteration <= settings.Iterations; iteration++)
            {
                // Above this |error| the l_p shrinkage leaves something: |e| > (1/beta)|e|^(p-1)  <=>  |e| > beta^(-1/(2-p)).
                var threshold = Vector256.Create(MathF.Pow(beta, -1f / (2f - p)));
                var inverse = Vector256<float>.One / scale;
                Vector256<float> error = Vector256<float>.Zero, sq = error, sqq = error, st = error, sqt = error;
                for (int r = 0; r < rows; r++)
                {
                    var w = Vector256.Load(tile + (long)r * stride);
                    var c = Vector256.Min(Vector256.Max(Simd.RoundEven(w * inverse) + zero, lo), hi);
                    var e = w - (c - zero) * scale;
                    error += e * e;
                    var target = w;
                    if (Vector256.GreaterThanAny(Vector256.Abs(e), threshold))
                    {
                        // Rare (large weights or outliers): the sparse part W_e, by generalized soft-thresholding.
                        e.Store(buffer);
                        for (int j = 0; j < L; j++)
                        {
                            float a = MathF.Abs(buffer[j]);
                            buffer[j] = MathF.Sign(buffer[j]) * MathF.Max(a - MathF.Pow(a + 1e-8f, p - 1f) / beta, 0f);
                        }
                        target = w - Vector256.Load(buffer);
                    }
                    sq += c; sqq += c * c; st += target; sqt += c * target;
                }
                // A lane stops at its first step that does not lower its error and keeps its best parameters.
                var improved = Vector256.LessThan(error, bestError) & active;
                bestScale = Vector256.ConditionalSelect(improved, scale, bestScale);
                bestZero = Vector256.ConditionalSelect(improved, zero, bestZero);
                bestError = Vector256.ConditionalSelect(improved, error, bestError);
                active = improved;
                if (active == Vector256<float>.Zero || iteration == settings.Iterations) break;

                // Least-squares line target = s*c + b through the codes, then the zero point -b/s rounded to an
                // integer (kept when symmetric) and the scale refitted for it: s = sum((c - z) t) / sum((c - z)^2).
                var denominator = count * sqq - sq * sq;
                var slope = (count * sqt - sq * st) / denominator;
                var z = symmetric ? zero : Vector256.Min(Vector256.Max(Simd.RoundEven((slope * sq - st) / (slope * count)), Vector256<float>.Zero), hi);
                var s = (sqt - z * st) / (sqq - Vector256.Create(2f) * z * sq + count * z * z);
                var valid = Vector256.GreaterThan(s, Vector256<float>.Zero) & Vector256.Equals(s - s, Vector256<float>.Zero)
                    & (symmetric ? Vector256<float>.AllBitsSet : Vector256.GreaterThan(denominator, Vector256<float>.Zero));
                scale = Vector256.ConditionalSelect(active & valid, s, scale);
                zero = Vector256.ConditionalSelect(active & valid, z, zero);
                active &= valid;
                if (active == Vector256<float>.Zero) break;
                beta *= (float)settings.Kappa;
            }
            bestScale.Store(scales);
            bestZero.Store(buffer);
            for (int j = 0; j < L; j++)
            {
                zeroPoints[j] = (byte)buffer[j];
                if (halfScales) scales[j] = QuantMath.RoundToHalfScale(scales[j]);
            }
            BlockTiles.Codes(tile, stride, rows, scales, zeroPoints, qmin, qmax, codes);
        }
    }
}

/// <summary>HQQ's optimisation settings (the defaults are the HQQ authors' and ONNX Runtime's).</summary>
public sealed record HqqSettings
{
    /// <summary>Most refinement steps per block (a block stops earlier when its error stops falling).</summary>
    public int Iterations { get; init; } = 20;
    /// <summary>p of the l_p error norm (below 1: a few large errors cost less than many small ones).</summary>
    public double LpNorm { get; init; } = 0.7;
    /// <summary>Initial weight of the quadratic coupling.</summary>
    public double Beta { get; init; } = 10;
    /// <summary>Growth of beta per step.</summary>
    public double Kappa { get; init; } = 1.01;

    public void Validate()
    {
        if (Iterations is < 0 or > 1000) throw Invalid($"HQQ iterations must be 0 to 1000 (got {Iterations}).");
        if (!(LpNorm > 0 && LpNorm <= 1)) throw Invalid($"HQQ's l_p norm must be in (0, 1] (got {LpNorm}).");
        if (!(Beta > 0) || double.IsInfinity(Beta)) throw Invalid($"HQQ's beta must be positive (got {Beta}).");
        if (!(Kappa >= 1) || double.IsInfinity(Kappa)) throw Invalid($"HQQ's kappa must be at least 1 (got {Kappa}).");
    }

    static EngineException Invalid(string message) => new("QuantizationHqqSettingsInvalid", EngineErrorKind.InvalidArgument, message);
}
