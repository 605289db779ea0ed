using System.Numerics.Tensors;

namespace ModelCompression.Native.Kernels;

/// <summary>
/// What round to nearest loses on a [K, N] row-major weight, without storing codes: D = W - dequantized, with optional
/// per-row scales s (the weight is scaled by s before rounding and the result divided by s after, AWQ's candidate) and
/// per-column shrink factors of each block's range (AWQ's clipping candidates). The block parameters are round to
/// nearest's (<see cref="BlockQuantized.Params"/>); rows are processed whole, in parallel over blocks, so the searches
/// that call this many times touch the weight in memory order and allocate nothing large.
/// </summary>
public static class RoundingDifference
{
    /// <summary>Writes W - dequantized(quantized(W)) into <paramref name="difference"/> ([K, N], may be reused).</summary>
    public static void Compute(ReadOnlySpan<float> weight, int k, int n, int bits, int blockSize, bool symmetric, bool halfScales,
        float[]? rowScales, float[]? shrink, float[] difference)
    {
        if ((long)k * n > weight.Length || (long)k * n > difference.Length) throw new ArgumentException("Weight or difference shorter than K*N.");
        var (qmin, qmax) = BlockQuantized.Range(bits, symmetric);
        unsafe
        {
            fixed (float* wp = weight)
            {
                nint source = (nint)wp;
                Parallelism.Each(0, (k + blockSize - 1) / blockSize, g =>
                {
                    int r0 = g * blockSize, r1 = Math.Min(k, r0 + blockSize);
                    var all = new ReadOnlySpan<float>((float*)source, k * n);
                    var min = new float[n];
                    var max = new float[n];
                    var row = new float[n];
                    min.AsSpan().Fill(float.PositiveInfinity);
                    max.AsSpan().Fill(float.NegativeInfinity);
                    for (int r = r0; r < r1; r++)
                    {
                        Scaled(all.Slice(r * n, n), rowScales?[r] ?? 1f, row);
                        TensorPrimitives.Min(min, row, min);
                        TensorPrimitives.Max(max, row, max);
                    }
                    var scale = new float[n];
                    var zero = new float[n];
                    for (int c = 0; c < n; c++)
                    {
                        float f = shrink?[c] ?? 1f, lo = min[c], hi = max[c];
                        if (symmetric) { float m = MathF.Max(-lo, hi); (lo, hi) = (-m, m); }
                        (scale[c], byte z) = BlockQuantized.Params(lo * f, hi * f, bits, symmetric, halfScales, null);
                        zero[c] = z;
                    }
                    for (int r = r0; r < r1; r++)
                    {
                        float s = rowScales?[r] ?? 1f;
                        var original = all.Slice(r * n, n);
                        Scaled(original, s, row);
                        TensorPrimitives.Divide(row, scale, row);
                        TensorPrimitives.Round(row, row);
                        TensorPrimitives.Add(row, zero, row);
                        TensorPrimitives.Max(row, (float)qmin, row);
                        TensorPrimitives.Min(row, (float)qmax, row);
                        TensorPrimitives.Subtract(row, zero, row);
                        TensorPrimitives.Multiply(row, scale, row);
                        if (s != 1f) TensorPrimitives.Divide(row, s, row);
                        TensorPrimitives.Subtract(original, row, difference.AsSpan(r * n, n));
                    }
                });
            }
        }
    }

    static void Scaled(ReadOnlySpan<float> source, float s, Span<float> destination)
    {
        if (s == 1f) source.CopyTo(destination);
        else TensorPrimitives.Multiply(source, s, destination);
    }
}
