using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace ModelCompression.Native.Kernels;

/// <summary>
/// GPTQ (Frantar et al., 2022): quantizes a [K, N] weight one input row at a time and spreads each row's rounding error
/// over the rows not yet quantized, weighted by the inverse of H = X^T X (the second moments of the layer's inputs), so
/// that ||X W - X W_q|| rather than ||W - W_q|| is kept small. As in the paper: H is damped by a fraction of its mean
/// diagonal, the upper Cholesky factor U of H^-1 gives the update weights, updates are applied lazily per block of rows
/// (the bulk as one GEMM), and rows may be visited in order of decreasing H diagonal (activation order). Block scales
/// and zero points come from the block's current (already compensated) weights the first time one of its rows is
/// quantized, with the same formula as round to nearest. Columns are independent, so column stripes run in parallel.
/// </summary>
public static class Gptq
{
    /// <summary>
    /// Quantizes <paramref name="weight"/> [K, N] (row-major) with <paramref name="hessian"/> [K, K] = X^T X; both are
    /// left unchanged.
    /// </summary>
    public static BlockQuantized Quantize(ReadOnlySpan<float> weight, int k, int n, ReadOnlySpan<float> hessian, int bits, int blockSize, bool symmetric,
        GptqSettings settings, bool halfScales = false, string? what = null, CancellationToken cancel = default)
    {
        settings.Validate();
        if ((long)k * n > weight.Length || (long)k * k > hessian.Length) throw new ArgumentException("Weight or Hessian too short for the given sizes.");
        QuantMath.MinMax(weight[..(k * n)], what); // refuses NaN and infinity before any work

        var diagonal = new float[k];
        double meanDiagonal = 0;
        for (int i = 0; i < k; i++) { diagonal[i] = hessian[i * k + i]; meanDiagonal += diagonal[i] == 0 ? 1 : diagonal[i]; }
        meanDiagonal /= Math.Max(1, k);
        int[] order = Enumerable.Range(0, k).ToArray();
        if (settings.ActOrder) order = order.OrderByDescending(i => diagonal[i]).ThenBy(i => i).ToArray();

        // Rows in processing order; dead inputs (never non-zero in the calibration data) contribute nothing: their
        // weights become zero and their diagonal 1, as in the paper.
        var w = new float[(long)k * n];
        var hp = new float[(long)k * k];
        for (int i = 0; i < k; i++)
        {
            int r = order[i];
            if (diagonal[r] != 0) weight.Slice(r * n, n).CopyTo(w.AsSpan(i * n, n));
            for (int j = 0; j < k; j++) hp[(long)i * k + j] = hessian[r * k + order[j]];
            if (diagonal[r] == 0) hp[(long)i * k + i] = 1;
        }

        // Damping, raised tenfold while the damped H is not positive definite (rank-deficient calibration data).
        float[]? u = null;
        double damping = settings.DampingPercent / 100 * meanDiagonal;
        for (int attempt = 0; attempt < 4 && u is null; attempt++, damping *= 10)
            u = Cholesky.InverseUpper(hp, k, (float)damping);
        if (u is null)
            throw new EngineException("GptqHessianNotPositiveDefinite", EngineErrorKind.InvalidData,
                $"GPTQ cannot quantize {(what is null ? "a weight" : $"'{what}'")}: its inputs' second-moment matrix is not positive definite even with {settings.DampingPercent * 1000}% damping (non-finite activations?).");

        var result = BlockQuantized.Create(k, n, bits, blockSize, symmetric);
        int blocks = result.BlocksPerColumn;
        var position = new int[k]; // position[original row] = processing position
        for (int i = 0; i < k; i++) position[order[i]] = i;
        // Stripes of columns (multiples of the vector width), a few per core.
        int stripe = Math.Max(BlockTiles.Lanes, (n / (Parallelism.Threads * 2) + BlockTiles.Lanes - 1) / BlockTiles.Lanes * BlockTiles.Lanes);
        int stripes = (n + stripe - 1) / stripe;
        int lazy = Math.Max(settings.LazyBlockSize, blockSize) / blockSize * blockSize;
        Parallelism.Each(0, stripes, s =>
        {
            int c0 = s * stripe, width = Math.Min(stripe, n - c0);
            new Stripe(w, k, n, c0, width, u, order, position, result, lazy, halfScales, what, cancel).Run();
        });
        return result;
    }

    /// <summary>One stripe of columns, processed row by row; its own scratch for errors and block parameters.</summary>
    sealed class Stripe(float[] w, int k, int n, int c0, int width, float[] u, int[] order, int[] position, BlockQuantized result, int lazy,
        bool halfScales, string? what, CancellationToken cancel)
    {
        readonly int bs = result.BlockSize, blocks = result.BlocksPerColumn;
        readonly bool[] ready = new bool[result.BlocksPerColumn];
        readonly float[] scale = new float[(long)result.BlocksPerColumn * width];
        readonly float[] zero = new float[(long)result.BlocksPerColumn * width];

        public void Run()
        {
            var (qmin, qmax) = result.CodeRange;
            var errors = new float[(long)lazy * width];
            var code = new float[width];
            for (int i1 = 0; i1 < k; i1 += lazy)
            {
                cancel.ThrowIfCancellationRequested();
                int i2 = Math.Min(k, i1 + lazy);
                for (int i = i1; i < i2; i++)
                {
                    int original = order[i], group = original / bs;
                    if (!ready[group]) Prepare(group);
                    var row = w.AsSpan(i * n + c0, width);
                    var err = errors.AsSpan((i - i1) * width, width);
                    Round(row, scale.AsSpan(group * width, width), zero.AsSpan(group * width, width), qmin, qmax, code, err);
                    float d = u[(long)i * k + i];
                    TensorPrimitives.Divide(err, d, err);
                    for (int c = 0; c < width; c++) result.Codes[(long)(c0 + c) * k + original] = (byte)code[c];
                    // Within the lazy block, the rows below take this row's error now.
                    for (int j = i + 1; j < i2; j++)
                    {
                        var target = w.AsSpan(j * n + c0, width);
                        TensorPrimitives.MultiplyAdd(err, -u[(long)i * k + j], target, target);
                    }
                }
                // The rest of the rows take the whole block's errors at once: W[i2:, stripe] -= U[i1:i2, i2:]^T E.
                if (i2 < k)
                    Gemm.Multiply(true, false, k - i2, width, i2 - i1, -1f, u.AsSpan(i1 * k + i2), k, errors, width, 1f, w.AsSpan(i2 * n + c0), n);
            }
            for (int c = 0; c < width; c++)
                for (int g = 0; g < blocks; g++)
                {
                    result.Scales[(long)(c0 + c) * blocks + g] = scale[g * width + c];
                    result.ZeroPoints[(long)(c0 + c) * blocks + g] = (byte)zero[g * width + c];
                }
        }

        /// <summary>Scale and zero point of each column's block <paramref name="group"/>, from its rows' current values.</summary>
        void Prepare(int group)
        {
            int start = group * bs, end = Math.Min(k, start + bs);
            var min = new float[width];
            var max = new float[width];
            w.AsSpan(position[start] * n + c0, width).CopyTo(min);
            min.CopyTo(max.AsSpan());
            for (int r = start + 1; r < end; r++)
            {
                var row = w.AsSpan(position[r] * n + c0, width);
                TensorPrimitives.Min(min, row, min);
                TensorPrimitives.Max(max, row, max);
            }
            for (int c = 0; c < width; c++)
            {
                var (s, z) = BlockQuantized.Params(min[c], max[c], result.Bits, result.Symmetric, halfScales, what);
                scale[group * width + c] = s;
                zero[group * width + c] = z;
            }
            ready[group] = true;
        }

        /// <summary>codes = clamp(round(x / s) + z), error = x - (code - z) s, per column (vectorized).</summary>
        static void Round(ReadOnlySpan<float> x, ReadOnlySpan<float> s, ReadOnlySpan<float> z, int qmin, int qmax, Span<float> codes, Span<float> error)
        {
            int c = 0;
            var lo = Vector256.Create((float)qmin);
            var hi = Vector256.Create((float)qmax);
            for (; c <= x.Length - 8; c += 8)
            {
                var v = Vector256.Create(x.Slice(c, 8));
                var sv = Vector256.Create(s.Slice(c, 8));
                var zv = Vector256.Create(z.Slice(c, 8));
                var q = Vector256.Min(Vector256.Max(Simd.RoundEven(v / sv) + zv, lo), hi);
                q.CopyTo(codes.Slice(c, 8));
                (v - (q - zv) * sv).CopyTo(error.Slice(c, 8));
            }
            for (; c < x.Length; c++)
            {
                float q = Math.Clamp(MathF.Round(x[c] / s[c]) + z[c], qmin, qmax);
                codes[c] = q;
                error[c] = x[c] - (q - z[c]) * s[c];
            }
        }
    }
}

/// <summary>GPTQ's settings.</summary>
public sealed record GptqSettings
{
    /// <summary>Added to H's diagonal, as a percentage of its mean diagonal (the paper's default: 1).</summary>
    public double DampingPercent { get; init; } = 1;
    /// <summary>Visit input rows in order of decreasing H diagonal (most active inputs first).</summary>
    public bool ActOrder { get; init; }
    /// <summary>Rows whose error updates are applied lazily, as one GEMM (the paper's 128; raised to a multiple of the block size).</summary>
    public int LazyBlockSize { get; init; } = 128;

    public void Validate()
    {
        if (!(DampingPercent > 0 && DampingPercent <= 100))
            throw new EngineException("QuantizationDampingInvalid", EngineErrorKind.InvalidArgument, $"-Damping must be a percentage in (0, 100] (got {DampingPercent}).");
        if (LazyBlockSize is < 1 or > 4096)
            throw new EngineException("QuantizationGptqSettingsInvalid", EngineErrorKind.InvalidArgument, $"GPTQ's lazy block size must be 1 to 4096 (got {LazyBlockSize}).");
    }
}
