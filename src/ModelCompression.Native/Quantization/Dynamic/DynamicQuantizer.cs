using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Dynamic int8: constant MatMul/Gemm weights become int8 initializers; activations are quantized at run time.
/// Emitted pattern (standard ops, opset 11+), which ONNX Runtime fuses into DynamicQuantizeMatMul:
/// <c>DynamicQuantizeLinear(A) → MatMulInteger(A_q, W_q, A_zp, W_zp) → Cast(float) → Mul(·, Mul(A_scale, W_scale)) [→ Add(bias)]</c>.
/// Below opset 11 the fused com.microsoft DynamicQuantizeMatMul is emitted directly. Embedding tables read by
/// Gather are stored in int8 and dequantized after the Gather. Conv stays float. One handler per operator family
/// (<see cref="Handlers"/>, in DynamicOps.cs).
/// </summary>
internal sealed class DynamicQuantizer : IQuantizationMode
{
    static readonly IReadOnlyDictionary<string, IDynamicOp> Handlers = new Dictionary<string, IDynamicOp>(StringComparer.Ordinal)
    {
        ["MatMul"] = new DynamicMatMul(),
        ["Gemm"] = new DynamicGemm(),
        ["Gather"] = new DynamicGather(),
    };

    public QuantizationMode Mode => QuantizationMode.Dynamic;
    public IReadOnlyList<string> DefaultOps { get; } = [.. Handlers.Keys];
    public IReadOnlyList<string> SupportedOps { get; } = [.. Handlers.Keys];

    public (long Before, long After) Run(QuantizationRun run)
    {
        var (model, o, report) = (run.Model, run.Options, run.Report);
        var graph = model.Graph;
        var ops = QuantizationPlan.OpTypes(o, DefaultOps, SupportedOps);
        var c = new DynamicContext(model, o, report);
        if (!c.Standard)
        {
            EnsureMicrosoftDomain(model);
            report.Warn($"The model's opset is {c.Index.Opset} (< 11, no DynamicQuantizeLinear): MatMul/Gemm use ONNX Runtime's com.microsoft DynamicQuantizeMatMul, which only ONNX Runtime runs.");
        }
        var newNodes = new List<NodeProto>(graph.Node.Count * 2);
        int candidates = Math.Max(1, graph.Node.Count(n => ops.Contains(n.OpType))), done = 0;
        foreach (var node in graph.Node)
        {
            run.Cancel.ThrowIfCancellationRequested();
            var replacement = node.Domain is "" or "ai.onnx" && ops.Contains(node.OpType) ? Rewrite(node, c) : null;
            if (ops.Contains(node.OpType)) run.Progress?.Report(new QuantizationProgress("Quantizing weights", (double)++done / candidates));
            if (replacement is null) newNodes.Add(node);
            else newNodes.AddRange(replacement);
            if (node.OpType is "Conv" or "ConvTranspose")
            {
                report.Skip(node, "Conv stays float32 in dynamic mode (ONNX Runtime's dynamic ConvInteger path is slow)");
                report.Warn("Conv layers were left in float32: dynamic quantization of Conv is slow in ONNX Runtime. Use -Mode Static with -CalibrationData to quantize them.");
            }
        }
        graph.Node.Clear();
        graph.Node.AddRange(newNodes);
        RemoveUnused(graph);
        return (c.Weights.BytesBefore, c.Weights.BytesAfter);
    }

    static List<NodeProto>? Rewrite(NodeProto node, DynamicContext c)
    {
        if (MatchesAny(node.Name, c.Options.ExcludeNodes)) { c.Report.Skip(node, "excluded by -ExcludeNode"); return null; }
        if (WeightSource.Output(node) is null || WeightSource.Input(node, 0) is null || node.OpType != "Gather" && WeightSource.Input(node, 1) is null)
        {
            c.Report.Skip(node, $"{node.OpType} without its inputs or an output");
            return null;
        }
        return Handlers[node.OpType].Rewrite(node, c);
    }
}

/// <summary>What dynamic quantization's handlers share: the graph, the weight quantizer, and activations already quantized.</summary>
internal sealed class DynamicContext
{
    public DynamicContext(ModelProto model, QuantizationOptions o, QuantizationReport report)
    {
        Model = model;
        Options = o;
        Report = report;
        Index = new GraphIndex(model);
        Type = o.WeightType ?? QuantType.Int8;
        Symmetric = o.Symmetric ?? Type == QuantType.Int8;
        PerChannel = o.PerChannel ?? false;
        Weights = new WeightQuantizer(Index, Type, Symmetric, o.ReduceRange);
        Standard = Index.Opset >= 11;
    }

    public ModelProto Model { get; }
    public QuantizationOptions Options { get; }
    public QuantizationReport Report { get; }
    public GraphIndex Index { get; }
    public QuantType Type { get; }
    public bool Symmetric { get; }
    public bool PerChannel { get; }
    public WeightQuantizer Weights { get; }
    /// <summary>Opset 11+: standard DynamicQuantizeLinear/MatMulInteger; below, com.microsoft DynamicQuantizeMatMul.</summary>
    public bool Standard { get; }
    /// <summary>Activations quantized once, however many MatMuls read them (Q, K and V projections share their input).</summary>
    public Dictionary<string, (string Q, string Scale, string Zp)> QuantizedActivations { get; } = new(StringComparer.Ordinal);

    /// <summary>Dynamic quantization's operators take float32 activations; a float16 graph keeps its float16 nodes.</summary>
    public void SkipHalf(NodeProto node, WeightSource source)
    {
        Report.Skip(node, $"computes in {ElementTypes.Name((int)source.Compute)}: DynamicQuantizeLinear and MatMulInteger take float32 activations");
        Report.Warn($"Nodes that compute in {ElementTypes.Name((int)source.Compute)} were left as they are: dynamic int8 quantization needs float32 activations. Quantize the float32 model, or use -Mode WeightOnly, which keeps float16 computation.");
    }

    public string Describe(QuantizedWeight qw, string op) =>
        $"{Type} weight, {(qw.PerChannel ? "per channel" : "per tensor")}, {(Symmetric ? "symmetric" : "asymmetric")}{(Options.ReduceRange ? ", reduced range" : "")} → {op}";
}

/// <summary>Dynamic quantization of one operator family: the nodes that replace a node, or null (left as it is, reported when skipped).</summary>
internal interface IDynamicOp
{
    List<NodeProto>? Rewrite(NodeProto node, DynamicContext c);
}
