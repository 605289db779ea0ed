using ModelCompression.Native.Kernels;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// What calibration saw at one layer input X [tokens, K]: H = X^T X, the mean |x| of each channel, and a sample of
/// rows (every row when the layer saw no more than <see cref="ActivationStatistics.SampleRows"/> tokens).
/// </summary>
internal sealed class LayerStatistics(int k, Func<float[]> hessian, float[] meanAbs, float[] sample, int sampleRows, long tokens)
{
    readonly Lazy<float[]> h = new(hessian);
    /// <summary>A product buffer the searches reuse (their many evaluations would otherwise each fault in fresh pages).</summary>
    float[]? product;

    public LayerStatistics(int k, float[] hessian, float[] meanAbs, float[] sample, int sampleRows, long tokens)
        : this(k, () => hessian, meanAbs, sample, sampleRows, tokens) { }

    public int K { get; } = k;
    /// <summary>H = X^T X (for scaled statistics, made when first asked for: a large model's AWQ with exact rows never needs it).</summary>
    public float[] Hessian => h.Value;
    public float[] MeanAbs { get; } = meanAbs;
    /// <summary>Rows of X, [SampleRows, K].</summary>
    public float[] Sample { get; } = sample;
    public int SampleRows { get; } = sampleRows;
    public long Tokens { get; } = tokens;
    /// <summary>The sample is X itself.</summary>
    public bool SampleIsExact => SampleRows == Tokens;

    /// <summary>The statistics of X diag(1/s): what a layer whose input was scaled down by s sees.</summary>
    public LayerStatistics Scaled(float[] s)
    {
        float[] ScaledHessian()
        {
            var source = Hessian;
            var scaled = new float[source.Length];
            Parallelism.Each(0, K, i =>
            {
                float si = 1f / s[i];
                for (int j = 0; j < K; j++) scaled[(long)i * K + j] = source[(long)i * K + j] * si / s[j];
            });
            return scaled;
        }
        var x = new float[Sample.Length];
        for (int r = 0; r < SampleRows; r++)
            for (int c = 0; c < K; c++) x[(long)r * K + c] = Sample[(long)r * K + c] / s[c];
        return new LayerStatistics(K, ScaledHessian, MeanAbs.Select((m, c) => m / s[c]).ToArray(), x, SampleRows, Tokens);
    }

    /// <summary>The layer's relative output error ||X(W - W_q)|| / ||X W|| on every calibration token, by the cheaper exact route.</summary>
    public double RelativeError(ReadOnlySpan<float> weight, BlockQuantized q)
    {
        if (!SampleIsExact || SampleRows >= K) return ReconstructionError.Relative(Hessian, weight, q);
        var d = ReconstructionError.Difference(weight, q);
        return ReconstructionError.Ratio(ReconstructionError.RowEnergy(Sample, SampleRows, K, q.N, d), ReconstructionError.RowEnergy(Sample, SampleRows, K, q.N, weight));
    }

    /// <summary>
    /// Whether a search that evaluates many candidates of an [K, <paramref name="n"/>] weight should measure them on the
    /// rows (an estimate unless the sample is exact, cheaper for wide inputs) rather than on H (exact, K^2 N per candidate).
    /// </summary>
    public bool SearchOnRows(int n) => SampleRows < K && (SampleIsExact || (long)K * K * n > 1L << 30);

    /// <summary>||X d_c||^2 for each column of a difference D [K, N], measured as <see cref="SearchOnRows"/> says.</summary>
    public double[] ColumnErrors(float[] difference, int n)
    {
        bool rows = SearchOnRows(n);
        int m = rows ? SampleRows : K;
        if (product is null || product.Length < (long)m * n) product = new float[(long)m * n];
        if (rows) Gemm.Multiply(false, false, m, n, K, 1f, Sample, K, difference, n, 0f, product, n);
        else Gemm.Multiply(false, false, K, n, K, 1f, Hessian, K, difference, n, 0f, product, n);
        var errors = new double[n];
        for (int r = 0; r < m; r++)
            for (int c = 0; c < n; c++)
            {
                float p = product[(long)r * n + c];
                errors[c] += rows ? (double)p * p : (double)difference[(long)r * n + c] * p;
            }
        return errors;
    }
}
