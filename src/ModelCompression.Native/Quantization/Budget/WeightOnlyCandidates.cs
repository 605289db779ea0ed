using System.Globalization;
using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Weight-only layers as budget units: each distinct weight at 4 bits in blocks of 32, 128 or 256, at 8 bits in blocks
/// of 128, or float (-Bits and -BlockSize narrow the set; four measured choices per layer keep the search's cost down). Statistics are collected once and inputs scaled once (AWQ, searched at
/// the plan's precision), then every candidate weight is quantized once and kept. One ONNX Runtime session runs a copy
/// of the model whose weights are graph inputs: a configuration is a set of arrays fed beside the data (a quantized
/// choice feeds its dequantized weight, which is what MatMulNBits computes with).
/// </summary>
internal sealed class WeightOnlyCandidates : IBudgetCandidates, IDisposable
{
    /// <summary>Statistics of every layer input are held at once; beyond this the search refuses the model.</summary>
    const long StatisticsLimit = 2L << 30;

    readonly WeightOnlyContext q;
    readonly List<List<Layer>> unitLayers;
    readonly List<LayerPrecision[]> precisions = [];
    readonly Dictionary<(int Unit, int Choice), BlockQuantized> quantized = [];
    readonly List<NamedArray> floats = [];
    readonly ModelSession session;

    public WeightOnlyCandidates(WeightOnlyContext q, OnnxModel source, IReadOnlyList<Layer> layers, IReadOnlyDictionary<Layer, LayerPrecision> planned, QuantizationRun run)
    {
        this.q = q;
        var o = q.Options;
        BudgetEvaluator.Check(source, o.ValidationData!, o.Budget!);
        unitLayers = layers.GroupBy(l => l.WeightKey).Select(g => g.ToList()).ToList();
        Statistics = CollectAndScale(source, layers, planned, run);
        var units = new List<BudgetUnit>();
        for (int u = 0; u < unitLayers.Count; u++)
        {
            var first = unitLayers[u][0];
            var candidates = Precisions(first).ToList();
            var choices = candidates.Select(p => new BudgetChoice(p.ToString(), Bytes(first, p), Bytes(first, p))).ToList();
            var order = Enumerable.Range(0, choices.Count).OrderBy(i => candidates[i].IsFloat ? 1 : 0).ThenBy(i => choices[i].Bytes).ToList();
            precisions.Add(order.Select(i => candidates[i]).ToArray());
            units.Add(new BudgetUnit(first.Name + (unitLayers[u].Count > 1 ? $" (+{unitLayers[u].Count - 1} sharing its weight)" : ""), first.Node.OpType, order.Select(i => choices[i]).ToList()));
            floats.Add(Stored(first, q.PreparedWeight(first), Input(u)));
        }
        Units = units;
        session = new ModelSession(new OnnxModel(Probe(), source.SourcePath, []));
        Evaluator = new BudgetEvaluator(source, o.ValidationData!, o.Budget!, o.CalibrationBatchSize ?? ActivationStatistics.DefaultBatchSize(source), q.Cancel);
    }

    public IReadOnlyList<BudgetUnit> Units { get; }
    public BudgetEvaluator Evaluator { get; }
    public Dictionary<string, LayerStatistics>? Statistics { get; }

    public double Sensitivity(int[] config) => Evaluator.Measure(session, Inputs(config), sensitivity: true);
    public double Verify(int[] config) => Evaluator.Measure(session, Inputs(config), sensitivity: false);

    /// <summary>Each layer's precision under <paramref name="config"/>.</summary>
    public Dictionary<Layer, LayerPrecision> Precision(int[] config) =>
        unitLayers.SelectMany((ls, u) => ls.Select(l => (l, precisions[u][config[u]]))).ToDictionary(x => x.l, x => x.Item2);

    /// <summary>The weight a unit's choice was quantized to (the result reuses it).</summary>
    public BlockQuantized? Quantized(Layer layer, LayerPrecision p)
    {
        int u = unitLayers.FindIndex(ls => ls.Contains(layer));
        int choice = Array.IndexOf(precisions[u], p);
        return choice >= 0 && quantized.TryGetValue((u, choice), out var bq) ? bq : null;
    }

    public void Dispose() => session.Dispose();

    static string Input(int unit) => $"budget_weight_{unit}";

    IEnumerable<LayerPrecision> Precisions(Layer layer)
    {
        var o = q.Options;
        foreach (int bits in o.Bits is { } b ? [b] : new[] { 4, 8 })
        {
            if (layer.Handler.Unsupported(layer, bits, q.Format) is not null) continue;
            var blocks = o.BlockSize is { } given ? [given] : bits == 8 ? [128] : new[] { 32, 64, 128, 256 };
            foreach (int bs in blocks.Where(bs => bs <= Math.Max(layer.K, blocks.Min()))) yield return new LayerPrecision(bits, bs);
        }
        yield return LayerPrecision.Float;
    }

    long Bytes(Layer l, LayerPrecision p) => p.IsFloat ? TensorData.StorageBytes(l.Weight.Tensor) : p.Bytes(l.K, l.N, l.FloatBytes, l.ScaleBytes, q.Symmetric);

    /// <summary>Statistics of every layer input in one pass, and the inputs scaled at the planned precisions.</summary>
    Dictionary<string, LayerStatistics>? CollectAndScale(OnnxModel source, IReadOnlyList<Layer> layers, IReadOnlyDictionary<Layer, LayerPrecision> planned, QuantizationRun run)
    {
        if (q.Options.CalibrationData is not { } data) return null;
        var activations = layers.Where(l => l.Activation is not null).Select(l => (l.Activation!, l.K)).Distinct().ToList();
        long bytes = activations.Sum(a => ActivationStatistics.Bytes(a.K));
        if (bytes > StatisticsLimit)
            throw new EngineException("QuantizationBudgetModelTooLarge", EngineErrorKind.InvalidOperation,
                $"{q.Options.Budget} compares every layer at every precision, which holds the input statistics of all {activations.Count} layer inputs at once " +
                $"({bytes / 1e9:F1} GB, more than {StatisticsLimit / 1e9:F1} GB): quantize this model without a budget (-LayerPrecision or -MixedPrecision set precisions by hand).");
        var progress = new ActionProgress<double>(f => run.Progress?.Report(new QuantizationProgress("Collecting activation statistics", f)));
        var stats = ActivationStatistics.Collect(source, activations, data, q.Options.CalibrationBatchSize ?? ActivationStatistics.DefaultBatchSize(source), progress, q.Cancel);
        var scaling = new InputScaling(q, layers, planned, new HashSet<NodeProto>(ReferenceEqualityComparer.Instance));
        scaling.Apply(layers, stats);
        scaling.Note();
        return stats;
    }

    /// <summary>A copy of the model with input scaling applied and every unit's weight a graph input.</summary>
    ModelProto Probe()
    {
        var probe = q.Model.Clone();
        var position = q.Model.Graph.Node.Select((n, i) => (n, i)).ToDictionary<(NodeProto n, int i), NodeProto, int>(x => x.n, x => x.i, ReferenceEqualityComparer.Instance);
        for (int u = 0; u < unitLayers.Count; u++)
        {
            var first = unitLayers[u][0];
            foreach (var layer in unitLayers[u]) probe.Graph.Node[position[layer.Node]].Input[layer.Handler.WeightSlot] = Input(u);
            probe.Graph.Input.Add(GraphBuilder.Value(Input(u), first.Weight.Compute == DT.Float16 ? DT.Float16 : DT.Float, [.. first.Weight.Tensor.Dims.Cast<object>()]));
        }
        InputScaling.ApplyToGraph(q, probe, unitLayers.SelectMany(l => l).ToList());
        GraphIndex.RemoveUnused(probe.Graph);
        return probe;
    }

    IReadOnlyDictionary<string, NamedArray> Inputs(int[] config)
    {
        var inputs = new Dictionary<string, NamedArray>(StringComparer.Ordinal);
        for (int u = 0; u < unitLayers.Count; u++)
        {
            var p = precisions[u][config[u]];
            inputs[Input(u)] = p.IsFloat ? floats[u] : Stored(unitLayers[u][0], Quantize(u, config[u]).Dequantize(), Input(u));
        }
        return inputs;
    }

    BlockQuantized Quantize(int u, int choice)
    {
        if (quantized.TryGetValue((u, choice), out var bq)) return bq;
        var first = unitLayers[u][0];
        var stats = LayerQuantization.Combined(unitLayers[u], Statistics);
        bq = q.Algorithm.Quantize(q.PreparedWeight(first), InputScaling.Settings(q, first, precisions[u][choice], stats), q.Cancel);
        return quantized[(u, choice)] = bq;
    }

    /// <summary>A [K, N] weight as the node reads it: stored orientation, compute type.</summary>
    static NamedArray Stored(Layer layer, float[] kn, string name)
    {
        var values = layer.Transpose ? Layer.Transposed(kn, layer.K, layer.N) : kn;
        long[] dims = layer.Weight.Tensor.Dims.ToArray();
        return layer.Weight.Compute == DT.Float16 ? new NamedArray(name, dims, QuantMath.ToHalf(values)) : new NamedArray(name, dims, values);
    }

    /// <summary>Why each layer got its precision: the search's choice and what the layer alone cost at each candidate.</summary>
    public void Explain(BudgetResult r, QualityBudget budget)
    {
        for (int u = 0; u < unitLayers.Count; u++)
        {
            var alone = string.Join(", ", Enumerable.Range(0, Units[u].Float).Select(c => $"{Units[u].Choices[c].Label} {BudgetSearch.Describe(budget, r.Cost[u][c])}"));
            foreach (var layer in unitLayers[u])
                q.Reasons[layer] = string.Create(CultureInfo.InvariantCulture, $"chosen by {budget}; alone on the validation data: {alone}");
        }
    }
}
