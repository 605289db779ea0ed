namespace ModelCompression.Native.Runtime;

/// <summary>Summary statistics of one sample of timings (any unit; the caller's).</summary>
public sealed record SampleSummary(int Count, double Mean, double StdDev, double Min, double P50, double P90, double P95, double P99, double Max);

/// <summary>A ratio with a confidence interval.</summary>
public sealed record RatioEstimate(double Ratio, double Lower, double Upper, double ConfidenceLevel, int Resamples)
{
    /// <summary>The interval excludes 1: the two samples differ at this confidence level.</summary>
    public bool Significant => Lower > 1 || Upper < 1;
}

/// <summary>
/// Descriptive statistics and the bootstrap used by latency measurement. Percentiles interpolate linearly
/// between closest ranks (NumPy's default, Hyndman-Fan type 7); the standard deviation is the sample one (n-1).
/// </summary>
public static class Statistics
{
    public static SampleSummary Summarize(IReadOnlyList<double> sample)
    {
        if (sample.Count == 0) throw new EngineException("SampleEmpty", EngineErrorKind.InvalidArgument, "There are no timings to summarize.");
        var sorted = sample.ToArray();
        Array.Sort(sorted);
        double mean = 0;
        foreach (double v in sorted) mean += v;
        mean /= sorted.Length;
        double ss = 0;
        foreach (double v in sorted) ss += (v - mean) * (v - mean);
        double sd = sorted.Length > 1 ? Math.Sqrt(ss / (sorted.Length - 1)) : 0;
        return new SampleSummary(sorted.Length, mean, sd, sorted[0],
            PercentileOfSorted(sorted, 0.50), PercentileOfSorted(sorted, 0.90), PercentileOfSorted(sorted, 0.95),
            PercentileOfSorted(sorted, 0.99), sorted[^1]);
    }

    /// <summary>The <paramref name="p"/>-quantile (0..1) of an ascending sample, interpolating between closest ranks.</summary>
    public static double PercentileOfSorted(ReadOnlySpan<double> sorted, double p)
    {
        if (sorted.Length == 0) throw new EngineException("SampleEmpty", EngineErrorKind.InvalidArgument, "There are no values to take a percentile of.");
        if (p is < 0 or > 1 || double.IsNaN(p)) throw new ArgumentOutOfRangeException(nameof(p), p, "A quantile is between 0 and 1.");
        double h = (sorted.Length - 1) * p;
        int lo = (int)Math.Floor(h);
        int hi = Math.Min(lo + 1, sorted.Length - 1);
        return sorted[lo] + (h - lo) * (sorted[hi] - sorted[lo]);
    }

    public static double Percentile(IEnumerable<double> sample, double p)
    {
        var sorted = sample.ToArray();
        Array.Sort(sorted);
        return PercentileOfSorted(sorted, p);
    }

    public static double Median(IEnumerable<double> sample) => Percentile(sample, 0.5);

    /// <summary>
    /// median(<paramref name="sample"/>) / median(<paramref name="baseline"/>) with a percentile-bootstrap confidence
    /// interval: both samples are resampled independently (with replacement) <paramref name="resamples"/> times.
    /// Deterministic for a given <paramref name="seed"/>.
    /// </summary>
    /// <remarks>
    /// A resample's median is drawn directly instead of by building the resample: the k-th smallest of n indices drawn
    /// uniformly from 0..n-1 is floor(n·U₍ₖ₎), where U₍ₖ₎, the k-th order statistic of n uniforms, is Beta(k, n-k+1)
    /// distributed; for an even n the next order statistic is U₍ₖ₎ + (1-U₍ₖ₎)·V with V ~ Beta(1, n-k). This is exactly
    /// the bootstrap distribution of the median, at a cost independent of the sample size, so a run of a million
    /// iterations is bootstrapped as fast as one of a hundred.
    /// </remarks>
    public static RatioEstimate MedianRatio(IReadOnlyList<double> sample, IReadOnlyList<double> baseline,
        double confidenceLevel = 0.95, int resamples = 10000, ulong seed = 1234)
    {
        if (sample.Count == 0 || baseline.Count == 0)
            throw new EngineException("SampleEmpty", EngineErrorKind.InvalidArgument, "A ratio of medians needs timings on both sides.");
        if (confidenceLevel is <= 0 or >= 1 || double.IsNaN(confidenceLevel))
            throw new EngineException("ConfidenceLevelOutOfRange", EngineErrorKind.InvalidArgument, $"Confidence level {confidenceLevel} is not between 0 and 1 (exclusive).");
        if (resamples < 100)
            throw new EngineException("BootstrapResamplesOutOfRange", EngineErrorKind.InvalidArgument, $"{resamples} bootstrap resamples are too few; use at least 100.");
        var a = sample.ToArray(); Array.Sort(a);
        var b = baseline.ToArray(); Array.Sort(b);
        double medB = PercentileOfSorted(b, 0.5);
        double ratio = medB == 0 ? double.NaN : PercentileOfSorted(a, 0.5) / medB;
        var rng = new SplitMix(seed);
        var ratios = new double[resamples];
        for (int i = 0; i < resamples; i++)
        {
            double mb = BootstrapMedian(b, rng);
            ratios[i] = mb == 0 ? double.PositiveInfinity : BootstrapMedian(a, rng) / mb;
        }
        Array.Sort(ratios);
        double alpha = 1 - confidenceLevel;
        return new RatioEstimate(ratio, PercentileOfSorted(ratios, alpha / 2), PercentileOfSorted(ratios, 1 - alpha / 2), confidenceLevel, resamples);
    }

    /// <summary>The median of one bootstrap resample of an ascending sample, drawn through the order statistics of uniforms.</summary>
    internal static double BootstrapMedian(double[] sorted, SplitMix rng)
    {
        int n = sorted.Length;
        if (n == 1) return sorted[0];
        int k = (n + 1) / 2;                       // 1-based rank of the (lower) median
        double u = Beta(rng, k, n - k + 1);
        double x = sorted[Index(u, n)];
        if (n % 2 == 1) return x;
        double v = 1 - Math.Pow(rng.NextDouble(), 1.0 / (n - k)); // Beta(1, n-k): the smallest of n-k uniforms
        double u2 = u + (1 - u) * v;
        return (x + sorted[Index(u2, n)]) / 2;
    }

    static int Index(double u, int n) => Math.Min(n - 1, (int)(u * n));

    /// <summary>The median of one bootstrap resample built element by element, the slow way (tests compare against it).</summary>
    internal static double BruteForceBootstrapMedian(double[] sorted, Random rng)
    {
        var r = new double[sorted.Length];
        for (int i = 0; i < r.Length; i++) r[i] = sorted[rng.Next(sorted.Length)];
        Array.Sort(r);
        return PercentileOfSorted(r, 0.5);
    }

    static double Beta(SplitMix rng, double a, double b)
    {
        double x = Gamma(rng, a), y = Gamma(rng, b);
        return x / (x + y);
    }

    /// <summary>Gamma(shape, 1) for shape ≥ 1 (Marsaglia and Tsang's squeeze method).</summary>
    static double Gamma(SplitMix rng, double shape)
    {
        double d = shape - 1.0 / 3, c = 1 / Math.Sqrt(9 * d);
        while (true)
        {
            double z, v;
            do { z = rng.NextNormal(); v = 1 + c * z; } while (v <= 0);
            v = v * v * v;
            double u = rng.NextDouble();
            if (u < 1 - 0.0331 * z * z * z * z) return d * v;
            if (Math.Log(u) < 0.5 * z * z + d * (1 - v + Math.Log(v))) return d * v;
        }
    }

    /// <summary>A small deterministic generator (SplitMix64), stable across .NET versions.</summary>
    internal sealed class SplitMix(ulong seed)
    {
        ulong state = seed;
        double? spare;

        public ulong Next()
        {
            ulong z = state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        /// <summary>Uniform in (0, 1).</summary>
        public double NextDouble() => ((Next() >> 11) + 0.5) * (1.0 / (1UL << 53));

        public double NextNormal()
        {
            if (spare is { } s) { spare = null; return s; }
            double u1 = NextDouble(), u2 = NextDouble(), mag = Math.Sqrt(-2 * Math.Log(u1));
            spare = mag * Math.Sin(2 * Math.PI * u2);
            return mag * Math.Cos(2 * Math.PI * u2);
        }
    }
}
