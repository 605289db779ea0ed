using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Measures activation ranges by running the float model in ONNX Runtime on calibration data, batch by batch.
/// Only one batch of activations is in memory at a time: MinMax keeps running extremes; Percentile and Entropy
/// make a second pass that accumulates fixed-range histograms (range from the first pass).
/// </summary>
internal static class Calibrator
{
    public const int HistogramBins = 2048;
    /// <summary>Below this many observed values a histogram says too little to clip by: MinMax is used for that tensor.</summary>
    public const long MinHistogramCount = 4096;

    public static Dictionary<string, (float Min, float Max)> Run(OnnxModel model, IReadOnlyCollection<string> tensors, DataSet data,
        CalibrationMethod method, double percentile, int batchSize, IProgress<QuantizationProgress>? progress, CancellationToken cancel)
    {
        var inputs = new InputSource { Data = data, BatchSize = batchSize };
        int passes = method == CalibrationMethod.MinMax ? 1 : 2;

        using var probe = new ActivationProbe(model, tensors);
        var min = tensors.ToDictionary(t => t, _ => float.PositiveInfinity, StringComparer.Ordinal);
        var max = tensors.ToDictionary(t => t, _ => float.NegativeInfinity, StringComparer.Ordinal);
        Dictionary<string, long[]>? hist = null;

        for (int pass = 0; pass < passes; pass++)
        {
            if (pass == 1) hist = tensors.ToDictionary(t => t, _ => new long[HistogramBins], StringComparer.Ordinal);
            string phase = $"Calibrating ({method}{(passes > 1 ? $", pass {pass + 1} of {passes}" : "")})";
            probe.Observe(inputs, t => Observe(t.Name, t.Value.AsFloat(), pass),
                progress: new ProgressRelay(f => progress?.Report(new QuantizationProgress(phase, (pass + f) / passes))), cancel: cancel);
        }

        var result = new Dictionary<string, (float, float)>(StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (float.IsPositiveInfinity(min[t]))
                throw new EngineException("CalibrationTensorNotObserved", EngineErrorKind.InvalidData, $"Calibration never observed tensor '{t}' (no calibration rows?).");
            result[t] = method switch
            {
                CalibrationMethod.MinMax => (min[t], max[t]),
                CalibrationMethod.Percentile => Percentile(hist![t], min[t], max[t], percentile),
                _ => Entropy(hist![t], min[t], max[t]),
            };
        }
        return result;

        void Observe(string name, float[] values, int pass)
        {
            if (pass == 0)
            {
                var (mn, mx) = Kernels.QuantMath.MinMax(values, name);
                if (mn < min[name]) min[name] = mn;
                if (mx > max[name]) max[name] = mx;
                return;
            }
            // Pass 2: signed histogram over [min, max] for Percentile, |x| over [0, max|x|] for Entropy.
            var h = hist![name];
            if (method == CalibrationMethod.Percentile)
            {
                float lo = min[name], width = (max[name] - lo) / HistogramBins;
                if (width <= 0) { h[0] += values.Length; return; }
                foreach (float v in values) h[Math.Clamp((int)((v - lo) / width), 0, HistogramBins - 1)]++;
            }
            else
            {
                float top = MathF.Max(MathF.Abs(min[name]), MathF.Abs(max[name])), width = top / HistogramBins;
                if (width <= 0) { h[0] += values.Length; return; }
                // Exact zeros (ReLU outputs, padding) are always representable (ranges include 0); left in, their mass
                // would dominate the divergence and pull the threshold far too low.
                foreach (float v in values) if (v != 0) h[Math.Min((int)(MathF.Abs(v) / width), HistogramBins - 1)]++;
            }
        }
    }

    /// <summary>Range between the (100-p) and p percentiles of a signed histogram over [min, max].</summary>
    internal static (float, float) Percentile(long[] hist, float min, float max, double p)
    {
        long total = hist.Sum();
        if (total < MinHistogramCount || max <= min) return (min, max);
        double width = (max - min) / (double)hist.Length;
        double tail = total * (100 - p) / 100;
        long acc = 0;
        int lo = 0;
        for (; lo < hist.Length - 1; lo++) { if (acc + hist[lo] > tail) break; acc += hist[lo]; }
        acc = 0;
        int hi = hist.Length - 1;
        for (; hi > lo; hi--) { if (acc + hist[hi] > tail) break; acc += hist[hi]; }
        return ((float)(min + lo * width), (float)(min + (hi + 1) * width));
    }

    /// <summary>
    /// Threshold on |x| that minimizes the KL divergence between the clipped distribution and its 128-level
    /// quantization (the classic entropy calibration), applied to both ends of the observed range.
    /// </summary>
    internal static (float, float) Entropy(long[] hist, float min, float max)
    {
        const int levels = 128;
        float top = MathF.Max(MathF.Abs(min), MathF.Abs(max));
        long total = hist.Sum();
        if (total < MinHistogramCount || top == 0) return (min, max);
        int best = hist.Length;
        double bestKl = double.PositiveInfinity;
        var p = new double[hist.Length];
        var q = new double[hist.Length];
        for (int i = levels; i <= hist.Length; i += 16)
        {
            // Reference: bins [0, i) with the clipped tail folded into the last bin.
            for (int j = 0; j < i; j++) p[j] = hist[j];
            for (int j = i; j < hist.Length; j++) p[i - 1] += hist[j];
            // Candidate: the unclipped bins merged into `levels` groups, spread back uniformly over their non-empty bins
            // (the clipped mass is not in it: that is what the divergence charges for clipping).
            for (int g = 0; g < levels; g++)
            {
                int start = g * i / levels, end = (g + 1) * i / levels;
                double sum = 0; int nonEmpty = 0;
                for (int j = start; j < end; j++) { sum += hist[j]; if (hist[j] != 0) nonEmpty++; }
                for (int j = start; j < end; j++) q[j] = hist[j] != 0 ? sum / nonEmpty : 0;
            }
            double sp = 0, sq = 0;
            for (int j = 0; j < i; j++) { sp += p[j]; sq += q[j]; }
            double kl = 0;
            for (int j = 0; j < i; j++)
            {
                if (p[j] == 0) continue;
                double pj = p[j] / sp, qj = q[j] / sq;
                kl += qj == 0 ? 1e3 * pj : pj * Math.Log(pj / qj);
            }
            if (kl < bestKl) { bestKl = kl; best = i; }
        }
        float threshold = top * best / hist.Length;
        float lo = MathF.Max(min, -threshold), hi = MathF.Min(max, threshold);
        // A one-signed distribution entirely beyond the threshold: clipping would leave no range; keep what was seen.
        return lo <= hi ? (lo, hi) : (min, max);
    }
}
