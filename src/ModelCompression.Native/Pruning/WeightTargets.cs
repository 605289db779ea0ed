using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Pruning;

/// <summary>How a weight tensor's elements map to (output, input) pairs.</summary>
internal enum WeightLayout
{
    /// <summary>[K, N] as MatMul (and Gemm with transB=0) reads it: flat = i·N + o.</summary>
    InputMajor,
    /// <summary>[O, I...] as Gemm with transB=1 and Conv read it: flat = o·I + i.</summary>
    OutputMajor,
}

/// <summary>One constant weight of MatMul/Gemm/Conv nodes, with its layout and the nodes that read it.</summary>
internal sealed class WeightTarget
{
    public required string Name { get; init; }
    public required TensorProto Tensor { get; set; }
    public required List<NodeProto> Nodes { get; init; }
    public required string OpType { get; init; }
    public required WeightLayout Layout { get; init; }
    public required int Outputs { get; init; }
    /// <summary>Inputs per output: K for MatMul/Gemm, C/group × kernel for Conv.</summary>
    public required int Inputs { get; init; }
    /// <summary>Product of the kernel's spatial sizes (1 for MatMul/Gemm).</summary>
    public int KernelSize { get; init; } = 1;
    public int Groups { get; init; } = 1;

    public long Elements => (long)Outputs * Inputs;
    public string Label => Nodes.Count == 1 ? Nodes[0].Name : $"{Nodes[0].Name} (+{Nodes.Count - 1} sharing '{Name}')";

    public int FlatIndex(int o, int i) => Layout == WeightLayout.InputMajor ? i * Outputs + o : o * Inputs + i;

    /// <summary>Number of input activation channels the nodes' data input has along its channel axis.</summary>
    public int ActivationChannels => OpType == "Conv" ? Inputs / KernelSize * Groups : Inputs;

    /// <summary>The input activation channel that input index i of output o multiplies.</summary>
    public int ActivationChannel(int o, int i)
    {
        if (OpType != "Conv") return i;
        int perGroup = Inputs / KernelSize;
        int g = o / Math.Max(1, Outputs / Groups);
        return g * perGroup + i / KernelSize;
    }

    /// <summary>The j-th input index of a row in N:M grouping order: for Conv, input channels vary fastest (each kernel position in turn).</summary>
    public int GroupOrder(int j)
    {
        if (KernelSize == 1) return j;
        int channels = Inputs / KernelSize;
        return (j % channels) * KernelSize + j / channels;
    }

    /// <summary>The data input and its channel axis (negative: from the end) for each node that reads the weight.</summary>
    public IEnumerable<(string Tensor, int Axis)> ActivationInputs() => Nodes.Select(n => (n.Input[0], n.OpType switch
    {
        "MatMul" => -1,
        "Gemm" => GraphIndex.IntAttr(n, "transA", 0) != 0 ? 0 : 1,
        _ => 1,
    }));
}

internal static class WeightTargets
{
    /// <summary>The weights the options select, and report entries for the ones they skip and why.</summary>
    public static List<WeightTarget> Find(GraphIndex index, PruningOptions options, List<Onnx.ReportEntry> skipped)
    {
        var ops = options.EffectiveOpTypes;
        var byName = new Dictionary<string, (List<NodeProto> Nodes, List<string> Layouts)>(StringComparer.Ordinal);
        var blocked = new Dictionary<string, string>(StringComparer.Ordinal);
        var order = new List<string>();
        var fromConstants = new Dictionary<string, bool>(StringComparer.Ordinal);
        foreach (var node in index.Graph.Node)
        {
            if (node.Domain.Length != 0 || !PruningOptions.SupportedOpTypes.Contains(node.OpType) || node.Input.Count < 2) continue;
            if (!ops.Contains(node.OpType)) continue;
            string? name = index.InitializerName(node.Input[1]);
            if (options.IsExcluded(node.Name))
            {
                skipped.Add(new(node.Name, node.OpType, "Skipped", "excluded by -ExcludeNode"));
                if (name is not null) blocked[name] = $"shared with excluded node '{node.Name}'";
                continue;
            }
            if (name is null)
            {
                // A product of two activations (attention's Q·Kᵀ, P·V) has no weight: not a layer, nothing to report.
                if (node.OpType == "MatMul" && !FromConstants(index, node.Input[1], fromConstants)) continue;
                skipped.Add(new(node.Name, node.OpType, "Skipped", index.Constant(node.Input[1]) is null
                    ? "weight is computed at run time, not a constant" : "weight is a Constant node, not an initializer"));
                continue;
            }
            if (index.InitializerName(node.Input[0]) is not null)
            {
                skipped.Add(new(node.Name, node.OpType, "Skipped", "both inputs are constants"));
                continue;
            }
            var t = index.Initializers[name];
            string? layout = Layout(node, t, out string? why);
            if (layout is null) { skipped.Add(new(node.Name, node.OpType, "Skipped", why!)); blocked[name] = why!; continue; }
            if (!byName.TryGetValue(name, out var entry)) { byName[name] = entry = ([], []); order.Add(name); }
            entry.Nodes.Add(node);
            entry.Layouts.Add(layout);
        }

        var result = new List<WeightTarget>();
        foreach (var name in order)
        {
            var (nodes, layouts) = byName[name];
            var t = index.Initializers[name];
            if (blocked.TryGetValue(name, out var reason)) { skipped.Add(new(nodes[0].Name, nodes[0].OpType, "Skipped", $"weight '{name}' is {reason}")); continue; }
            if (layouts.Distinct().Count() > 1) { skipped.Add(new(nodes[0].Name, nodes[0].OpType, "Skipped", $"weight '{name}' is read with different layouts by {nodes.Count} nodes")); continue; }
            if (!IsFloat(t.DataType)) { skipped.Add(new(nodes[0].Name, nodes[0].OpType, "Skipped", $"weight '{name}' is {Onnx.ElementTypes.Name(t.DataType)}; only float32, float16 and bfloat16 weights are pruned")); continue; }
            long elements = Onnx.TensorData.ElementCount(t);
            if (elements < options.MinElements) { skipped.Add(new(nodes[0].Name, nodes[0].OpType, "Skipped", $"weight '{name}' has {elements} elements, fewer than -MinElements {options.MinElements}")); continue; }
            if (elements > int.MaxValue) { skipped.Add(new(nodes[0].Name, nodes[0].OpType, "Skipped", $"weight '{name}' has more than 2^31 elements")); continue; }
            var node = nodes[0];
            var dims = t.Dims;
            result.Add(layouts[0] switch
            {
                "KN" => new WeightTarget { Name = name, Tensor = t, Nodes = nodes, OpType = node.OpType, Layout = WeightLayout.InputMajor, Outputs = (int)dims[1], Inputs = (int)dims[0] },
                "NK" => new WeightTarget { Name = name, Tensor = t, Nodes = nodes, OpType = node.OpType, Layout = WeightLayout.OutputMajor, Outputs = (int)dims[0], Inputs = (int)dims[1] },
                _ => new WeightTarget
                {
                    Name = name, Tensor = t, Nodes = nodes, OpType = node.OpType, Layout = WeightLayout.OutputMajor,
                    Outputs = (int)dims[0], Inputs = (int)(elements / dims[0]), KernelSize = (int)(elements / dims[0] / dims[1]),
                    Groups = (int)GraphIndex.IntAttr(node, "group", 1),
                },
            });
        }
        return result;
    }

    /// <summary>Whether a tensor is computed from constants only (a dequantized or transposed weight), not from the model's inputs.</summary>
    static bool FromConstants(GraphIndex index, string name, Dictionary<string, bool> memo)
    {
        if (name.Length == 0 || index.Constant(name) is not null) return true;
        if (memo.TryGetValue(name, out bool known)) return known;
        memo[name] = false;   // cycles (malformed graphs) and graph inputs are not constant
        return memo[name] = index.Producer.TryGetValue(name, out var p) && p.Input.All(i => FromConstants(index, i, memo));
    }

    /// <summary>Element types whose weights are pruned: float32, float16, bfloat16.</summary>
    public static bool IsFloat(int type) => type is (int)DT.Float or (int)DT.Float16 or (int)DT.Bfloat16;

    static string? Layout(NodeProto node, TensorProto t, out string? why)
    {
        why = null;
        switch (node.OpType)
        {
            case "MatMul":
                if (t.Dims.Count != 2) { why = $"MatMul weight has rank {t.Dims.Count}; only 2-D weights are pruned"; return null; }
                return "KN";
            case "Gemm":
                if (t.Dims.Count != 2) { why = "Gemm weight is not 2-D"; return null; }
                return GraphIndex.IntAttr(node, "transB", 0) != 0 ? "NK" : "KN";
            default:
                if (t.Dims.Count < 3) { why = "Conv weight has rank below 3"; return null; }
                return "Conv:" + GraphIndex.IntAttr(node, "group", 1);
        }
    }
}
