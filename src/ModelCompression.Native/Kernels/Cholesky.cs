namespace ModelCompression.Native.Kernels;

/// <summary>
/// Cholesky factorisation and triangular inversion of symmetric positive definite matrices (row-major, float32), blocked
/// recursively so that nearly all the work is in the engine's <see cref="Gemm"/>; blocks of 64 and less are factored in
/// float64.
/// </summary>
public static class Cholesky
{
    const int Leaf = 64;

    /// <summary>
    /// The upper triangular U with H^-1 = U^T U (what GPTQ needs), or null when H is not positive definite.
    /// With P the order-reversing permutation and P H P = L L^T, H = (P L P)(P L P)^T, so U = P L^-1 P: one factorisation
    /// and one triangular inversion, no explicit inverse of H. <paramref name="h"/> is left unchanged;
    /// <paramref name="damping"/> is added to its diagonal first.
    /// </summary>
    public static float[]? InverseUpper(ReadOnlySpan<float> h, int n, float damping = 0)
    {
        if ((long)n * n > h.Length) throw new ArgumentException("The matrix holds fewer than n*n values.", nameof(h));
        var a = new float[(long)n * n];
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j < n; j++) a[(long)i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)];
            a[(long)i * n + i] += damping;
        }
        var x = new float[(long)n * n];
        if (!FactorAndInvert(a, 0, n, x, 0, n, n)) return null;
        var u = a; // reuse: U[i, j] = X[n-1-i, n-1-j]
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) u[(long)i * n + j] = x[(long)(n - 1 - i) * n + (n - 1 - j)];
        return u;
    }

    /// <summary>
    /// Factors the n x n block of <paramref name="a"/> at <paramref name="ao"/> (leading dimension lda) as L L^T, L
    /// overwriting its lower triangle, and writes L^-1 (zeros above the diagonal) into <paramref name="x"/> at xo.
    /// </summary>
    static bool FactorAndInvert(float[] a, int ao, int lda, float[] x, int xo, int ldx, int n)
    {
        if (n <= Leaf) return Leaf64(a, ao, lda, x, xo, ldx, n);
        int h = n / 2, m = n - h;
        if (!FactorAndInvert(a, ao, lda, x, xo, ldx, h)) return false;
        int a21 = ao + h * lda, a22 = a21 + h, x21 = xo + h * ldx, x22 = x21 + h;
        // L21 = A21 L11^-T
        var t = new float[(long)m * h];
        Gemm.Multiply(false, true, m, h, h, 1f, a.AsSpan(a21), lda, x.AsSpan(xo), ldx, 0f, t, h);
        for (int r = 0; r < m; r++) t.AsSpan(r * h, h).CopyTo(a.AsSpan(a21 + r * lda, h));
        // A22 -= L21 L21^T, then L22 and its inverse
        Gemm.Multiply(false, true, m, m, h, -1f, a.AsSpan(a21), lda, a.AsSpan(a21), lda, 1f, a.AsSpan(a22), lda);
        if (!FactorAndInvert(a, a22, lda, x, x22, ldx, m)) return false;
        // X21 = -L22^-1 L21 L11^-1, X12 = 0
        Gemm.Multiply(false, false, m, h, h, 1f, a.AsSpan(a21), lda, x.AsSpan(xo), ldx, 0f, t, h);
        Gemm.Multiply(false, false, m, h, m, -1f, x.AsSpan(x22), ldx, t, h, 0f, x.AsSpan(x21), ldx);
        for (int r = 0; r < h; r++) x.AsSpan(xo + r * ldx + h, m).Clear();
        return true;
    }

    static bool Leaf64(float[] a, int ao, int lda, float[] x, int xo, int ldx, int n)
    {
        Span<double> l = stackalloc double[n * n];
        l.Clear();
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j <= i; j++)
            {
                double sum = a[ao + i * lda + j];
                for (int p = 0; p < j; p++) sum -= l[i * n + p] * l[j * n + p];
                if (i == j)
                {
                    if (!(sum > 0) || double.IsInfinity(sum)) return false;
                    l[i * n + i] = Math.Sqrt(sum);
                }
                else l[i * n + j] = sum / l[j * n + j];
            }
        }
        // Columns of L^-1 by forward substitution.
        Span<double> inv = stackalloc double[n * n];
        inv.Clear();
        for (int c = 0; c < n; c++)
        {
            inv[c * n + c] = 1 / l[c * n + c];
            for (int i = c + 1; i < n; i++)
            {
                double sum = 0;
                for (int p = c; p < i; p++) sum += l[i * n + p] * inv[p * n + c];
                inv[i * n + c] = -sum / l[i * n + i];
            }
        }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                if (j <= i) a[ao + i * lda + j] = (float)l[i * n + j];
                x[xo + i * ldx + j] = (float)inv[i * n + j];
            }
        return true;
    }
}
