using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Second moments H = X^T X of layer inputs (X: every calibration token's activation row, [tokens, K]) for GPTQ and
/// the per-layer reconstruction error. The float model runs in ONNX Runtime with the wanted activations added as graph
/// outputs, batch by batch; each batch's rows are gathered until a GEMM's worth (<see cref="RowsPerUpdate"/>) and folded
/// into H, so no more than one batch and one buffer of activations is ever held. When all the matrices would not fit in
/// <see cref="BudgetBytes"/>, the quantizer asks for them in several groups, one pass over the data each
/// (<see cref="WeightOnlyQuantizer"/>).
/// </summary>
internal static class HessianCollector
{
    /// <summary>Memory for the H matrices of one pass.</summary>
    public const long BudgetBytes = 512L << 20;
    const int RowsPerUpdate = 512;
    const int Tile = 256;

    /// <summary>Rows per run when not given: a fixed batch dimension of the first input, else 16 (one row per run is several times slower).</summary>
    public static int DefaultBatchSize(OnnxModel model)
    {
        var first = Runtime.InputSynthesizer.Inputs(model).FirstOrDefault();
        return first is { Shape.Count: > 0 } && long.TryParse(first.Shape[0], out long fixedBatch) && fixedBatch > 0 ? (int)Math.Min(fixedBatch, int.MaxValue) : 16;
    }

    /// <summary>Runs <paramref name="model"/> over <paramref name="data"/> once and returns H for each activation.</summary>
    public static Dictionary<string, float[]> Collect(OnnxModel model, IReadOnlyList<(string Name, int K)> activations, DataSet data, int batchSize,
        IProgress<double>? progress, CancellationToken cancel)
    {
        var sums = activations.DistinctBy(a => a.Name).ToDictionary(a => a.Name, a => new Accumulator(a.Name, a.K), StringComparer.Ordinal);
        using var probe = new ActivationProbe(model, sums.Keys);
        probe.Observe(new InputSource { Data = data, BatchSize = batchSize }, t => sums[t.Name].Add(t.Value.AsFloat()), progress: progress, cancel: cancel);
        return sums.ToDictionary(kv => kv.Key, kv => kv.Value.Finish(), StringComparer.Ordinal);
    }

    /// <summary>H for one activation: rows buffered, then H += X^T X with the engine's GEMM.</summary>
    sealed class Accumulator(string name, int k)
    {
        readonly float[] h = new float[(long)k * k];
        readonly float[] buffer = new float[(long)RowsPerUpdate * k];
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
            tokens += rows;
            rows = 0;
        }

        public float[] Finish()
        {
            Flush();
            if (tokens == 0)
                throw new EngineException("CalibrationTensorNotObserved", EngineErrorKind.InvalidData, $"Calibration never observed activation '{name}' (no calibration rows?).");
            for (int i0 = 0; i0 < k; i0 += Tile)
                for (int j0 = i0 + Tile; j0 < k; j0 += Tile)
                    for (int i = i0; i < Math.Min(k, i0 + Tile); i++)
                        for (int j = j0; j < Math.Min(k, j0 + Tile); j++) h[(long)i * k + j] = h[(long)j * k + i];
            return h;
        }
    }
}
