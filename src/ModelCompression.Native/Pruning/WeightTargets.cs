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

/// <summary>
/// How a layer's weight is laid out for pruning, as its operator's rule reads it (<see cref="ChannelRule.Layer"/>): its
/// outputs and inputs per output (for a convolution: input channels per group x kernel positions), and the axis of the
/// layer's data input that carries the input channels (negative: from the end).
/// </summary>
/// <remarks>Nodes that share a weight must read it alike (all but the activation axis).</remarks>
internal sealed record LayerShape(WeightLayout Layout, int Outputs, int Inputs, int ActivationAxis, int KernelSize = 1, int Groups = 1);

/// <summary>One constant weight of layer nodes (MatMul, Gemm, Conv), with its layout and the nodes that read it.</summary>
internal sealed class WeightTarget
{
    public required string Name { get; init; }
    public required TensorProto Tensor { get; set; }
    public required List<NodeProto> Nodes { get; init; }
    public required string OpType { get; init; }
    public required LayerShape Shape { get; init; }
    /// <summary>Per node, the channel axis of its data input.</summary>
    public required int[] ActivationAxes { get; init; }
    public WeightLayout Layout => Shape.Layout;
    public int Outputs => Shape.Outputs;
    /// <summary>Inputs per output: K for MatMul/Gemm, C/group × kernel for Conv.</summary>
    public int Inputs => Shape.Inputs;
    /// <summary>Product of the kernel's spatial sizes (1 for MatMul/Gemm).</summary>
    public int KernelSize => Shape.KernelSize;
    public int Groups => Shape.Groups;

    public long Elements => (long)Outputs * Inputs;
    public string Label => Nodes.Count == 1 ? Nodes[0].Name : $"{Nodes[0].Name} (+{Nodes.Count - 1} sharing '{Name}')";

    public int FlatIndex(int o, int i) => Layout == WeightLayout.InputMajor ? i * Outputs + o : o * Inputs + i;

    /// <summary>Number of input activation channels the nodes' data input has along its channel axis.</summary>
    public int ActivationChannels => Inputs / KernelSize * Groups;

    /// <summary>The input activation channel that input index i of output o multiplies.</summary>
    public int ActivationChannel(int o, int i)
    {
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
    public IEnumerable<(string Tensor, int Axis)> ActivationInputs() => Nodes.Select((n, i) => (n.Input[0], ActivationAxes[i]));
}

internal static class WeightTargets
{
    /// <summary>The weights the options select, and report entries for the ones they skip and why.</summary>
    public static List<WeightTarget> Find(GraphIndex index, PruningOptions options, List<Onnx.ReportEntry> skipped)
    {
        var ops = options.EffectiveOpTypes;
        var byName = new Dictionary<string, (List<NodeProto> Nodes, List<LayerShape> Layouts)>(StringComparer.Ordinal);
        var blocked = new Dictionary<string, string>(StringComparer.Ordinal);
        var order = new List<string>();
        var fromConstants = new Dictionary<string, bool>(StringComparer.Ordinal);
        foreach (var node in index.Graph.Node)
        {
            if (node.Input.Count < 2 || ChannelRules.For(node) is not { ReadsWeights: true } rule) continue;
            if (node.Domain.Length != 0 || !PruningOptions.SupportedOpTypes.Contains(node.OpType))
            {
                // A layer pruning does not handle (a quantized MatMulNBits): its rule says why, unless -OpType narrows the choice.
                if (options.OpTypes.Count == 0 && index.Constant(node.Input[1]) is { } weight && rule.Layer(node, weight, out string? reason) is null && reason is not null)
                    skipped.Add(new(node.Name, node.OpType, "Skipped", reason));
                continue;
            }
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
            string? why = null;
            if (rule.Layer(node, t, out why) is not { } shape)
            {
                why ??= $"{node.OpType} has no layer rule";
                skipped.Add(new(node.Name, node.OpType, "Skipped", why));
                blocked[name] = why;
                continue;
            }
            if (!byName.TryGetValue(name, out var entry)) { byName[name] = entry = ([], []); order.Add(name); }
            entry.Nodes.Add(node);
            entry.Layouts.Add(shape);
        }

        var result = new List<WeightTarget>();
        foreach (var name in order)
        {
            var (nodes, layouts) = byName[name];
            var t = index.Initializers[name];
            if (blocked.TryGetValue(name, out var reason)) { skipped.Add(new(nodes[0].Name, nodes[0].OpType, "Skipped", $"weight '{name}' is {reason}")); continue; }
            if (layouts.Select(l => l with { ActivationAxis = 0 }).Distinct().Count() > 1) { skipped.Add(new(nodes[0].Name, nodes[0].OpType, "Skipped", $"weight '{name}' is read with different layouts by {nodes.Count} nodes")); continue; }
            if (!IsFloat(t.DataType)) { skipped.Add(new(nodes[0].Name, nodes[0].OpType, "Skipped", $"weight '{name}' is {Onnx.ElementTypes.Name(t.DataType)}; only float32, float16 and bfloat16 weights are pruned")); continue; }
            long elements = Onnx.TensorData.ElementCount(t);
            if (elements < options.MinElements) { skipped.Add(new(nodes[0].Name, nodes[0].OpType, "Skipped", $"weight '{name}' has {elements} elements, fewer than -MinElements {options.MinElements}")); continue; }
            if (elements > int.MaxValue) { skipped.Add(new(nodes[0].Name, nodes[0].OpType, "Skipped", $"weight '{name}' has more than 2^31 elements")); continue; }
            result.Add(new WeightTarget { Name = name, Tensor = t, Nodes = nodes, OpType = nodes[0].OpType, Shape = layouts[0], ActivationAxes = [.. layouts.Select(l => l.ActivationAxis)] });
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
}
