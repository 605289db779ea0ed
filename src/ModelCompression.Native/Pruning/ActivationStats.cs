using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// L2 norms of input activations per channel over calibration data, gathered in ONNX Runtime: a copy of the model
/// exposes each wanted tensor as an extra graph output and runs the data through in batches.
/// </summary>
internal static class ActivationStats
{
    /// <summary>Per tensor, the L2 norm of every channel along its axis (negative axis: from the end), over all rows of the data.</summary>
    public static Dictionary<string, double[]> ChannelNorms(OnnxModel model, IReadOnlyCollection<(string Tensor, int Axis)> wanted,
        DataSet data, int batchSize, IProgress<double>? progress, CancellationToken cancel)
    {
        var proto = model.Proto.Clone();
        var outputs = proto.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var inputs = InputSynthesizer.Inputs(model).Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var axes = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (tensor, axis) in wanted)
        {
            if (axes.TryGetValue(tensor, out int existing) && existing != axis)
                throw new EngineException("PruningActivationAxisConflict", EngineErrorKind.InvalidOperation, $"Tensor '{tensor}' is read along two different channel axes.");
            axes[tensor] = axis;
            if (!inputs.Contains(tensor) && outputs.Add(tensor)) proto.Graph.Output.Add(new ValueInfoProto { Name = tensor });
        }
        var fromSession = axes.Keys.Where(t => !inputs.Contains(t)).ToList();
        var sums = new Dictionary<string, double[]>(StringComparer.Ordinal);
        using var session = new ModelSession(new OnnxModel(proto, model.SourcePath, []));
        long rows = 0;
        foreach (var (batch, _, fraction) in ModelInputs.Batches(model, new InputSource { Data = data, BatchSize = batchSize }))
        {
            cancel.ThrowIfCancellationRequested();
            var results = fromSession.Count == 0 ? [] : session.Run(batch, fromSession, cancel);
            var arrays = results.ToDictionary(r => r.Name, StringComparer.Ordinal);
            foreach (var name in axes.Keys)
            {
                var array = inputs.Contains(name) ? batch[name] : arrays[name];
                Accumulate(sums, name, array, axes[name]);
            }
            rows += batch.Values.First().Rows;
            progress?.Report(fraction);
        }
        if (rows == 0)
            throw new EngineException("PruningCalibrationDataEmpty", EngineErrorKind.InvalidData, $"Calibration data '{data.Source}' has no rows.") { Target = data.Source };
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
