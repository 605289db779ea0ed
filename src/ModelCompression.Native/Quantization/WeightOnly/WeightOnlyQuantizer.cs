using System.Globalization;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Weight-only block quantization to 4 or 8 bits of constant MatMul and Gemm weights (and embedding tables read by
/// Gather), with the codes chosen by RTN, HQQ, GPTQ or AWQ (<see cref="WeightOnlyAlgorithms"/>) and a precision per
/// layer (<see cref="PrecisionPlan"/>; chosen by <see cref="BudgetSearch"/> under an accuracy budget).
/// <list type="bullet">
/// <item>MatMulNBits format: ONNX Runtime's com.microsoft MatMulNBits (B uint8 [N, blocks, blockSize*bits/8], scales
/// [N*blocks] in the type the node computes in, zero points packed per column when asymmetric); embedding tables become
/// com.microsoft GatherBlockQuantized (uint8 rows [V, D*bits/8], blocks along D).</item>
/// <item>Standard format: opset 21 blocked DequantizeLinear (int4/uint4 or int8/uint8, axis 0) feeding the original
/// MatMul; portable to any runtime that implements opset 21 (embedding tables stay as they are).</item>
/// </list>
/// </summary>
internal sealed class WeightOnlyQuantizer : IQuantizationMode
{
    static readonly string[] StandardOps = ["MatMul", "Gemm"];
    static readonly string[] ReduceOpsChangedIn18 = ["ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare"];

    /// <summary>The operator families weight-only quantization rewrites, one handler each.</summary>
    internal static readonly IReadOnlyDictionary<string, ILayerHandler> Handlers = new Dictionary<string, ILayerHandler>(StringComparer.Ordinal)
    {
        ["MatMul"] = new MatMulLayers(),
        ["Gemm"] = new MatMulLayers(),
        ["Gather"] = new GatherLayers(),
    };

    public QuantizationMode Mode => QuantizationMode.WeightOnly;
    public IReadOnlyList<string> DefaultOps { get; } = ["MatMul", "Gemm"];
    public IReadOnlyList<string> SupportedOps { get; } = [.. Handlers.Keys];

    public (long Before, long After) Run(QuantizationRun run)
    {
        var o = run.Options;
        var q = new WeightOnlyContext(run.Model, o, run.Report, run.Cancel);
        bool standard = q.Format == WeightOnlyFormat.Standard;
        var ops = QuantizationPlan.OpTypes(o, standard ? StandardOps : DefaultOps, standard ? StandardOps : SupportedOps);
        if (standard) PrepareStandard(run.Model, q.Index);
        else EnsureMicrosoftDomain(run.Model);
        NotePrebuilt(q);
        var layers = Plan(q, ops);
        if (layers.Count == 0) return (0, 0);
        var precision = PrecisionPlan.Assign(q, layers);
        layers = layers.Where(precision.ContainsKey).ToList();
        if (layers.Count == 0) return (0, 0);
        var outcomes = o.Budget is { } budget ? WithinBudget(q, run, layers, precision, budget) : new LayerQuantization(q, run.Source, layers, precision, run.Progress).Run();
        Emit(q, layers, outcomes);
        return (q.BytesBefore, q.BytesAfter);
    }

    /// <summary>Operators that hold weights quantized before (a model-builder export's MatMulNBits): left as they are, and said so.</summary>
    static void NotePrebuilt(WeightOnlyContext q)
    {
        var prebuilt = q.Model.Graph.Node.Where(n => n.OpType is "MatMulNBits" or "GatherBlockQuantized").ToList();
        if (prebuilt.Count > 0)
            q.Report.Note($"{prebuilt.Count} node(s) already hold block-quantized weights ({string.Join(", ", prebuilt.GroupBy(n => n.OpType).Select(g => $"{g.Count()} {g.Key}"))}) and are left as they are; only float weights are quantized.");
    }

    /// <summary>Each layer's precision chosen by the budget search, then the layers quantized with what the search computed.</summary>
    static IReadOnlyDictionary<Layer, LayerOutcome> WithinBudget(WeightOnlyContext q, QuantizationRun run, List<Layer> layers, Dictionary<Layer, LayerPrecision> planned, QualityBudget budget)
    {
        using var candidates = new WeightOnlyCandidates(q, run.Source, layers, planned, run);
        var result = BudgetSearch.Search(candidates, budget, run.Progress, run.Cancel);
        BudgetSearch.Report(run.Report, budget, result, candidates.Evaluator);
        candidates.Explain(result, budget);
        var precision = candidates.Precision(result.Config);
        return new LayerQuantization(q, run.Source, layers, precision, run.Progress) { Prepared = (candidates.Statistics, candidates.Quantized) }.Run();
    }

    /// <summary>Which nodes, and what each one's weight is.</summary>
    static List<Layer> Plan(WeightOnlyContext q, HashSet<string> ops)
    {
        q.Heads = Heads(q);
        var layers = new List<Layer>();
        int computed = 0;
        foreach (var node in q.Model.Graph.Node)
        {
            q.Cancel.ThrowIfCancellationRequested();
            if (node.Domain is not ("" or "ai.onnx") || !ops.Contains(node.OpType)) continue;
            if (MatchesAny(node.Name, q.Options.ExcludeNodes)) { q.Skip(node, "excluded by -ExcludeNode"); continue; }
            var layer = Handlers[node.OpType].Plan(node, q, out bool computedWeight);
            if (computedWeight) computed++;
            if (layer is not null) layers.Add(layer);
        }
        if (computed > 0)
            q.Report.Note($"{computed} MatMul/Gemm node(s) multiply two computed values (attention scores and their product with the values) and stay as they are: only constant weights are quantized.");
        if (q.Options.HeadBits is not null && !layers.Any(l => l.Head))
            q.Report.Warn("-HeadBits found no output head (a MatMul or Gemm whose output reaches a graph output through reshapes or a bias Add) to apply to.");
        return layers;
    }

    /// <summary>The graph with inputs scaled where the algorithm said, each quantized node replaced, and one report line per layer.</summary>
    static void Emit(WeightOnlyContext q, IReadOnlyList<Layer> layers, IReadOnlyDictionary<Layer, LayerOutcome> outcomes)
    {
        var graph = q.Model.Graph;
        InputScaling.ApplyToGraph(q, q.Model, layers);
        var byNode = layers.ToDictionary<Layer, NodeProto>(l => l.Node, ReferenceEqualityComparer.Instance);
        var nodes = new List<NodeProto>(graph.Node.Count + 16);
        foreach (var node in graph.Node)
        {
            if (!byNode.TryGetValue(node, out var layer) || !outcomes.TryGetValue(layer, out var outcome)) { nodes.Add(node); continue; }
            if (outcome.Stored is { } stored) nodes.AddRange(layer.Handler.Emit(layer, stored, q));
            else
            {
                if (outcome.FloatWeight is { } w) node.Input[layer.Handler.WeightSlot] = w;
                nodes.Add(node);
            }
            Report(q, layer, outcome);
        }
        graph.Node.Clear();
        graph.Node.AddRange(nodes);
        RemoveUnused(graph);
    }

    static void Report(WeightOnlyContext q, Layer layer, LayerOutcome o)
    {
        string why = q.Reasons.TryGetValue(layer, out var r) ? $" ({r})" : layer.Head ? " (output head)" : "";
        string scaled = layer.Activation is { } a && q.InputScales.ContainsKey(a) ? q.InsertedMuls.ContainsKey(a) ? ", input scaled by an inserted Mul" : ", input scale folded upstream" : "";
        if (o.Stored is not { } s)
        {
            q.Report.Done(layer.Node, $"kept float{why}{scaled}", QuantizationReport.Kept, bytes: o.Bytes);
            return;
        }
        string error = o.Error is { } e ? $"; output error {e.ToString("P2", CultureInfo.InvariantCulture)} on the calibration activations" : "";
        q.Report.Done(layer.Node, $"{s.Bits}-bit blocks of {s.BlockSize}, {(s.Symmetric ? "symmetric" : "asymmetric")}, {o.Algorithm}{why}{scaled} → {layer.Handler.Describe(layer, q.Format)}{error}",
            error: o.Error, bytes: o.Bytes);
    }

    /// <summary>
    /// The output heads: MatMul/Gemm nodes whose output reaches a graph output directly or through a chain of
    /// single-consumer reshapes, casts or a bias Add (the logits projection of a language model, a classifier).
    /// </summary>
    static HashSet<NodeProto> Heads(WeightOnlyContext q)
    {
        var heads = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        foreach (var node in q.Model.Graph.Node)
        {
            if (node.OpType is not ("MatMul" or "Gemm") || WeightSource.Output(node) is not { } value) continue;
            for (int hops = 0; hops < 8; hops++)
            {
                if (q.Index.GraphOutputs.Contains(value)) { heads.Add(node); break; }
                var consumers = q.Index.ConsumersOf(value);
                if (consumers.Count != 1 || consumers[0].Node.OpType is not ("Add" or "Reshape" or "Transpose" or "Squeeze" or "Unsqueeze" or "Identity" or "Cast" or "Flatten")
                    || WeightSource.Output(consumers[0].Node) is not { } next) break;
                if (consumers[0].Node.OpType != "Add" && consumers[0].Input != 0) break;
                value = next;
            }
        }
        return heads;
    }

    /// <summary>The standard format needs opset 21 (blocked DequantizeLinear, int4): raise the opset when that changes no operator the graph uses.</summary>
    static void PrepareStandard(ModelProto model, GraphIndex index)
    {
        if (index.Opset >= 21) return;
        if (index.Opset < 13)
            throw new EngineException("QuantizationOpsetTooOld", EngineErrorKind.NotImplemented,
                $"-Format Standard needs opset 21 (blocked DequantizeLinear) and the model's opset {index.Opset} is too old to raise safely (operators changed at opsets 11 and 13). Use -Format MatMulNBits.");
        if (index.Opset < 18 && model.Graph.Node.FirstOrDefault(n => ReduceOpsChangedIn18.Contains(n.OpType)) is { } reduce)
            throw new EngineException("QuantizationOpsetTooOld", EngineErrorKind.NotImplemented,
                $"-Format Standard needs opset 21; raising opset {index.Opset} would change {reduce.OpType} ('{reduce.Name}'), whose axes moved from attribute to input at opset 18. Use -Format MatMulNBits.");
        foreach (var op in model.OpsetImport) if (op.Domain is "" or "ai.onnx") op.Version = 21;
        if (model.IrVersion < 10) model.IrVersion = 10;
    }
}
