namespace ModelCompression.Native.Kernels;

/// <summary>
/// How far a quantized layer's outputs are from the original's on given inputs, from the inputs' second moments
/// H = X^T X alone: ||X W - X W_q||_F / ||X W||_F = sqrt(tr(D^T H D) / tr(W^T H W)) with D = W - W_q.
/// Computed in stripes of columns with the engine's GEMM, so memory stays a few stripes wide.
/// </summary>
public static class ReconstructionError
{
    const int StripeColumns = 256;

    /// <summary>The relative error; 0 when both the outputs and the error are zero.</summary>
    public static double Relative(ReadOnlySpan<float> hessian, ReadOnlySpan<float> weight, BlockQuantized quantized)
    {
        int k = quantized.K, n = quantized.N, blocks = quantized.BlocksPerColumn, bs = quantized.BlockSize;
        if ((long)k * k > hessian.Length || (long)k * n > weight.Length) throw new ArgumentException("Hessian or weight too short for the quantized shape.");
        double errorEnergy = 0, outputEnergy = 0;
        int stripe = Math.Min(StripeColumns, n);
        var m = new float[(long)k * 2 * stripe];
        var y = new float[(long)k * 2 * stripe];
        for (int c0 = 0; c0 < n; c0 += stripe)
        {
            int width = Math.Min(stripe, n - c0), ld = 2 * width;
            // M = [W_stripe | D_stripe], Y = H M
            for (int r = 0; r < k; r++)
                for (int c = 0; c < width; c++)
                {
                    long col = c0 + c, p = col * blocks + r / bs;
                    float wv = weight[r * n + (int)col];
                    m[(long)r * ld + c] = wv;
                    m[(long)r * ld + width + c] = wv - (quantized.Codes[col * k + r] - quantized.ZeroPoints[p]) * quantized.Scales[p];
                }
            Gemm.Multiply(false, false, k, ld, k, 1f, hessian, k, m, ld, 0f, y, ld);
            for (long i = 0; i < (long)k * ld; i++)
            {
                if (i % ld < width) outputEnergy += (double)m[i] * y[i];
                else errorEnergy += (double)m[i] * y[i];
            }
        }
        if (outputEnergy <= 0) return errorEnergy <= 0 ? 0 : double.PositiveInfinity;
        return Math.Sqrt(Math.Max(0, errorEnergy) / outputEnergy);
    }
}
