using ModelCompression.Native.Kernels;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Activation-aware weight quantization (AWQ; Lin et al., 2023). Input channels that carry large activations matter
/// most, so before rounding, the weights of the layers that read one input are scaled up per input channel by
/// s = mean|x|^alpha (normalised so that max(s) min(s) = 1) and the input is scaled down by the same s, folded into what
/// produces it (<see cref="ScaleFolding"/>) or applied by an inserted Mul: the output is unchanged in float, and the
/// salient channels get finer levels. alpha comes from a grid search over [0, 1) that minimises the layers' output error
/// ||X W - X W_q|| on the calibration activations (alpha = 0 is plain rounding, so the search never does worse on them).
/// Then, when the codes are rounded to nearest, each output column's range is clipped: the shrink factor of its blocks'
/// largest values (1 down to 0.55) that minimises the column's whole output error. (Clipping block by block, each on
/// its own share of the error as AutoAWQ does, lowered the layers' errors but raised tiny_lm's and tiny_llama's
/// perplexity; one factor per column judged on the whole column did not. Before GPTQ, which compensates the rounding
/// itself, clipping raised the layers' errors, so AWQ then GPTQ scales only.) The codes of the scaled weight are chosen
/// by round to nearest or by the algorithm that follows (-Algorithm AWQ, GPTQ).
/// </summary>
public sealed record AwqAlgorithm : WeightOnlyAlgorithm
{
    /// <summary>Points of the grid over alpha (AutoAWQ's 20).</summary>
    public int Grid { get; init; } = 20;
    /// <summary>Clip shrink factors tried per column: 1, 0.95, ... (10 steps down to 0.55, AutoAWQ's max_shrink 0.5).</summary>
    public int ClipSteps { get; init; } = 10;
    /// <summary>The algorithm that chooses the codes of the scaled weights.</summary>
    public WeightOnlyAlgorithm Codes { get; init; } = new RoundToNearestAlgorithm();

    public override string Name => Codes is RoundToNearestAlgorithm ? "AWQ" : $"AWQ+{Codes.Name}";
    public override bool NeedsCalibrationData => true;

    internal override WeightOnlyAlgorithm Then(WeightOnlyAlgorithm codes) => this with { Codes = codes };

    internal override float[]? InputScales(InputGroup group, CancellationToken cancel)
    {
        var stats = group.Statistics;
        var magnitude = stats.MeanAbs.Select(m => MathF.Max(m, 1e-4f)).ToArray();
        var buffers = group.Members.Select(m => new float[m.Weight.Length]).ToList();
        float[]? best = null;
        double bestError = double.PositiveInfinity;
        for (int step = 0; step < Grid; step++)
        {
            cancel.ThrowIfCancellationRequested();
            float alpha = (float)step / Grid;
            var s = magnitude.Select(m => MathF.Max(MathF.Pow(m, alpha), 1e-4f)).ToArray();
            float norm = MathF.Sqrt(s.Max() * s.Min());
            for (int c = 0; c < s.Length; c++) s[c] /= norm;
            double error = 0;
            for (int i = 0; i < group.Members.Count; i++)
            {
                var (weight, l) = group.Members[i];
                // W - diag(1/s) Q(diag(s) W), Q rounding to nearest
                RoundingDifference.Compute(weight, l.K, l.N, l.Bits, l.BlockSize, l.Symmetric, l.HalfScales, s, null, buffers[i]);
                error += stats.ColumnErrors(buffers[i], l.N).Sum();
            }
            if (error < bestError) { bestError = error; best = step == 0 ? null : s; }
        }
        return best;
    }

    internal override BlockQuantized Quantize(float[] weight, WeightOnlyLayerSettings l, CancellationToken cancel)
    {
        if (l.Statistics is not { } stats || Codes is not RoundToNearestAlgorithm) return Codes.Quantize(weight, l, cancel);
        return Codes.Quantize(Clipped(weight, l, stats, cancel), l, cancel);
    }

    /// <summary>A copy of the weight with each column clipped to the shrink of its blocks' ranges that minimises the column's output error.</summary>
    float[] Clipped(float[] w, WeightOnlyLayerSettings l, LayerStatistics stats, CancellationToken cancel)
    {
        int k = l.K, n = l.N;
        var best = new float[n];
        var bestError = Enumerable.Repeat(double.PositiveInfinity, n).ToArray();
        var difference = new float[w.Length];
        var shrink = new float[n];
        for (int step = 0; step < ClipSteps; step++)
        {
            cancel.ThrowIfCancellationRequested();
            Array.Fill(shrink, 1f - 0.05f * step);
            RoundingDifference.Compute(w, k, n, l.Bits, l.BlockSize, l.Symmetric, l.HalfScales, null, shrink, difference);
            var errors = stats.ColumnErrors(difference, n);
            for (int c = 0; c < n; c++) if (errors[c] < bestError[c]) { bestError[c] = errors[c]; best[c] = shrink[c]; }
        }
        var clipped = (float[])w.Clone();
        Parallelism.Each(0, n, c =>
        {
            if (best[c] == 1) return;
            for (int g0 = 0; g0 < k; g0 += l.BlockSize)
            {
                int g1 = Math.Min(k, g0 + l.BlockSize);
                var (lo, hi) = BlockRange(w, n, c, g0, g1, l.Symmetric);
                for (int r = g0; r < g1; r++) clipped[(long)r * n + c] = Math.Clamp(w[(long)r * n + c], lo * best[c], hi * best[c]);
            }
        });
        return clipped;
    }

    /// <summary>A block's range as its codes see it: [min, max], or [-max|w|, max|w|] when symmetric.</summary>
    static (float Lo, float Hi) BlockRange(float[] w, int n, int c, int g0, int g1, bool symmetric)
    {
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        for (int r = g0; r < g1; r++) { float v = w[(long)r * n + c]; min = MathF.Min(min, v); max = MathF.Max(max, v); }
        if (!symmetric) return (min, max);
        float m = MathF.Max(-min, max);
        return (-m, m);
    }
}
