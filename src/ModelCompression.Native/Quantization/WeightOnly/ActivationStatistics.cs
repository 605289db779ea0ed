using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Statistics of layer inputs (X: every calibration token's activation row, [tokens, K]) for GPTQ, AWQ and the per-layer
/// output error: H = X^T X, the mean |x| of each input channel, and a sample of rows (all of them when there are few).
/// The float model runs in ONNX Runtime with the wanted activations added as graph outputs, batch by batch; each batch's
/// rows are gathered until a GEMM's worth (<see cref="RowsPerUpdate"/>) and folded into H, so no more than one batch and
/// one buffer of activations is ever held. When all the statistics would not fit in <see cref="BudgetBytes"/>, the
/// quantizer asks for them in several groups, one pass over the data each (<see cref="WeightOnlyQuantizer"/>).
/// </summary>
internal static class ActivationStatistics
{
    /// <summary>Memory for the statistics of one pass.</summary>
    public const long BudgetBytes = 512L << 20;
    /// <summary>Memory for the statistics of one segment of a model too large for one session (its weights and GPTQ's work come on top).</summary>
    public const long SegmentBudgetBytes = 256L << 20;
    /// <summary>Rows kept per activation: AWQ's scale search runs on them, and when a layer saw no more tokens than this they are X itself.</summary>
    public const int SampleRows = 512;
    const int RowsPerUpdate = 512;
    const int Tile = 256;

    /// <summary>Bytes the statistics of an input of width <paramref name="k"/> take.</summary>
    public static long Bytes(int k) => 4L * k * k + 4L * SampleRows * k;

    /// <summary>Rows per run when not given: a fixed batch dimension of the first input, else 16 (one row per run is several times slower).</summary>
    public static int DefaultBatchSize(OnnxModel model)
    {
        var first = InputSynthesizer.Inputs(model).FirstOrDefault();
        return first is { Shape.Count: > 0 } && long.TryParse(first.Shape[0], out long fixedBatch) && fixedBatch > 0 ? (int)Math.Min(fixedBatch, int.MaxValue) : 16;
    }

    /// <summary>Runs <paramref name="model"/> over <paramref name="data"/> once and returns the statistics of each activation.</summary>
    public static Dictionary<string, LayerStatistics> Collect(OnnxModel model, IReadOnlyList<(string Name, int K)> activations, DataSet data, int batchSize,
        IProgress<double>? progress, CancellationToken cancel)
    {
        var sums = activations.DistinctBy(a => a.Name).ToDictionary(a => a.Name, a => new Accumulator(a.Name, a.K), StringComparer.Ordinal);
        using var probe = new ActivationProbe(model, sums.Keys);
        probe.Observe(new InputSource { Data = data, BatchSize = batchSize }, t => sums[t.Name].Add(t.Value.AsFloat()), progress: progress, cancel: cancel);
        return sums.ToDictionary(kv => kv.Key, kv => kv.Value.Finish(), StringComparer.Ordinal);
    }

    /// <summary>
    /// The same for a model <see cref="ActivationProbe.ObserveInSegments"/> runs in segments: after each segment, the statistics of the
    /// activations it produced, so the caller can quantize their layers and let the statistics go before the next.
    /// </summary>
    public static IEnumerable<Dictionary<string, LayerStatistics>> CollectInSegments(OnnxModel model, IReadOnlyList<(string Name, int K)> activations, DataSet data, int batchSize,
        IProgress<double>? progress, CancellationToken cancel)
    {
        var widths = activations.DistinctBy(a => a.Name).ToDictionary(a => a.Name, a => a.K, StringComparer.Ordinal);
        var sums = new Dictionary<string, Accumulator>(StringComparer.Ordinal);
        void Observe(ProbedTensor t)
        {
            if (!sums.TryGetValue(t.Name, out var acc)) sums[t.Name] = acc = new Accumulator(t.Name, widths[t.Name]);
            acc.Add(t.Value.AsFloat());
        }
        foreach (var done in ActivationProbe.ObserveInSegments(model, [.. widths.Keys], new InputSource { Data = data, BatchSize = batchSize }, Observe,
            name => Bytes(widths[name]), SegmentBudgetBytes, progress, cancel))
        {
            var finished = new Dictionary<string, LayerStatistics>(StringComparer.Ordinal);
            foreach (var name in done)
            {
                if (!sums.Remove(name, out var acc))
                    throw new EngineException("CalibrationTensorNotObserved", EngineErrorKind.InvalidData, $"Calibration never observed activation '{name}' (no calibration rows?).");
                finished[name] = acc.Finish();
            }
            yield return finished;
        }
    }

    /// <summary>One activation's statistics: rows buffered, then H += X^T X with the engine's GEMM; |x| sums and a reservoir sample on the way.</summary>
    sealed class Accumulator(string name, int k)
    {
        readonly float[] h = new float[(long)k * k];
        readonly double[] absSum = new double[k];
        readonly float[] buffer = new float[(long)RowsPerUpdate * k];
        readonly float[] sample = new float[(long)SampleRows * k];
        readonly Random random = new(17);
        int rows;
        long tokens;

        public void Add(float[] values)
        {
            if (values.Length % k != 0)
                throw new EngineException("CalibrationActivationShapeInvalid", EngineErrorKind.InvalidData,
                    $"Activation '{name}' has {values.Length} values per batch, not a multiple of its width {k}; the calibration data does not match the model.");
            for (int offset = 0; offset < values.Length;)
            {
                int take = Math.Min(RowsPerUpdate - rows, (values.Length - offset) / k);
                values.AsSpan(offset, take * k).CopyTo(buffer.AsSpan(rows * k));
                rows += take;
                offset += take * k;
                if (rows == RowsPerUpdate) Flush();
            }
        }

        void Flush()
        {
            if (rows == 0) return;
            QuantMath.MinMax(buffer.AsSpan(0, rows * k), $"activation '{name}'");
            // H is symmetric: only the tiles on and below the diagonal (half the work), mirrored at the end.
            for (int i0 = 0; i0 < k; i0 += Tile)
                for (int j0 = 0; j0 <= i0; j0 += Tile)
                {
                    int m = Math.Min(Tile, k - i0), n = Math.Min(Tile, k - j0);
                    Gemm.Multiply(true, false, m, n, rows, 1f, buffer.AsSpan(i0), k, buffer.AsSpan(j0), k, 1f, h.AsSpan(i0 * k + j0), k);
                }
            for (int r = 0; r < rows; r++)
            {
                var row = buffer.AsSpan(r * k, k);
                for (int c = 0; c < k; c++) absSum[c] += Math.Abs(row[c]);
                // Reservoir sampling: every row seen so far is in the sample with the same probability.
                long seen = tokens + r;
                long slot = seen < SampleRows ? seen : random.NextInt64(seen + 1);
                if (slot < SampleRows) row.CopyTo(sample.AsSpan((int)(slot * k), k));
            }
            tokens += rows;
            rows = 0;
        }

        public LayerStatistics Finish()
        {
            Flush();
            if (tokens == 0)
                throw new EngineException("CalibrationTensorNotObserved", EngineErrorKind.InvalidData, $"Calibration never observed activation '{name}' (no calibration rows?).");
            for (int i0 = 0; i0 < k; i0 += Tile)
                for (int j0 = i0 + Tile; j0 < k; j0 += Tile)
                    for (int i = i0; i < Math.Min(k, i0 + Tile); i++)
                        for (int j = j0; j < Math.Min(k, j0 + Tile); j++) h[(long)i * k + j] = h[(long)j * k + i];
            int kept = (int)Math.Min(tokens, SampleRows);
            return new LayerStatistics(k, h, absSum.Select(s => (float)(s / tokens)).ToArray(), kept == SampleRows ? sample : sample[..(kept * k)], kept, tokens);
        }
    }
}
