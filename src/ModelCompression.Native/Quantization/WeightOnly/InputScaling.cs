using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Lets an input-scaling algorithm (AWQ) scale the inputs of groups of layers: for each activation whose layers are not
/// yet quantized and have weights of their own, the algorithm's scales s (searched on the quantized layers) make the
/// layers hold diag(s) W and read X / s: folded into what produces X (<see cref="ScaleFolding"/>) when the layers are its
/// only readers, else through a Mul inserted in front of them. The decisions go into the <see cref="WeightOnlyContext"/>
/// (weights are scaled when read, the graph edited when emitted); the statistics are replaced by the scaled ones.
/// </summary>
internal sealed class InputScaling(WeightOnlyContext q, IReadOnlyList<Layer> layers, IReadOnlyDictionary<Layer, LayerPrecision> precision, ISet<NodeProto> quantized)
{
    int scaledGroups, foldedGroups;

    /// <summary>Input scales for each activation the pass's layers read.</summary>
    public void Apply(IEnumerable<Layer> pass, Dictionary<string, LayerStatistics> stats)
    {
        var folding = new ScaleFolding(q.Index, node => layers.FirstOrDefault(l => l.Node == node && !quantized.Contains(node)), quantized);
        foreach (var group in pass.Where(l => l.Activation is not null).GroupBy(l => l.Activation!))
        {
            string activation = group.Key;
            var readers = layers.Where(l => l.Activation == activation).ToList();
            if (!stats.TryGetValue(activation, out var stat) || !Scalable(activation, readers)) continue;
            var members = readers.Where(l => !precision[l].IsFloat).DistinctBy(l => l.WeightKey)
                .Select(l => (q.PreparedWeight(l), Settings(q, l, precision[l], stat))).ToList();
            if (members.Count == 0 || q.Algorithm.InputScales(new InputGroup(activation, stat, members), q.Cancel) is not { } s) continue;
            q.InputScales[activation] = s;
            stats[activation] = stat.Scaled(s);
            scaledGroups++;
            // Folding changes the activation for every reader of it; with other readers (a residual sum) a Mul goes in front of the layers instead.
            bool exclusive = q.Index.ConsumersOf(activation).All(c => readers.Any(r => r.Node == c.Node && c.Input == 0));
            if (exclusive && folding.Plan(activation, s) is { } edits)
            {
                foldedGroups++;
                foreach (var edit in edits)
                    if (edit is LayerColumnEdit c) q.ColumnScales[c.Layer] = q.ColumnScales.TryGetValue(c.Layer, out var prior) ? prior.Zip(c.Divisor, (a, b) => a * b).ToArray() : c.Divisor;
                    else q.ConstantEdits.Add((ConstantEdit)edit);
            }
            else
            {
                var type = readers[0].Weight.Compute == DT.Float16 ? DT.Float16 : DT.Float;
                q.InsertedMuls[activation] = (q.Index.Fresh(activation + "_awq_scaled"), s.Select(v => 1f / v).ToArray(), type);
            }
        }
    }

    /// <summary>No reader of the activation is quantized yet, and none shares its weight with a layer that reads another input.</summary>
    bool Scalable(string activation, List<Layer> readers)
    {
        if (readers.Any(r => quantized.Contains(r.Node))) return false;
        var names = readers.Select(r => r.Weight.Name).ToHashSet(StringComparer.Ordinal);
        return !layers.Any(l => names.Contains(l.Weight.Name) && l.Activation != activation);
    }

    public static WeightOnlyLayerSettings Settings(WeightOnlyContext q, Layer l, LayerPrecision p, LayerStatistics? stats) =>
        new(l.K, l.N, p.Bits ?? 8, p.BlockSize, q.Symmetric, l.Weight.Compute == DT.Float16, l.Weight.Name, stats);

    /// <summary>
    /// Writes the decisions into <paramref name="target"/> (the model being rewritten, or a copy of it with the same node
    /// order): constants divided by s, a Mul by 1/s after each activation that needs one, and its readers rewired to it.
    /// </summary>
    public static void ApplyToGraph(WeightOnlyContext q, ModelProto target, IReadOnlyList<Layer> layers)
    {
        var graph = target.Graph;
        var position = q.Model.Graph.Node.Select((n, i) => (n, i)).ToDictionary<(NodeProto n, int i), NodeProto, int>(x => x.n, x => x.i, ReferenceEqualityComparer.Instance);
        NodeProto Target(NodeProto n) => graph.Node[position[n]];
        var index = ReferenceEquals(target, q.Model) ? q.Index : new Onnx.GraphIndex(target);
        foreach (var edit in q.ConstantEdits) DivideConstant(q, index, Target(edit.Node), edit);
        foreach (var layer in layers)
            if (layer.Activation is { } a && q.InsertedMuls.ContainsKey(a)) Target(layer.Node).Input[0] = q.ActivationOf(layer);
        var muls = q.InsertedMuls.ToDictionary(kv => kv.Key, kv => QuantNodes.Node("Mul", index.Fresh(kv.Key + "_awq_mul"),
            [kv.Key, AddInitializer(q, index, WeightOnlyContext.FloatTensor(index.Fresh(kv.Key + "_awq_inverse_scale"), [kv.Value.Inverse.Length], kv.Value.Inverse, kv.Value.Type))], [kv.Value.Output]), StringComparer.Ordinal);
        if (muls.Count == 0) return;
        var nodes = muls.Where(kv => !index.Producer.ContainsKey(kv.Key)).Select(kv => kv.Value).ToList();
        foreach (var node in graph.Node)
        {
            nodes.Add(node);
            foreach (var output in node.Output) if (muls.TryGetValue(output, out var mul)) nodes.Add(mul);
        }
        graph.Node.Clear();
        graph.Node.AddRange(nodes);
    }

    /// <summary>A constant input divided by s along its last axis, as a new initializer in the constant's type.</summary>
    static void DivideConstant(WeightOnlyContext q, Onnx.GraphIndex index, NodeProto node, ConstantEdit edit)
    {
        string input = node.Input[edit.Slot];
        var tensor = index.Constant(input)!;
        var values = Onnx.TensorData.ToFloat(tensor);
        int k = edit.Divisor.Length;
        for (int i = 0; i < values.Length; i++) values[i] /= edit.Divisor[i % k];
        var type = (DT)tensor.DataType == DT.Float16 ? DT.Float16 : DT.Float;
        node.Input[edit.Slot] = AddInitializer(q, index, WeightOnlyContext.FloatTensor(index.Fresh(input + "_awq"), tensor.Dims.ToArray(), values, type));
    }

    static string AddInitializer(WeightOnlyContext q, Onnx.GraphIndex index, TensorProto t) => ReferenceEquals(index, q.Index) ? q.Add(t) : index.AddInitializer(t).Name;

    public void Note()
    {
        if (scaledGroups > 0)
            q.Report.Note($"{q.Algorithm.Name} scaled the inputs of {scaledGroups} group(s) of layers: {foldedGroups} folded into what produces them (norm scales, biases, preceding layers), " +
                          $"{scaledGroups - foldedGroups} through an inserted Mul.");
    }
}
