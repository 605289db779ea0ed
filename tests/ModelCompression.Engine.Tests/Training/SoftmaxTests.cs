using ModelCompression.Native.Kernels;

namespace ModelCompression.Engine.Tests.Training;

/// <summary>The engine's one softmax / log-softmax against double-precision references.</summary>
public class SoftmaxTests
{
    static double[] LogSoftmaxReference(float[] x, double scale)
    {
        double max = (double)x.Max() * scale;
        double lse = max + Math.Log(x.Sum(v => Math.Exp((double)v * scale - max)));
        return x.Select(v => (double)v * scale - lse).ToArray();
    }

    static float[] Random(int n, double spread, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * spread)).ToArray();
    }

    [Theory]
    [InlineData(3, 1.0, 1f)]
    [InlineData(256, 8.0, 1f)]
    [InlineData(256, 8.0, 0.25f)]
    [InlineData(1000, 1000.0, 1f)]      // values far beyond where exp overflows in float
    [InlineData(50_000, 20.0, 0.5f)]    // a large vocabulary: many chunks of the double-precision sum
    public void LogRowMatchesADoublePrecisionReference(int n, double spread, float scale)
    {
        var x = Random(n, spread, n);
        var y = new float[n];
        Softmax.LogRow(x, y, scale);
        var expected = LogSoftmaxReference(x, scale);
        for (int i = 0; i < n; i++) Assert.True(Math.Abs(y[i] - expected[i]) <= 1e-6 * Math.Max(1, Math.Abs(expected[i])), $"{i}: {y[i]} vs {expected[i]}");
        double max = (double)x.Max() * scale;
        Assert.Equal(max + Math.Log(x.Sum(v => Math.Exp((double)v * scale - max))), Softmax.LogSumExp(x, scale), 9);
    }

    [Fact]
    public void CrossEntropyIsTheNegativeLogProbabilityOfTheLabelToDoublePrecision()
    {
        float[] x = [2, 1, 0, -3];
        double expected = Math.Log(Math.Exp(2) + Math.Exp(1) + Math.Exp(0) + Math.Exp(-3)) - 0;
        Assert.Equal(expected, Softmax.CrossEntropy(x, 2), 13);
    }

    [Fact]
    public void RowIsAProbabilityDistributionEvenForLargeScoresAndInPlace()
    {
        float[] x = [1000f, 1000f, 999f, -1e30f];
        Softmax.Row(x, x);
        Assert.All(x, v => Assert.True(float.IsFinite(v) && v >= 0));
        Assert.Equal(1.0, x.Sum(v => (double)v), 6);
        double e = Math.Exp(-1);
        Assert.Equal(1 / (2 + e), x[0], 6);
        Assert.Equal(0f, x[3]);
    }

    [Fact]
    public void NaNPropagatesAndTheScaleMustBePositive()
    {
        float[] x = [1f, float.NaN, 2f];
        var y = new float[3];
        Softmax.LogRow(x, y);
        Assert.All(y, v => Assert.True(float.IsNaN(v)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Softmax.LogSumExp(x, 0f));
    }
}
