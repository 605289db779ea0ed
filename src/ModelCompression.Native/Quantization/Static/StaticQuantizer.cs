using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Static quantization in QDQ format. Activation ranges come from calibration (<see cref="Calibrator"/>); every
/// activation tensor read or written by a quantized node gets one QuantizeLinear → DequantizeLinear pair that all its
/// consumers read, so ONNX Runtime's QDQ fusions see DQ → op → Q around each node and turn it into QLinearConv,
/// QLinearMatMul, QLinearAdd, ... (<see cref="QdqBuilder"/>). Weights are int8 symmetric per output channel, stored
/// quantized with a DequantizeLinear; Conv/Gemm biases are int32 with scale = input scale × weight scale. A Relu or
/// Clip right after a quantized node is folded: the pair goes after the activation. Models below opset 13 are raised to
/// 13 first (<see cref="OpsetUpgrade"/>). Under an accuracy budget, <see cref="BudgetSearch"/> keeps the nodes that cost
/// most in float32. One handler per operator family (<see cref="Handlers"/>).
/// </summary>
internal sealed class StaticQuantizer : IQuantizationMode
{
    internal static readonly IReadOnlyDictionary<string, IStaticOp> Handlers = new Dictionary<string, IStaticOp>(StringComparer.Ordinal)
    {
        ["Conv"] = new StaticConv(),
        ["MatMul"] = new StaticMatMul(),
        ["Gemm"] = new StaticGemm(),
        ["Add"] = new StaticActivations(), ["Mul"] = new StaticActivations(), ["Concat"] = new StaticActivations(),
        ["GlobalAveragePool"] = new StaticActivations(), ["AveragePool"] = new StaticActivations(), ["Sigmoid"] = new StaticActivations(),
        ["MaxPool"] = new StaticActivations(), ["LeakyRelu"] = new StaticActivations(), ["Softmax"] = new StaticActivations(),
        ["Transpose"] = new StaticActivations(), ["Flatten"] = new StaticActivations(),
        ["Resize"] = new StaticWithParameters(), ["Reshape"] = new StaticWithParameters(),
    };
    static readonly string[] Foldable = ["Relu", "Clip"];

    public QuantizationMode Mode => QuantizationMode.Static;
    public IReadOnlyList<string> DefaultOps { get; } = ["Conv", "MatMul", "Gemm", "Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool", "Sigmoid"];
    public IReadOnlyList<string> SupportedOps { get; } = [.. Handlers.Keys];

    public OnnxModel Prepare(OnnxModel model, QuantizationOptions options, IProgress<QuantizationProgress>? progress, CancellationToken cancel)
    {
        if (options.SkipOptimization == true) return model;
        progress?.Report(new QuantizationProgress("Optimizing (basic level)", 0));
        return GraphOptimizer.Optimize(model, "Basic", cancel: cancel);
    }

    public (long Before, long After) Run(QuantizationRun run)
    {
        var (model, o, report) = (run.Model, run.Options, run.Report);
        long opset = model.OpsetImport.FirstOrDefault(op => op.Domain is "" or "ai.onnx")?.Version ?? 1;
        if (opset < 13)
        {
            OpsetUpgrade.To13(model, run.Source.Name);
            report.Note($"The model's opset was raised from {opset} to 13 (per-channel QuantizeLinear/DequantizeLinear); operators whose attributes became inputs were rewritten.");
        }
        int affine = AffineFolding.FoldConvAffine(model);
        if (affine > 0) report.Note($"{affine} constant Mul/Add node(s) right after a Conv were folded into its weights and bias before quantization.");
        var plan = Select(model, o, report, run.Source.Name);
        if (plan.Selected.Count == 0) return (0, 0);
        var ranges = Calibrator.Run(run.Source, plan.AllActivations, o.CalibrationData!, o.CalibrationMethod ?? CalibrationMethod.MinMax,
            o.Percentile ?? 99.999, o.CalibrationBatchSize ?? 1, run.Progress, run.Cancel);
        foreach (var t in plan.AllActivations)
            plan.ActivationParams[t] = QuantMath.Compute(ranges[t].Min, ranges[t].Max, plan.ActivationType, plan.ActivationSymmetric, false, t);
        var kept = new Dictionary<int, string>();
        if (o.Budget is { } budget)
        {
            using var candidates = new StaticCandidates(plan, model, run);
            var result = BudgetSearch.Search(candidates, budget, run.Progress, run.Cancel);
            BudgetSearch.Report(report, budget, result, candidates.Evaluator);
            kept = candidates.KeptNodes(result, budget);
            report.Report.Metrics["NodesKeptFloat"] = kept.Count;
        }
        return new QdqBuilder(plan, o, run.Cancel).Build(model, kept, report);
    }

    /// <summary>The nodes to quantize (by position in the node list, so a clone of the graph is rewritten the same way) and their activations.</summary>
    static StaticPlan Select(ModelProto model, QuantizationOptions o, QuantizationReport report, string modelName)
    {
        var graph = model.Graph;
        var index = new GraphIndex(model);
        var ops = QuantizationPlan.OpTypes(o, QuantizationModes.For(QuantizationMode.Static).DefaultOps, [.. Handlers.Keys]);
        var types = ValueTypes.Infer(model, modelName);
        var plan = new StaticPlan(o);
        bool IsFloat(string v) => v.Length > 0 && types.TryGetValue(v, out var t) && t == DT.Float;
        var graphOutputs = graph.Output.Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        for (int k = 0; k < graph.Node.Count; k++)
        {
            var n = graph.Node[k];
            if (n.Domain is not ("" or "ai.onnx") || !ops.Contains(n.OpType)) continue;
            if (MatchesAny(n.Name, o.ExcludeNodes)) { report.Skip(n, "excluded by -ExcludeNode"); continue; }
            if (n.Output.Count < 1 || !IsFloat(n.Output[0])) { report.Skip(n, "output is not float32"); continue; }
            var handler = Handlers[n.OpType];
            if (handler.WeightAxis(n) >= 0 && n.Input.Count > 1 && index.Constant(n.Input[1]) is { } w && w.DataType != (int)DT.Float)
            { report.Skip(n, "weight is not float32"); continue; }
            var acts = new List<string>();
            for (int i = 0; i < n.Input.Count; i++)
                if (IsFloat(n.Input[i]) && index.Constant(n.Input[i]) is null && !handler.IsAuxiliaryInput(i)) acts.Add(n.Input[i]);
            // Fold a following Relu/Clip: quantize after it.
            string output = n.Output[0];
            var consumers = index.ConsumersOf(output);
            if (!graphOutputs.Contains(output) && consumers.Count == 1 && Foldable.Contains(consumers[0].Node.OpType) && consumers[0].Input == 0 && consumers[0].Node.Output.Count > 0)
                output = consumers[0].Node.Output[0];
            acts.Add(output);
            plan.Add(k, output, acts);
        }
        return plan;
    }
}

/// <summary>The nodes static quantization selected (by position), their activations and the activations' quantization parameters.</summary>
internal sealed class StaticPlan(QuantizationOptions o)
{
    public List<int> Selected { get; } = [];
    public Dictionary<int, string> OutputOf { get; } = [];
    public Dictionary<int, List<string>> ActivationsOf { get; } = [];
    public HashSet<string> AllActivations { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, QuantParams> ActivationParams { get; } = new(StringComparer.Ordinal);
    public QuantType ActivationType { get; } = o.ActivationType ?? QuantType.UInt8;
    public bool ActivationSymmetric => ActivationType == QuantType.Int8;
    public QuantType WeightType { get; } = o.WeightType ?? QuantType.Int8;
    public bool WeightSymmetric { get; } = o.Symmetric ?? (o.WeightType ?? QuantType.Int8) == QuantType.Int8;
    public bool PerChannel { get; } = o.PerChannel ?? true;

    public void Add(int node, string output, List<string> activations)
    {
        Selected.Add(node);
        OutputOf[node] = output;
        ActivationsOf[node] = activations;
        AllActivations.UnionWith(activations);
    }
}
