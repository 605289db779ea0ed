namespace ModelCompression.Native.Kernels;

/// <summary>
/// How far a quantized layer's outputs are from the original's on given inputs X: ||X D||_F / ||X W||_F with D = W - W_q,
/// either from the inputs' second moments H = X^T X alone (sqrt(tr(D^T H D) / tr(W^T H W))) or from rows of X.
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
        var (error, output) = Energies(hessian, weight, quantized);
        return Ratio(error, output);
    }

    /// <summary>sqrt(error / output) of two energies; 0 when both are zero.</summary>
    public static double Ratio(double error, double output) =>
        output <= 0 ? (error <= 0 ? 0 : double.PositiveInfinity) : Math.Sqrt(Math.Max(0, error) / output);

    /// <summary>||X D||_F^2 and ||X W||_F^2 from H = X^T X, with D = W - dequantized(<paramref name="quantized"/>).</summary>
    public static (double Error, double Output) Energies(ReadOnlySpan<float> hessian, ReadOnlySpan<float> weight, BlockQuantized quantized) =>
        Energies(hessian, quantized.K, quantized.N, weight, Difference(weight, quantized));

    /// <summary>W - dequantized(q), [K, N] row-major.</summary>
    public static float[] Difference(ReadOnlySpan<float> weight, BlockQuantized q)
    {
        var d = q.Dequantize();
        for (int i = 0; i < d.Length; i++) d[i] = weight[i] - d[i];
        return d;
    }

    /// <summary>tr(D^T H D) and tr(W^T H W) for [K, N] row-major W and D.</summary>
    public static (double Error, double Output) Energies(ReadOnlySpan<float> hessian, int k, int n, ReadOnlySpan<float> weight, ReadOnlySpan<float> difference)
    {
        if ((long)k * k > hessian.Length || (long)k * n > weight.Length || (long)k * n > difference.Length)
            throw new ArgumentException("Hessian, weight or difference too short for the shape.");
        double errorEnergy = 0, outputEnergy = 0;
        int stripe = Math.Min(StripeColumns, n);
        var m = new float[(long)k * 2 * stripe];
        var z = new float[(long)Tile * 2 * stripe];
        for (int c0 = 0; c0 < n; c0 += stripe)
        {
            int width = Math.Min(stripe, n - c0), ld = 2 * width;
            // M = [W_stripe | D_stripe]
            for (int r = 0; r < k; r++)
            {
                weight.Slice(r * n + c0, width).CopyTo(m.AsSpan(r * ld, width));
                difference.Slice(r * n + c0, width).CopyTo(m.AsSpan(r * ld + width, width));
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
        return (errorEnergy, outputEnergy);
    }

    /// <summary>||X M||_F^2 for rows X [rows, K] and M [K, N] (a weight or a difference), with the engine's GEMM.</summary>
    public static double RowEnergy(ReadOnlySpan<float> x, int rows, int k, int n, ReadOnlySpan<float> m)
    {
        var y = new float[(long)rows * n];
        Gemm.Multiply(false, false, rows, n, k, 1f, x, k, m, n, 0f, y, n);
        double sum = 0;
        foreach (float v in y) sum += (double)v * v;
        return sum;
    }
}
