using ModelCompression.Native.Kernels;

namespace ModelCompression.Engine.Tests.Training;

public class GemmTests
{
    static void Reference(bool ta, bool tb, int m, int n, int k, float alpha, float[] a, int lda, float[] b, int ldb, float beta, double[] c, int ldc)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++)
                    s += (double)(ta ? a[p * lda + i] : a[i * lda + p]) * (tb ? b[j * ldb + p] : b[p * ldb + j]);
                c[i * ldc + j] = alpha * s + (beta == 0 ? 0 : beta * c[i * ldc + j]);
            }
    }

    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(7, 5, 3)]
    [InlineData(6, 16, 256)]
    [InlineData(8, 32, 257)]
    [InlineData(33, 65, 17)]
    [InlineData(40, 47, 130)]
    [InlineData(50, 90, 260)]
    [InlineData(3, 700, 9)]
    [InlineData(24, 40, 1200)]   // a small C over a long K: cut along K (weight gradients)
    public void MatchesReferenceForAllTransposesAlphaBeta(int m, int n, int k)
    {
        // every micro-kernel this machine can run: Vector512, Vector256 and the portable rows
        foreach (var path in Gemm.Available)
        {
            Gemm.Forced = path;
            try { Check(m, n, k); }
            finally { Gemm.Forced = null; }
        }
    }

    static void Check(int m, int n, int k)
    {
        var rng = new Random(m * 1000 + n * 10 + k);
        foreach (bool ta in new[] { false, true })
            foreach (bool tb in new[] { false, true })
                foreach (var (alpha, beta) in new[] { (1f, 0f), (0.5f, 1f), (-2f, 0.25f) })
                {
                    // padded leading dimensions catch stride mistakes
                    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 1, ldc = n + 2;
                    var a = TestModels.RandomWeights(rng, (ta ? k : m) * lda, 1f);
                    var b = TestModels.RandomWeights(rng, (tb ? n : k) * ldb, 1f);
                    var c = TestModels.RandomWeights(rng, m * ldc, 1f);
                    var expected = c.Select(v => (double)v).ToArray();
                    Reference(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, expected, ldc);
                    Gemm.Multiply(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < ldc; j++)
                        {
                            double e = expected[i * ldc + j];
                            Assert.True(Math.Abs(c[i * ldc + j] - e) <= 1e-4 * Math.Sqrt(k) * (1 + Math.Abs(e)),
                                $"{Gemm.Forced} ta={ta} tb={tb} alpha={alpha} beta={beta} [{i},{j}]: {c[i * ldc + j]} vs {e}");
                        }
                }
    }

    [Fact]
    public void BetaZeroIgnoresGarbageInC()
    {
        var a = new float[] { 1, 2, 3, 4 };
        var b = new float[] { 1, 0, 0, 1 };
        var c = new float[] { float.NaN, float.NaN, float.NaN, float.NaN };
        Gemm.Multiply(2, 2, 2, a, b, c);
        Assert.Equal(a, c);
    }

    [Theory]
    [InlineData(300, 280, 600)]
    [InlineData(64, 48, 4096)]
    public void SameResultWithOneOrAllThreads(int m, int n, int k)
    {
        var rng = new Random(5);
        var a = TestModels.RandomWeights(rng, m * k, 1f);
        var b = TestModels.RandomWeights(rng, k * n, 1f);
        var c1 = new float[m * n]; var c2 = new float[m * n];
        Gemm.Multiply(m, n, k, a, b, c1);
        int saved = Gemm.MaxThreads;
        try { Gemm.MaxThreads = 1; Gemm.Multiply(m, n, k, a, b, c2); }
        finally { Gemm.MaxThreads = saved; }
        Assert.Equal(c1, c2);
    }

    [Theory]
    [InlineData(false, false, 10)]   // [batch, m, k] x [batch, k, n]
    [InlineData(false, true, 10)]    // B transposed (attention's Q·Kᵀ)
    [InlineData(true, false, 0)]     // one B shared by every product
    public void BatchedProductsEqualOneProductEach(bool transA, bool transB, int strideBFactor)
    {
        // 40 products of 32x32x24: together above the parallel threshold, so they are spread over the cores whole
        int batch = 40, m = 32, n = 32, k = 24;
        var rng = new Random(9);
        int sa = m * k, sb = strideBFactor == 0 ? 0 : k * n, sc = m * n + 5;
        var a = TestModels.RandomWeights(rng, batch * sa, 1f);
        var b = TestModels.RandomWeights(rng, Math.Max(1, batch * sb) + k * n, 1f);
        var c = TestModels.RandomWeights(rng, batch * sc, 1f);
        var expected = (float[])c.Clone();
        int lda = transA ? m : k, ldb = transB ? k : n;
        for (int i = 0; i < batch; i++)
            Gemm.Multiply(transA, transB, m, n, k, 0.5f, a.AsSpan(i * sa), lda, b.AsSpan(i * sb), ldb, 0.25f, expected.AsSpan(i * sc), n);
        Gemm.MultiplyBatched(batch, transA, transB, m, n, k, 0.5f, a, sa, lda, b, sb, ldb, 0.25f, c, sc, n);
        Assert.Equal(expected, c);
        Assert.Throws<ArgumentException>(() => Gemm.MultiplyBatched(batch, transA, transB, m, n, k, 1f, a, sa, lda, b, sb, ldb, 0f, c, m * n - 1, n));
    }
}
