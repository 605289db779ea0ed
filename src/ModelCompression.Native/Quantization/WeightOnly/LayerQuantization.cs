using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>What became of one layer: its precision, the stored weight (quantized, or float rewritten after input scaling), its output error and bytes.</summary>
internal sealed record LayerOutcome(LayerPrecision Precision, StoredWeight? Stored, string? FloatWeight, double? Error, long Bytes, string Algorithm);

/// <summary>
/// Quantizes planned layers at their precisions, streaming: distinct weights (tied weights at one precision stay shared)
/// in topological order, in passes whose input statistics fit <see cref="ActivationStatistics.BudgetBytes"/>. Each pass
/// collects its statistics in one run over the calibration data, lets an input-scaling algorithm (AWQ) scale the inputs
/// it reads (folded into what produces them, <see cref="ScaleFolding"/>, or an inserted Mul), quantizes its weights,
/// and lets its statistics go before the next pass.
/// </summary>
internal sealed class LayerQuantization(WeightOnlyContext q, OnnxModel source, IReadOnlyList<Layer> layers, IReadOnlyDictionary<Layer, LayerPrecision> precision,
    IProgress<QuantizationProgress>? progress)
{
    readonly Dictionary<Layer, LayerOutcome> outcomes = [];
    readonly HashSet<NodeProto> quantized = new(ReferenceEqualityComparer.Instance);
    readonly HashSet<string> counted = new(StringComparer.Ordinal);

    /// <summary>Statistics collected and inputs scaled beforehand (the budget search), and weights it quantized already.</summary>
    public (Dictionary<string, LayerStatistics>? Statistics, Func<Layer, LayerPrecision, BlockQuantized?> Quantized)? Prepared { get; init; }

    public IReadOnlyDictionary<Layer, LayerOutcome> Run()
    {
        var keys = layers.GroupBy(l => (l.WeightKey, precision[l])).Select(g => g.ToList()).ToList();
        var data = q.Options.CalibrationData;
        var scaling = new InputScaling(q, layers, precision, quantized);
        if (Prepared is null && data is not null && ActivationProbe.NeedsSegments(source))
        {
            InSegments(keys, data, scaling);
            scaling.Note();
            return outcomes;
        }
        int done = 0;
        foreach (var pass in Prepared is null ? Passes(keys, data is not null) : [keys])
        {
            var stats = Prepared is { } prepared ? prepared.Statistics : data is null ? null : Collect(pass, data, done, keys.Count);
            if (stats is not null && Prepared is null) scaling.Apply(pass.SelectMany(k => k), stats);
            foreach (var key in pass)
            {
                q.Cancel.ThrowIfCancellationRequested();
                Quantize(key, stats);
                progress?.Report(new QuantizationProgress($"Quantizing weights ({q.Algorithm.Name})", (double)++done / keys.Count));
            }
        }
        scaling.Note();
        return outcomes;
    }

    /// <summary>
    /// A model too large for one session: it runs once, segment by segment; after each, the weights whose inputs have
    /// all been seen are scaled and quantized, and statistics no remaining weight needs are let go.
    /// </summary>
    void InSegments(List<List<Layer>> keys, DataSet data, InputScaling scaling)
    {
        var pending = new List<List<Layer>>(keys);
        var available = new Dictionary<string, LayerStatistics>(StringComparer.Ordinal);
        var activations = layers.Where(l => l.Activation is not null).Select(l => (l.Activation!, l.K)).Distinct().ToList();
        var phase = new ActionProgress<double>(f => progress?.Report(new QuantizationProgress("Collecting activation statistics and quantizing, segment by segment", f)));
        int done = 0;
        foreach (var stats in ActivationStatistics.CollectInSegments(source, activations, data, q.Options.CalibrationBatchSize ?? ActivationStatistics.DefaultBatchSize(source), phase, q.Cancel))
        {
            foreach (var (name, s) in stats) available[name] = s;
            var ready = pending.Where(key => key.All(l => l.Activation is null || available.ContainsKey(l.Activation))).ToList();
            scaling.Apply(ready.SelectMany(k => k), available);
            foreach (var key in ready)
            {
                q.Cancel.ThrowIfCancellationRequested();
                Quantize(key, available);
                pending.Remove(key);
                // A large layer leaves hundreds of megabytes of large arrays behind (its statistics, GPTQ's inverse); the GC
                // would keep them until it felt pressure, and the next segment would come on top.
                GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                progress?.Report(new QuantizationProgress($"Quantizing weights ({q.Algorithm.Name})", (double)++done / keys.Count));
            }
            foreach (var name in available.Keys.Where(a => !pending.Any(k => k.Any(l => l.Activation == a))).ToList()) available.Remove(name);
        }
        if (pending.Count > 0)
            throw new EngineException("CalibrationTensorNotObserved", EngineErrorKind.InvalidData,
                $"Calibration never observed the inputs of {pending.Count} layer(s) (first: '{pending[0][0].Name}').");
    }

    /// <summary>Groups of distinct weights whose layers' input statistics fit the budget together (one group without data).</summary>
    static IEnumerable<List<List<Layer>>> Passes(List<List<Layer>> keys, bool withData)
    {
        if (!withData) { yield return keys; yield break; }
        var current = new List<List<Layer>>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        long bytes = 0;
        long Added(List<Layer> key) => key.Where(l => l.Activation is not null && !seen.Contains(l.Activation)).DistinctBy(l => l.Activation).Sum(l => ActivationStatistics.Bytes(l.K));
        foreach (var key in keys)
        {
            if (current.Count > 0 && bytes + Added(key) > ActivationStatistics.BudgetBytes) { yield return current; current = []; seen.Clear(); bytes = 0; }
            bytes += Added(key);
            current.Add(key);
            foreach (var l in key) if (l.Activation is not null) seen.Add(l.Activation);
        }
        if (current.Count > 0) yield return current;
    }

    Dictionary<string, LayerStatistics>? Collect(List<List<Layer>> pass, DataSet data, int done, int total)
    {
        var activations = pass.SelectMany(k => k).Where(l => l.Activation is not null).Select(l => (l.Activation!, l.K)).Distinct().ToList();
        if (activations.Count == 0) return null;
        var phase = new ActionProgress<double>(f => progress?.Report(new QuantizationProgress("Collecting activation statistics", (done + f * pass.Count) / Math.Max(1, total))));
        return ActivationStatistics.Collect(source, activations, data, q.Options.CalibrationBatchSize ?? ActivationStatistics.DefaultBatchSize(source), phase, q.Cancel);
    }

    WeightOnlyLayerSettings Settings(Layer l, LayerPrecision p, LayerStatistics? stats) => InputScaling.Settings(q, l, p, stats);

    /// <summary>Quantizes one distinct weight (for every layer that reads it) and measures each layer's output error when statistics exist.</summary>
    void Quantize(List<Layer> key, Dictionary<string, LayerStatistics>? stats)
    {
        var first = key[0];
        var p = precision[first];
        if (counted.Add(first.Weight.Name)) q.BytesBefore += TensorData.StorageBytes(first.Weight.Tensor);
        bool changed = first.Activation is { } a && q.InputScales.ContainsKey(a) || q.ColumnScales.ContainsKey(first);
        if (p.IsFloat)
        {
            string? rewritten = changed ? q.AddFloatWeight(first, q.PreparedWeight(first)) : null;
            long bytes = TensorData.StorageBytes(first.Weight.Tensor);
            if (rewritten is null) q.BytesAfter += bytes;
            foreach (var layer in key) outcomes[layer] = new LayerOutcome(p, null, rewritten, null, bytes, "");
            return;
        }
        var weight = q.PreparedWeight(first);
        var combined = Combined(key, stats);
        if (q.Algorithm.NeedsCalibrationData && combined is null && first.Activation is not null)
            throw new EngineException("QuantizationCalibrationDataMissing", EngineErrorKind.InvalidArgument, $"-Algorithm {q.Algorithm.Name} needs -CalibrationData.");
        var quantizedWeight = Prepared?.Quantized(first, p) ?? q.Algorithm.Quantize(weight, Settings(first, p, combined), q.Cancel);
        long before = q.BytesAfter;
        var stored = first.Handler.Store(first, quantizedWeight, q);
        string algorithm = first.Activation is null && q.Algorithm.NeedsCalibrationData ? "RTN (no activations to compensate with)" : q.Algorithm.Name;
        foreach (var layer in key)
        {
            double? error = layer.Activation is not null && stats is not null && stats.TryGetValue(layer.Activation, out var s) ? s.RelativeError(weight, quantizedWeight) : null;
            outcomes[layer] = new LayerOutcome(p, stored, null, error, q.BytesAfter - before, algorithm);
            quantized.Add(layer.Node);
        }
    }

    /// <summary>The statistics GPTQ minimises for a weight read through several inputs: the sum of their second moments.</summary>
    internal static LayerStatistics? Combined(List<Layer> key, Dictionary<string, LayerStatistics>? stats)
    {
        if (stats is null) return null;
        var all = key.Select(l => l.Activation).OfType<string>().Distinct().Select(a => stats[a]).ToList();
        if (all.Count <= 1) return all.FirstOrDefault();
        var h = (float[])all[0].Hessian.Clone();
        foreach (var s in all.Skip(1)) for (int i = 0; i < h.Length; i++) h[i] += s.Hessian[i];
        return new LayerStatistics(all[0].K, h, all[0].MeanAbs, all[0].Sample, all[0].SampleRows, all.Sum(s => s.Tokens));
    }
}
