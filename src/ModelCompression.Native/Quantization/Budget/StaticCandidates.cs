using System.Globalization;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Static quantization's nodes as budget units: int8 QDQ or float32. Sensitivities run in one session over the QDQ graph
/// with switches (<see cref="QdqSwitches"/>); whole candidates are verified on the QDQ model as it will be written, since
/// ONNX Runtime's fused integer kernels round differently from a switched graph. A node's size is its weight's bytes
/// plus one while it stays float, so that among equal bytes the search quantizes more nodes.
/// </summary>
internal sealed class StaticCandidates : IBudgetCandidates, IDisposable
{
    readonly StaticPlan plan;
    readonly ModelProto pristine;
    readonly QuantizationOptions options;
    readonly CancellationToken cancel;
    readonly QdqSwitches switches;
    readonly ModelSession session;
    readonly string? sourcePath;

    public StaticCandidates(StaticPlan plan, ModelProto model, QuantizationRun run)
    {
        this.plan = plan;
        options = run.Options;
        BudgetEvaluator.Check(run.Source, options.ValidationData!, options.Budget!);
        cancel = run.Cancel;
        sourcePath = run.Source.SourcePath;
        pristine = model.Clone();
        var index = new GraphIndex(model);
        Units = plan.Selected.Select(k =>
        {
            var n = model.Graph.Node[k];
            int axis = StaticQuantizer.Handlers[n.OpType].WeightAxis(n);
            var w = axis >= 0 && n.Input.Count > 1 ? index.Constant(n.Input[1]) : null;
            long weight = w is null ? 0 : TensorData.StorageBytes(w);
            long channels = w is null ? 0 : axis < w.Dims.Count ? w.Dims[axis] : 1;
            long int8 = weight / 4 + channels * 5;
            return new BudgetUnit(QuantizationReport.NodeName(n), n.OpType, [new BudgetChoice("int8", int8, int8), new BudgetChoice("float", weight, weight + 1)]);
        }).ToList();
        var probe = model.Clone();
        switches = new QdqSwitches(plan);
        new QdqBuilder(plan, options, cancel).Build(probe, new Dictionary<int, string>(), null, switches);
        session = new ModelSession(new OnnxModel(probe, sourcePath, []));
        Evaluator = new BudgetEvaluator(run.Source, options.ValidationData!, options.Budget!, options.CalibrationBatchSize ?? 1, cancel);
    }

    public IReadOnlyList<BudgetUnit> Units { get; }
    public BudgetEvaluator Evaluator { get; }

    public double Sensitivity(int[] config) => Evaluator.Measure(session, switches.Values(Kept(config)), sensitivity: true);

    public double Verify(int[] config)
    {
        var candidate = pristine.Clone();
        new QdqBuilder(plan, options, cancel).Build(candidate, Kept(config).ToDictionary(u => plan.Selected[u], _ => ""), null);
        using var real = new ModelSession(new OnnxModel(candidate, sourcePath, []));
        return Evaluator.Measure(real, new Dictionary<string, NamedArray>(), sensitivity: false);
    }

    static HashSet<int> Kept(int[] config) => config.Select((choice, u) => (choice, u)).Where(x => x.choice == 1).Select(x => x.u).ToHashSet();

    /// <summary>The nodes (positions in the graph) the search keeps in float32, each with what it alone cost quantized.</summary>
    public Dictionary<int, string> KeptNodes(BudgetResult r, QualityBudget budget) =>
        Kept(r.Config).ToDictionary(u => plan.Selected[u], u => string.Create(CultureInfo.InvariantCulture,
            $"kept in float32 by {budget}: quantized alone it costs {BudgetSearch.Describe(budget, r.Cost[u][0])} on the validation data"));

    public void Dispose() => session.Dispose();
}

/// <summary>
/// The switches of a QDQ graph built for sensitivity runs: a bool graph input per quantized weight (true while its node is
/// quantized) and per activation read by a node (true while some quantized node has that activation and the reader is
/// not kept in float32), exactly as <see cref="QdqBuilder"/> wires a model with those nodes kept.
/// </summary>
internal sealed class QdqSwitches(StaticPlan plan)
{
    readonly List<(string Name, int Unit, string? Activation)> flags = [];
    static readonly NamedArray On = new("on", [], new[] { true }), Off = new("off", [], new[] { false });

    public string Weight(string name, int unit) { flags.Add((name, unit, null)); return name; }

    public string Activation(string name, int unit, string activation) { flags.Add((name, unit, activation)); return name; }

    public void DeclareInputs(GraphProto graph)
    {
        foreach (var (name, _, _) in flags) graph.Input.Add(GraphBuilder.Value(name, DT.Bool));
    }

    public IReadOnlyDictionary<string, NamedArray> Values(ISet<int> kept)
    {
        var active = new HashSet<string>(StringComparer.Ordinal);
        for (int u = 0; u < plan.Selected.Count; u++) if (!kept.Contains(u)) active.UnionWith(plan.ActivationsOf[plan.Selected[u]]);
        return flags.ToDictionary(f => f.Name, f =>
        {
            bool on = f.Activation is null ? !kept.Contains(f.Unit) : active.Contains(f.Activation) && !(f.Unit >= 0 && kept.Contains(f.Unit));
            return on ? On : Off;
        }, StringComparer.Ordinal);
    }
}
