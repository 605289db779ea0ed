namespace ModelCompression.Native.Kernels;

/// <summary>
/// How far a quantized layer's outputs are from the original's on given inputs, from the inputs' second moments
/// H = X^T X alone: ||X W - X W_q||_F / ||X W||_F = sqrt(tr(D^T H D) / tr(W^T H W)) with D = W - W_q.
/// H is symmetric, so tr(M^T H M) = sum over tiles i, j of M_i^T H_ij M_j needs only the tiles on and below the
/// diagonal (those below counted twice): half a GEMM's work, in stripes of columns so memory stays a few stripes wide.
/// </summary>
public static class ReconstructionError
{
    const int StripeColumns = 256;
    const int Tile = 256;

    /// <summary>The relative error; 0 when both the outputs and the error are zero.</summary>
    public static double Relative(ReadOnlySpan<float> hessian, ReadOnlySpan<float> weight, BlockQuantized quantized)
    {
        int k = quantized.K, n = quantized.N, blocks = quantized.BlocksPerColumn, bs = quantized.BlockSize;
        if ((long)k * k > hessian.Length || (long)k * n > weight.Length) throw new ArgumentException("Hessian or weight too short for the quantized shape.");
        double errorEnergy = 0, outputEnergy = 0;
        int stripe = Math.Min(StripeColumns, n);
        var m = new float[(long)k * 2 * stripe];
        var z = new float[(long)Tile * 2 * stripe];
        for (int c0 = 0; c0 < n; c0 += stripe)
        {
            int width = Math.Min(stripe, n - c0), ld = 2 * width;
            // M = [W_stripe | D_stripe]
            for (int r = 0; r < k; r++)
                for (int c = 0; c < width; c++)
                {
                    long col = c0 + c, p = col * blocks + r / bs;
                    float wv = weight[r * n + (int)col];
                    m[(long)r * ld + c] = wv;
                    m[(long)r * ld + width + c] = wv - (quantized.Codes[col * k + r] - quantized.ZeroPoints[p]) * quantized.Scales[p];
                }
            for (int i0 = 0; i0 < k; i0 += Tile)
                for (int j0 = 0; j0 <= i0; j0 += Tile)
                {
                    int rows = Math.Min(Tile, k - i0), inner = Math.Min(Tile, k - j0);
                    // Z = H_ij M_j, then M_i . Z
                    Gemm.Multiply(false, false, rows, ld, inner, 1f, hessian[(i0 * k + j0)..], k, m.AsSpan(j0 * ld), ld, 0f, z, ld);
                    double weightPart = 0, errorPart = 0;
                    for (int r = 0; r < rows; r++)
                    {
                        var mi = m.AsSpan((i0 + r) * ld, ld);
                        var zr = z.AsSpan(r * ld, ld);
                        for (int c = 0; c < width; c++) weightPart += (double)mi[c] * zr[c];
                        for (int c = width; c < ld; c++) errorPart += (double)mi[c] * zr[c];
                    }
                    double factor = i0 == j0 ? 1 : 2;
                    outputEnergy += factor * weightPart;
                    errorEnergy += factor * errorPart;
                }
        }
        if (outputEnergy <= 0) return errorEnergy <= 0 ? 0 : double.PositiveInfinity;
        return Math.Sqrt(Math.Max(0, errorEnergy) / outputEnergy);
    }
}
