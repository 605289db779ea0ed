using System.Buffers;

namespace ModelCompression.Native.Kernels;

/// <summary>
/// One serial product: K in KC-deep slices; per slice op(B) packed into NR-wide column strips and op(A) (scaled by
/// alpha) into MR-tall row strips, so the micro-kernels read both with unit stride; C visited in MC×NC tiles that keep
/// their panels in cache.
/// </summary>
public static partial class Gemm
{
    static unsafe void Serial(int mr, int nr, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        int mStrips = (m + mr - 1) / mr, nStrips = (n + nr - 1) / nr;
        int kcMax = Math.Min(KC, k);
        // The 8x32 kernel can read A where it is (rows of A, or columns of a transposed A, which lie like a packed
        // panel with a longer stride): only a partial last strip is packed then.
        bool direct = mr == 8 && alpha == 1f;
        int fullStrips = direct ? m / mr : 0;
        float[] packA = ArrayPool<float>.Shared.Rent(mStrips * mr * kcMax + 16);
        float[] packB = ArrayPool<float>.Shared.Rent(nStrips * nr * kcMax + 16);
        try
        {
            int mTiles = (mStrips + MCStrips - 1) / MCStrips, nTiles = (nStrips + NCStrips - 1) / NCStrips;
            fixed (float* ppa = packA) fixed (float* ppb = packB)
            {
                for (int p0 = 0; p0 < k; p0 += KC)
                {
                    int kc = Math.Min(KC, k - p0);
                    float betaHere = p0 == 0 ? beta : 1f;
                    for (int j = 0; j < nStrips; j++) PackB(b, ldb, transB, p0, kc, j * nr, Math.Min(nr, n - j * nr), nr, ppb + (long)j * nr * kc);
                    for (int i = fullStrips; i < mStrips; i++) PackA(a, lda, transA, p0, kc, i * mr, Math.Min(mr, m - i * mr), mr, alpha, ppa + (long)i * mr * kc);
                    float* aSlice = a + (transA ? (long)p0 * lda : p0);
                    for (int t = 0; t < mTiles * nTiles; t++) Tile(mr, nr, t / nTiles, t % nTiles, mStrips, nStrips, m, n, kc, ppa, ppb, c, ldc, betaHere, aSlice, lda, transA, fullStrips);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(packA);
            ArrayPool<float>.Shared.Return(packB);
        }
    }

    /// <summary>One MC×NC tile of C; strips below <paramref name="direct"/> read A in place (<paramref name="a"/>: this K slice of A), the others from the packed panel.</summary>
    static unsafe void Tile(int mr, int nr, int mt, int nt, int mStrips, int nStrips, int m, int n, int kc, float* pa, float* pb, float* c, int ldc, float beta,
        float* a, int lda, bool transA, int direct)
    {
        int i0 = mt * MCStrips, i1 = Math.Min(mStrips, i0 + MCStrips);
        int j0 = nt * NCStrips, j1 = Math.Min(nStrips, j0 + NCStrips);
        for (int j = j0; j < j1; j++)
        {
            float* bs = pb + (long)j * nr * kc;
            int cols = Math.Min(nr, n - j * nr);
            for (int i = i0; i < i1; i++)
            {
                float* As = pa + (long)i * mr * kc;
                int rows = Math.Min(mr, m - i * mr);
                float* cs = c + (long)i * mr * ldc + j * nr;
                if (i < direct && !transA) Kernel512DirectA(kc, a + (long)i * mr * lda, lda, bs, cs, ldc, beta, cols);
                else if (i < direct) Kernel512(kc, a + i * mr, lda, bs, cs, ldc, beta, rows, cols);
                else if (mr == 8) Kernel512(kc, As, 8, bs, cs, ldc, beta, rows, cols);
                else Kernel256(kc, As, bs, cs, ldc, beta, rows, cols);
            }
        }
    }

    /// <summary>Packs op(A)[row0..row0+rows, p0..p0+kc] as kc columns of mr values (rows past the edge are zero), scaled by alpha.</summary>
    static unsafe void PackA(float* a, int lda, bool trans, int p0, int kc, int row0, int rows, int mr, float alpha, float* dst)
    {
        if (!trans)
        {
            for (int r = 0; r < rows; r++)
            {
                float* src = a + (long)(row0 + r) * lda + p0;
                for (int p = 0; p < kc; p++) dst[p * mr + r] = alpha * src[p];
            }
        }
        else
        {
            for (int p = 0; p < kc; p++)
            {
                float* src = a + (long)(p0 + p) * lda + row0;
                float* d = dst + p * mr;
                for (int r = 0; r < rows; r++) d[r] = alpha * src[r];
            }
        }
        if (rows < mr)
            for (int p = 0; p < kc; p++)
                for (int r = rows; r < mr; r++) dst[p * mr + r] = 0f;
    }

    /// <summary>Packs op(B)[p0..p0+kc, col0..col0+cols] as kc rows of nr values (columns past the edge are zero).</summary>
    static unsafe void PackB(float* b, int ldb, bool trans, int p0, int kc, int col0, int cols, int nr, float* dst)
    {
        if (!trans)
        {
            if (cols == nr)
            {
                for (int p = 0; p < kc; p++)
                    new ReadOnlySpan<float>(b + (long)(p0 + p) * ldb + col0, nr).CopyTo(new Span<float>(dst + p * nr, nr));
                return;
            }
            for (int p = 0; p < kc; p++)
            {
                float* src = b + (long)(p0 + p) * ldb + col0;
                float* d = dst + p * nr;
                int q = 0;
                for (; q < cols; q++) d[q] = src[q];
                for (; q < nr; q++) d[q] = 0f;
            }
        }
        else
        {
            for (int q = 0; q < cols; q++)
            {
                float* src = b + (long)(col0 + q) * ldb + p0;
                for (int p = 0; p < kc; p++) dst[p * nr + q] = src[p];
            }
            for (int q = cols; q < nr; q++)
                for (int p = 0; p < kc; p++) dst[p * nr + q] = 0f;
        }
    }
}
