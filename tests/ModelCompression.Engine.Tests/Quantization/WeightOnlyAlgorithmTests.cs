using ModelCompression.Native;
using ModelCompression.Native.Kernels;

namespace ModelCompression.Engine.Tests.Quantization;

/// <summary>The weight-only algorithms' math, on matrices built here: HQQ against RTN per block, GPTQ against RTN on ||X(W - W_q)||.</summary>
public class WeightOnlyAlgorithmTests
{
    /// <summary>Heavy-tailed weights (a few large values per column), as trained layers have.</summary>
    static float[] Weights(int k, int n, int seed)
    {
        var rng = new Random(seed);
        var w = new float[k * n];
        for (int i = 0; i < w.Length; i++)
        {
            double g = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
            w[i] = (float)(g * 0.02 * (rng.NextDouble() < 0.02 ? 6 : 1));
        }
        return w;
    }

    static double[] BlockErrors(float[] w, BlockQuantized q)
    {
        var back = q.Dequantize();
        var errors = new double[q.N * q.BlocksPerColumn];
        for (int r = 0; r < q.K; r++)
            for (int c = 0; c < q.N; c++)
            {
                double d = w[r * q.N + c] - back[r * q.N + c];
                errors[c * q.BlocksPerColumn + r / q.BlockSize] += d * d;
            }
        return errors;
    }

    [Theory]
    [InlineData(32, true)]
    [InlineData(128, true)]
    [InlineData(32, false)]
    [InlineData(64, false)]
    public void HqqNeverLosesToRoundToNearestOnABlockAndWinsOverall(int blockSize, bool symmetric)
    {
        const int k = 200, n = 37; // a partial last block and a partial last vector of columns
        var w = Weights(k, n, 7);
        var rtn = RoundToNearest.Quantize(w, k, n, 4, blockSize, symmetric);
        var hqq = Hqq.Quantize(w, k, n, 4, blockSize, new HqqSettings(), symmetric: symmetric);
        Assert.Equal(symmetric, hqq.Symmetric);
        double[] r = BlockErrors(w, rtn), h = BlockErrors(w, hqq);
        for (int i = 0; i < r.Length; i++) Assert.True(h[i] <= r[i] * (1 + 1e-5) + 1e-12, $"block {i}: HQQ {h[i]:G6} > RTN {r[i]:G6}");
        Assert.True(h.Sum() < 0.97 * r.Sum(), $"HQQ {h.Sum():G6} vs RTN {r.Sum():G6}");
        if (symmetric) Assert.All(hqq.ZeroPoints, z => Assert.Equal(8, z));
        var (qmin, qmax) = hqq.CodeRange;
        Assert.All(hqq.Codes, c => Assert.InRange(c, qmin, qmax));
    }

    [Fact]
    public void HqqWithoutIterationsIsRoundToNearest()
    {
        var w = Weights(64, 16, 3);
        var rtn = RoundToNearest.Quantize(w, 64, 16, 4, 32, symmetric: false);
        var hqq = Hqq.Quantize(w, 64, 16, 4, 32, new HqqSettings { Iterations = 0 });
        Assert.Equal(rtn.Codes, hqq.Codes);
        Assert.Equal(rtn.Scales, hqq.Scales);
        Assert.Equal(rtn.ZeroPoints, hqq.ZeroPoints);
    }

    /// <summary>Inputs with strongly correlated features of unequal scales (a low-rank signal plus a little noise), as layer inputs are.</summary>
    static float[] Activations(int tokens, int k, int seed)
    {
        var rng = new Random(seed);
        int rank = Math.Max(2, k / 8);
        var z = new float[tokens * rank];
        var mix = new float[rank * k];
        for (int i = 0; i < z.Length; i++) z[i] = (float)(rng.NextDouble() * 2 - 1);
        for (int i = 0; i < mix.Length; i++) mix[i] = (float)(rng.NextDouble() * 2 - 1) * (1 + i % k % 5);
        var x = new float[tokens * k];
        Gemm.Multiply(tokens, k, rank, z, mix, x);
        for (int i = 0; i < x.Length; i++) x[i] += (float)(rng.NextDouble() * 2 - 1) * 0.1f;
        return x;
    }

    static float[] Hessian(float[] x, int tokens, int k)
    {
        var h = new float[k * k];
        Gemm.Multiply(true, false, k, k, tokens, 1f, x, k, x, k, 0f, h, k);
        return h;
    }

    /// <summary>||X (W - W_q)||_F / ||X W||_F computed from X itself.</summary>
    static double OutputError(float[] x, int tokens, int k, int n, float[] w, BlockQuantized q)
    {
        var back = q.Dequantize();
        var d = new float[k * n];
        for (int i = 0; i < d.Length; i++) d[i] = w[i] - back[i];
        var y = new float[tokens * n];
        var e = new float[tokens * n];
        Gemm.Multiply(tokens, n, k, x, w, y);
        Gemm.Multiply(tokens, n, k, x, d, e);
        return Math.Sqrt(e.Sum(v => (double)v * v) / y.Sum(v => (double)v * v));
    }

    [Theory]
    [InlineData(32, false, true)]
    [InlineData(128, false, true)]
    [InlineData(32, true, true)]
    [InlineData(32, false, false)]
    public void GptqLowersTheOutputErrorBelowRoundToNearest(int blockSize, bool actOrder, bool symmetric)
    {
        const int k = 256, n = 48, tokens = 1024;
        var x = Activations(tokens, k, 11);
        var h = Hessian(x, tokens, k);
        var w = Weights(k, n, 5);
        var original = (float[])w.Clone();
        var rtn = RoundToNearest.Quantize(w, k, n, 4, blockSize, symmetric);
        var gptq = Gptq.Quantize(w, k, n, h, 4, blockSize, symmetric, new GptqSettings { ActOrder = actOrder });
        Assert.Equal(original, w); // inputs untouched
        double rtnError = OutputError(x, tokens, k, n, w, rtn), gptqError = OutputError(x, tokens, k, n, w, gptq);
        Assert.True(gptqError < 0.7 * rtnError, $"GPTQ {gptqError:G4} vs RTN {rtnError:G4}");
        // The error computed from H alone is the one computed from X.
        Assert.Equal(gptqError, ReconstructionError.Relative(h, w, gptq), 3);
        Assert.Equal(rtnError, ReconstructionError.Relative(h, w, rtn), 3);
    }

    [Fact]
    public void GptqZeroesWeightsOfInputsThatAreNeverActive()
    {
        const int k = 64, n = 16, tokens = 256;
        var x = Activations(tokens, k, 2);
        for (int t = 0; t < tokens; t++) x[t * k + 10] = 0;
        var w = Weights(k, n, 4);
        var q = Gptq.Quantize(w, k, n, Hessian(x, tokens, k), 4, 32, true, new GptqSettings());
        var back = q.Dequantize();
        for (int c = 0; c < n; c++) Assert.Equal(0f, back[10 * n + c]);
    }

    [Fact]
    public void GptqRefusesNonFiniteWeightsAsAnEngineError()
    {
        var w = Weights(32, 8, 1);
        w[5] = float.NaN;
        var h = new float[32 * 32];
        for (int i = 0; i < 32; i++) h[i * 32 + i] = 1;
        var e = Assert.Throws<EngineException>(() => Gptq.Quantize(w, 32, 8, h, 4, 32, true, new GptqSettings(), what: "layer.weight"));
        Assert.Equal("QuantizationNonFiniteValues", e.ErrorId);
        Assert.Contains("layer.weight", e.Message);
    }

    [Fact]
    public void NonFiniteWeightsInParallelBlocksReachTheCallerAsTheEngineError()
    {
        var w = Weights(512, 64, 1);
        w[300 * 64 + 7] = float.PositiveInfinity;
        var e = Assert.Throws<EngineException>(() => RoundToNearest.Quantize(w, 512, 64, 4, 32, true, what: "big.weight"));
        Assert.Equal("QuantizationNonFiniteValues", e.ErrorId);
        Assert.Throws<EngineException>(() => Hqq.Quantize(w, 512, 64, 4, 32, new HqqSettings()));
    }

    [Theory]
    [InlineData(40)]
    [InlineData(150)] // above the float64 leaf: the recursive, GEMM-based path
    public void InverseCholeskyUpperFactorsTheInverse(int n)
    {
        var x = Activations(4 * n, n, 3);
        var h = Hessian(x, 4 * n, n);
        float mean = Enumerable.Range(0, n).Average(i => h[i * n + i]);
        for (int i = 0; i < n; i++) h[i * n + i] += 0.1f * mean; // well conditioned: the check is the factorisation, not float32's limits
        var u = Cholesky.InverseUpper(h, n)!;
        Assert.NotNull(u);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < i; j++) Assert.Equal(0f, u[i * n + j]);
        // U^T U H = I
        var utu = new float[n * n];
        Gemm.Multiply(true, false, n, n, n, 1f, u, n, u, n, 0f, utu, n);
        var identity = new float[n * n];
        Gemm.Multiply(n, n, n, utu, h, identity);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) Assert.True(Math.Abs(identity[i * n + j] - (i == j ? 1 : 0)) < 2e-3, $"({i},{j}) = {identity[i * n + j]}");
    }

    [Fact]
    public void InverseCholeskyOfAnIndefiniteMatrixIsNull()
    {
        float[] h = [1, 2, 2, 1];
        Assert.Null(Cholesky.InverseUpper(h, 2));
    }

    [Fact]
    public void HalfScalesAreRepresentableInFloat16AndTheCodesUseThem()
    {
        var w = Weights(64, 8, 9);
        var q = RoundToNearest.Quantize(w, 64, 8, 4, 32, true, halfScales: true);
        Assert.All(q.Scales, s => Assert.Equal(s, (float)(Half)s));
        var back = q.Dequantize();
        for (int i = 0; i < w.Length; i++) Assert.True(Math.Abs(back[i] - w[i]) <= q.Scales[(i % 8) * 2 + i / 8 / 32] * 0.51f);
    }
}
