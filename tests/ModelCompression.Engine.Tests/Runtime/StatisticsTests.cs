using ModelCompression.Native;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Engine.Tests.Runtime;

public class StatisticsTests
{
    [Fact]
    public void SummaryOfOneToTenMatchesHandComputedValues()
    {
        var s = Statistics.Summarize([7, 3, 10, 1, 5, 2, 9, 4, 8, 6]);
        Assert.Equal(10, s.Count);
        Assert.Equal(5.5, s.Mean, 12);
        Assert.Equal(Math.Sqrt(55.0 / 6), s.StdDev, 12); // sample standard deviation (n-1)
        Assert.Equal(1, s.Min);
        Assert.Equal(10, s.Max);
        Assert.Equal(5.5, s.P50, 12);
        Assert.Equal(9.1, s.P90, 12);   // h = 9 * 0.9 = 8.1 -> 9 + 0.1 * (10 - 9)
        Assert.Equal(9.55, s.P95, 12);
        Assert.Equal(9.91, s.P99, 12);
    }

    [Theory]
    [InlineData(0.25, 1.75)]  // NumPy: np.percentile([3,1,4,1,5,9,2,6], 25) == 1.75
    [InlineData(0.5, 3.5)]
    [InlineData(0.9, 6.9)]
    [InlineData(0, 1)]
    [InlineData(1, 9)]
    public void PercentileInterpolatesBetweenClosestRanksLikeNumPy(double p, double expected)
    {
        Assert.Equal(expected, Statistics.Percentile([3, 1, 4, 1, 5, 9, 2, 6], p), 12);
    }

    [Fact]
    public void EmptySampleIsRefused()
    {
        var e = Assert.Throws<EngineException>(() => Statistics.Summarize([]));
        Assert.Equal("SampleEmpty", e.ErrorId);
    }

    [Fact]
    public void BootstrapMedianOfOddSampleFollowsTheExactBinomialDistribution()
    {
        // For odd n the resample median is x(j) or smaller exactly when at least k=(n+1)/2 of the n draws fall on x(1..j):
        // P(median <= x(j)) = P(Binomial(n, j/n) >= k). Compare the order-statistic sampler's empirical CDF with it.
        const int n = 21, draws = 40000;
        var sorted = Enumerable.Range(1, n).Select(i => (double)i).ToArray();
        var rng = new Statistics.SplitMix(7);
        var counts = new int[n + 1];
        for (int i = 0; i < draws; i++) counts[(int)Statistics.BootstrapMedian(sorted, rng)]++;
        double cumulative = 0, worst = 0;
        for (int j = 1; j <= n; j++)
        {
            cumulative += counts[j];
            double exact = BinomialAtLeast(n, (double)j / n, (n + 1) / 2);
            worst = Math.Max(worst, Math.Abs(cumulative / draws - exact));
        }
        // Kolmogorov-Smirnov: the 99.9% critical value for 40000 draws is about 1.95 / sqrt(40000) = 0.0098.
        Assert.True(worst < 0.0098, $"largest CDF difference {worst}");
    }

    [Fact]
    public void BootstrapMedianOfEvenSampleMatchesBruteForceResampling()
    {
        const int n = 20, draws = 40000;
        var data = new Random(3);
        var sorted = Enumerable.Range(0, n).Select(_ => Math.Round(data.NextDouble() * 100, 1)).Order().ToArray();
        var fast = new Statistics.SplitMix(11);
        var slow = new Random(12);
        var a = Enumerable.Range(0, draws).Select(_ => Statistics.BootstrapMedian(sorted, fast)).ToArray();
        var b = Enumerable.Range(0, draws).Select(_ => Statistics.BruteForceBootstrapMedian(sorted, slow)).ToArray();
        // The two distributions (supported on midpoints of pairs of order statistics) agree: total variation distance
        // and the 2.5/50/97.5 percentiles.
        var pa = a.GroupBy(v => v).ToDictionary(g => g.Key, g => (double)g.Count() / draws);
        var pb = b.GroupBy(v => v).ToDictionary(g => g.Key, g => (double)g.Count() / draws);
        double tv = pa.Keys.Union(pb.Keys).Sum(k => Math.Abs(pa.GetValueOrDefault(k) - pb.GetValueOrDefault(k))) / 2;
        Assert.True(tv < 0.03, $"total variation distance {tv}");
        Assert.Equal(Statistics.Median(b), Statistics.Median(a), 0);
        double spread = sorted[^1] - sorted[0];
        foreach (double p in new[] { 0.025, 0.975 })
            Assert.True(Math.Abs(Statistics.Percentile(a, p) - Statistics.Percentile(b, p)) <= 0.05 * spread, $"percentile {p}");
    }

    [Fact]
    public void RatioOfMediansIsDeterministicForASeed()
    {
        var a = LogNormal(300, 1.0, 1);
        var b = LogNormal(300, 1.0, 2);
        var x = Statistics.MedianRatio(a, b, seed: 5);
        var y = Statistics.MedianRatio(a, b, seed: 5);
        Assert.Equal(x, y);
        Assert.NotEqual(x.Lower, Statistics.MedianRatio(a, b, seed: 6).Lower);
    }

    [Fact]
    public void SamplesFromOneDistributionGiveAnIntervalAroundOne()
    {
        var r = Statistics.MedianRatio(LogNormal(400, 2.0, 1), LogNormal(400, 2.0, 2));
        Assert.InRange(r.Ratio, 0.9, 1.1);
        Assert.True(r.Lower < 1 && r.Upper > 1, $"[{r.Lower}, {r.Upper}]");
        Assert.False(r.Significant);
    }

    [Fact]
    public void TwentyPercentSlowerSampleIsSignificant()
    {
        var slow = LogNormal(400, 2.0, 1).Select(v => v * 1.2).ToArray();
        var r = Statistics.MedianRatio(slow, LogNormal(400, 2.0, 2));
        Assert.InRange(r.Ratio, 1.1, 1.3);
        Assert.True(r.Lower > 1, $"[{r.Lower}, {r.Upper}]");
        Assert.True(r.Significant);
        Assert.InRange(1.2, r.Lower, r.Upper);
    }

    [Fact]
    public void IntervalHasRoughlyItsNominalCoverage()
    {
        // 300 pairs of samples from one distribution: a 90% interval should exclude 1 about 10% of the time.
        int excluded = 0;
        for (int i = 0; i < 300; i++)
        {
            var r = Statistics.MedianRatio(LogNormal(101, 1.0, 1000 + i), LogNormal(101, 1.0, 5000 + i), 0.90, 1000, (ulong)i);
            if (r.Significant) excluded++;
        }
        Assert.InRange(excluded, 12, 54); // 4%..18%: binomial(300, 0.1) is within this range with probability > 0.999
    }

    [Fact]
    public void BadConfidenceLevelIsRefused()
    {
        var e = Assert.Throws<EngineException>(() => Statistics.MedianRatio([1, 2], [1, 2], 1.0));
        Assert.Equal("ConfidenceLevelOutOfRange", e.ErrorId);
    }

    static double[] LogNormal(int n, double median, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ =>
        {
            double z = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
            return median * Math.Exp(0.3 * z);
        }).ToArray();
    }

    static double BinomialAtLeast(int n, double p, int k)
    {
        double total = 0;
        for (int i = k; i <= n; i++) total += Math.Exp(LogChoose(n, i) + i * Math.Log(p) + (n - i) * Math.Log(1 - p + 1e-300));
        return Math.Min(1, total);
    }

    static double LogChoose(int n, int k)
    {
        double r = 0;
        for (int i = 1; i <= k; i++) r += Math.Log(n - k + i) - Math.Log(i);
        return r;
    }
}
