using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// L2 norms of input activations per channel over calibration data, gathered in ONNX Runtime by the activation probe.
/// </summary>
internal static class ActivationStats
{
    /// <summary>Per tensor, the L2 norm of every channel along its axis (negative axis: from the end), over all rows of the data.</summary>
    public static Dictionary<string, double[]> ChannelNorms(OnnxModel model, IReadOnlyCollection<(string Tensor, int Axis)> wanted,
        DataSet data, int batchSize, IProgress<double>? progress, CancellationToken cancel)
    {
        var axes = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (tensor, axis) in wanted)
        {
            if (axes.TryGetValue(tensor, out int existing) && existing != axis)
                throw new EngineException("PruningActivationAxisConflict", EngineErrorKind.InvalidOperation, $"Tensor '{tensor}' is read along two different channel axes.");
            axes[tensor] = axis;
        }
        var sums = new Dictionary<string, double[]>(StringComparer.Ordinal);
        using var probe = new ActivationProbe(model, axes.Keys);
        probe.Observe(new InputSource { Data = data, BatchSize = batchSize }, t => Accumulate(sums, t.Name, t.Value, axes[t.Name]), progress: progress, cancel: cancel);
        return sums.ToDictionary(kv => kv.Key, kv => kv.Value.Select(Math.Sqrt).ToArray(), StringComparer.Ordinal);
    }

    static void Accumulate(Dictionary<string, double[]> sums, string name, NamedArray array, int axis)
    {
        var shape = array.Shape;
        int rank = shape.Length;
        int a = axis < 0 ? rank + axis : axis;
        if (a < 0 || a >= rank)
            throw new EngineException("PruningActivationShape", EngineErrorKind.InvalidData, $"Activation '{name}' has rank {rank}; it has no channel axis {axis}.");
        int channels = (int)shape[a];
        long inner = 1;
        for (int i = a + 1; i < rank; i++) inner *= shape[i];
        if (!sums.TryGetValue(name, out var sum)) sums[name] = sum = new double[channels];
        if (sum.Length != channels)
            throw new EngineException("PruningActivationShape", EngineErrorKind.InvalidData, $"Activation '{name}' changes its channel count between batches.");
        float[] values = array.AsFloat();
        for (long p = 0; p < values.Length; p++)
        {
            int c = (int)(p / inner % channels);
            double v = values[p];
            sum[c] += v * v;
        }
    }
}
