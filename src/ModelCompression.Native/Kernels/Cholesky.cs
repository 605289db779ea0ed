namespace ModelCompression.Native.Kernels;

/// <summary>
/// Cholesky factorisation and triangular inversion of symmetric positive definite matrices (row-major, float32), blocked
/// recursively so that nearly all the work is in the engine's <see cref="Gemm"/>: products with a triangular factor
/// recurse on its halves and skip its zero half (2n^3/3 flops in all, LAPACK's count for the two steps); blocks of 64
/// and less are factored in float64.
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
            for (int j = 0; j <= i; j++) a[(long)i * n + j] = h[(n - 1 - i) * n + (n - 1 - j)]; // the lower triangle is all that is read
            a[(long)i * n + i] += damping;
        }
        var x = new float[(long)n * n];
        if (!FactorAndInvert(new(a, 0, n), new(x, 0, n), n)) return null;
        var u = a; // reuse: U[i, j] = X[n-1-i, n-1-j]
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) u[(long)i * n + j] = x[(long)(n - 1 - i) * n + (n - 1 - j)];
        return u;
    }

    /// <summary>A block of a row-major matrix: its array, the offset of its first element, the leading dimension.</summary>
    readonly record struct Block(float[] Data, int Offset, int Ld)
    {
        public Block At(int row, int col) => this with { Offset = Offset + row * Ld + col };
        public Span<float> Span => Data.AsSpan(Offset);
    }

    /// <summary>
    /// Factors the n x n block <paramref name="a"/> as L L^T (L overwrites its lower triangle; only the lower triangle
    /// is read) and writes L^-1 (zeros above the diagonal) into <paramref name="x"/>.
    /// </summary>
    static bool FactorAndInvert(Block a, Block x, int n)
    {
        if (n <= Leaf) return Leaf64(a, x, n);
        int h = n / 2, m = n - h;
        if (!FactorAndInvert(a, x, h)) return false;
        Block a21 = a.At(h, 0), a22 = a.At(h, h), x21 = x.At(h, 0), x22 = x.At(h, h);
        // L21 = A21 L11^-T
        var t = new Block(new float[(long)m * h], 0, h);
        TimesLowerTransposed(m, h, a21, x, t);
        for (int r = 0; r < m; r++) t.Data.AsSpan(r * h, h).CopyTo(a21.Data.AsSpan(a21.Offset + r * a21.Ld, h));
        // A22 -= L21 L21^T (its lower triangle), then L22 and its inverse
        LowerRankUpdate(m, h, a21, a22);
        if (!FactorAndInvert(a22, x22, m)) return false;
        // X21 = -L22^-1 L21 L11^-1, X12 = 0
        TimesLower(m, h, a21, x, t);
        LowerTimes(m, h, -1f, x22, t, 0f, x21);
        for (int r = 0; r < h; r++) x.Data.AsSpan(x.Offset + r * x.Ld + h, m).Clear();
        return true;
    }

    /// <summary>C (m x n) = A (m x n) L^T, L lower (n x n): [A1 A2] [L11^T L21^T; 0 L22^T] = [A1 L11^T, A1 L21^T + A2 L22^T].</summary>
    static void TimesLowerTransposed(int m, int n, Block a, Block l, Block c)
    {
        if (n <= Leaf) { Gemm.Multiply(false, true, m, n, n, 1f, a.Span, a.Ld, l.Span, l.Ld, 0f, c.Span, c.Ld); return; }
        int h = n / 2;
        TimesLowerTransposed(m, h, a, l, c);
        TimesLowerTransposed(m, n - h, a.At(0, h), l.At(h, h), c.At(0, h));
        Gemm.Multiply(false, true, m, n - h, h, 1f, a.Span, a.Ld, l.At(h, 0).Span, l.Ld, 1f, c.At(0, h).Span, c.Ld);
    }

    /// <summary>C (m x n) = A (m x n) L, L lower (n x n): [A1 A2] [L11 0; L21 L22] = [A1 L11 + A2 L21, A2 L22].</summary>
    static void TimesLower(int m, int n, Block a, Block l, Block c)
    {
        if (n <= Leaf) { Gemm.Multiply(false, false, m, n, n, 1f, a.Span, a.Ld, l.Span, l.Ld, 0f, c.Span, c.Ld); return; }
        int h = n / 2;
        TimesLower(m, h, a, l, c);
        Gemm.Multiply(false, false, m, h, n - h, 1f, a.At(0, h).Span, a.Ld, l.At(h, 0).Span, l.Ld, 1f, c.Span, c.Ld);
        TimesLower(m, n - h, a.At(0, h), l.At(h, h), c.At(0, h));
    }

    /// <summary>C (m x n) = alpha L B + beta C, L lower (m x m): [L11 0; L21 L22] [B1; B2] = [L11 B1; L21 B1 + L22 B2].</summary>
    static void LowerTimes(int m, int n, float alpha, Block l, Block b, float beta, Block c)
    {
        if (m <= Leaf) { Gemm.Multiply(false, false, m, n, m, alpha, l.Span, l.Ld, b.Span, b.Ld, beta, c.Span, c.Ld); return; }
        int h = m / 2;
        LowerTimes(h, n, alpha, l, b, beta, c);
        Gemm.Multiply(false, false, m - h, n, h, alpha, l.At(h, 0).Span, l.Ld, b.Span, b.Ld, beta, c.At(h, 0).Span, c.Ld);
        LowerTimes(m - h, n, alpha, l.At(h, h), b.At(h, 0), 1f, c.At(h, 0));
    }

    /// <summary>The lower triangle of C (m x m) -= A A^T, A m x k: [C11; C21 C22] -= [A1 A1^T; A2 A1^T, A2 A2^T].</summary>
    static void LowerRankUpdate(int m, int k, Block a, Block c)
    {
        if (m <= Leaf) { Gemm.Multiply(false, true, m, m, k, -1f, a.Span, a.Ld, a.Span, a.Ld, 1f, c.Span, c.Ld); return; }
        int h = m / 2;
        LowerRankUpdate(h, k, a, c);
        Gemm.Multiply(false, true, m - h, h, k, -1f, a.At(h, 0).Span, a.Ld, a.Span, a.Ld, 1f, c.At(h, 0).Span, c.Ld);
        LowerRankUpdate(m - h, k, a.At(h, 0), c.At(h, h));
    }

    static bool Leaf64(Block a, Block x, int n)
    {
        Span<double> l = stackalloc double[n * n];
        l.Clear();
        for (int i = 0; i < n; i++)
        {
            for (int j = 0; j <= i; j++)
            {
                double sum = a.Data[a.Offset + i * a.Ld + j];
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
                if (j <= i) a.Data[a.Offset + i * a.Ld + j] = (float)l[i * n + j];
                x.Data[x.Offset + i * x.Ld + j] = (float)inv[i * n + j];
            }
        return true;
    }
}
