using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Who produces and who consumes each tensor of a graph, and which node inputs are constants
/// (an initializer, a Constant node, or an Identity of either, as PyTorch emits for shared weights).
/// Built on the proto it indexes; rebuild it after editing the graph's structure.
/// </summary>
internal sealed class GraphIndex
{
    public GraphIndex(GraphProto graph)
    {
        Graph = graph;
        foreach (var t in graph.Initializer) Initializers[t.Name] = t;
        foreach (var node in graph.Node)
        {
            foreach (var o in node.Output) if (o.Length > 0) Producer[o] = node;
            for (int i = 0; i < node.Input.Count; i++)
            {
                if (node.Input[i].Length == 0) continue;
                if (!Consumers.TryGetValue(node.Input[i], out var list)) Consumers[node.Input[i]] = list = [];
                list.Add((node, i));
            }
        }
        foreach (var o in graph.Output) GraphOutputs.Add(o.Name);
        foreach (var node in graph.Node)
            foreach (var a in node.Attribute)
            {
                if (a.G is not null) CollectReferences(a.G);
                foreach (var g in a.Graphs) CollectReferences(g);
            }
        var initNames = Initializers.Keys.ToHashSet(StringComparer.Ordinal);
        foreach (var i in graph.Input) if (!initNames.Contains(i.Name)) GraphInputs.Add(i.Name);
    }

    public GraphProto Graph { get; }
    public Dictionary<string, TensorProto> Initializers { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, NodeProto> Producer { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, List<(NodeProto Node, int Input)>> Consumers { get; } = new(StringComparer.Ordinal);
    public HashSet<string> GraphOutputs { get; } = new(StringComparer.Ordinal);
    public HashSet<string> GraphInputs { get; } = new(StringComparer.Ordinal);

    /// <summary>Names read by nodes inside subgraphs (If/Loop/Scan bodies); they may come from this graph.</summary>
    public HashSet<string> SubgraphReferences { get; } = new(StringComparer.Ordinal);

    void CollectReferences(GraphProto g)
    {
        foreach (var n in g.Node)
        {
            foreach (var i in n.Input) SubgraphReferences.Add(i);
            foreach (var a in n.Attribute)
            {
                if (a.G is not null) CollectReferences(a.G);
                foreach (var sub in a.Graphs) CollectReferences(sub);
            }
        }
        foreach (var o in g.Output) SubgraphReferences.Add(o.Name);
    }

    public IReadOnlyList<(NodeProto Node, int Input)> ConsumersOf(string tensor) =>
        Consumers.TryGetValue(tensor, out var list) ? list : [];

    /// <summary>The constant a tensor name stands for, looking through Identity; null when it is computed.</summary>
    public TensorProto? Constant(string name)
    {
        for (int hops = 0; hops < 16; hops++)
        {
            if (Initializers.TryGetValue(name, out var t)) return GraphInputs.Contains(name) ? null : t;
            if (!Producer.TryGetValue(name, out var node)) return null;
            if (node.OpType == "Identity" && node.Domain.Length == 0) { name = node.Input[0]; continue; }
            if (node.OpType == "Constant" && node.Domain.Length == 0)
                return node.Attribute.FirstOrDefault(a => a.Name == "value")?.T;
            return null;
        }
        return null;
    }

    /// <summary>The initializer a tensor name resolves to through Identity (not Constant nodes), or null.</summary>
    public string? InitializerName(string name)
    {
        for (int hops = 0; hops < 16; hops++)
        {
            if (Initializers.ContainsKey(name)) return name;
            if (Producer.TryGetValue(name, out var node) && node.OpType == "Identity" && node.Domain.Length == 0) { name = node.Input[0]; continue; }
            return null;
        }
        return null;
    }

    public static long IntAttr(NodeProto node, string name, long fallback)
    {
        foreach (var a in node.Attribute) if (a.Name == name) return a.I;
        return fallback;
    }

    public static long[]? IntsAttr(NodeProto node, string name)
    {
        foreach (var a in node.Attribute) if (a.Name == name) return a.Ints.ToArray();
        return null;
    }

    public static void SetIntAttr(NodeProto node, string name, long value)
    {
        foreach (var a in node.Attribute)
            if (a.Name == name) { a.I = value; return; }
        node.Attribute.Add(GraphBuilder.Attr(name, value));
    }
}

/// <summary>
/// Concrete shapes of every tensor, learned by running the model once in ONNX Runtime on synthesized inputs
/// with every node output exposed as a graph output. Structured pruning needs ranks and sizes that the file
/// often does not state, and the probe run doubles as the check that a rewritten model loads and runs.
/// </summary>
internal sealed class ShapeProbe
{
    ShapeProbe(Dictionary<string, long[]> shapes, Dictionary<string, long[]> outputs, string inputs)
    {
        Shapes = shapes;
        OutputShapes = outputs;
        InputDescription = inputs;
    }

    public Dictionary<string, long[]> Shapes { get; }
    public Dictionary<string, long[]> OutputShapes { get; }
    /// <summary>The input shapes the probe ran with, for reports ("x[1,3,64,64]").</summary>
    public string InputDescription { get; }

    public long[]? Shape(string tensor) => Shapes.TryGetValue(tensor, out var s) ? s : null;

    public static ShapeProbe Run(OnnxModel model, long dimension, CancellationToken cancel)
    {
        cancel.ThrowIfCancellationRequested();
        var inputs = InputSynthesizer.Synthesize(model, new SynthesisOptions { BatchSize = 1, DefaultDimension = dimension });
        var probe = model.Proto.Clone();
        var graph = probe.Graph;
        var existing = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var inputNames = graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var node in graph.Node)
            foreach (var o in node.Output)
                if (o.Length > 0 && existing.Add(o) && !inputNames.Contains(o)) graph.Output.Add(new ValueInfoProto { Name = o });
        var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var kv in inputs) shapes[kv.Key] = kv.Value.Shape;
        foreach (var t in model.Proto.Graph.Initializer) shapes[t.Name] = t.Dims.ToArray();
        var outputShapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
        try
        {
            using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
            using var session = new InferenceSession(probe.ToByteArray(), options);
            var names = inputs.Keys.ToList();
            var values = names.Select(n => ModelSession.ToOrtValue(inputs[n])).ToList();
            try
            {
                var wanted = session.OutputMetadata.Keys.ToList();
                using var run = new RunOptions();
                using var results = session.Run(run, names, values, wanted);
                for (int i = 0; i < wanted.Count; i++)
                {
                    if (!results[i].IsTensor) continue;
                    shapes[wanted[i]] = results[i].GetTensorTypeAndShape().Shape;
                }
            }
            finally { foreach (var v in values) v.Dispose(); }
        }
        catch (OnnxRuntimeException e)
        {
            throw new EngineException("PruningShapeProbeFailed", EngineErrorKind.InvalidOperation,
                $"ONNX Runtime could not run model '{model.Name}' to learn its tensor shapes: {e.Message}", e) { Target = model.SourcePath };
        }
        foreach (var o in model.Proto.Graph.Output) if (shapes.TryGetValue(o.Name, out var s)) outputShapes[o.Name] = s;
        string description = string.Join(", ", inputs.Select(kv => $"{kv.Key}[{string.Join(",", kv.Value.Shape)}]"));
        return new ShapeProbe(shapes, outputShapes, description);
    }
}

/// <summary>Parameter and FLOP counts: FLOPs of MatMul, Gemm, Conv and ConvTranspose (2 per multiply-add) at the probe's shapes.</summary>
internal static class CostModel
{
    public static long Parameters(GraphProto graph)
    {
        long n = 0;
        foreach (var t in ModelIO.AllTensors(graph)) n += TensorData.ElementCount(t);
        return n;
    }

    public static long Flops(GraphProto graph, ShapeProbe probe)
    {
        long total = 0;
        foreach (var node in graph.Node) total += Flops(node, probe);
        return total;
    }

    public static long Flops(NodeProto node, ShapeProbe probe)
    {
        if (node.Domain.Length != 0 || node.Output.Count == 0) return 0;
        var output = probe.Shape(node.Output[0]);
        if (output is null) return 0;
        long outCount = Product(output);
        switch (node.OpType)
        {
            case "MatMul":
                {
                    var a = probe.Shape(node.Input[0]);
                    return a is { Length: > 0 } ? 2 * outCount * a[^1] : 0;
                }
            case "Gemm":
                {
                    var a = probe.Shape(node.Input[0]);
                    if (a is not { Length: 2 }) return 0;
                    long k = GraphIndex.IntAttr(node, "transA", 0) != 0 ? a[0] : a[1];
                    return 2 * outCount * k;
                }
            case "Conv":
                {
                    var w = probe.Shape(node.Input[1]);
                    return w is { Length: >= 3 } ? 2 * outCount * Product(w.AsSpan(1)) : 0;
                }
            case "ConvTranspose":
                {
                    var x = probe.Shape(node.Input[0]);
                    var w = probe.Shape(node.Input[1]);
                    return x is null || w is not { Length: >= 3 } ? 0 : 2 * Product(x) * Product(w.AsSpan(1));
                }
            default: return 0;
        }
    }

    public static long Product(ReadOnlySpan<long> dims)
    {
        long p = 1;
        foreach (long d in dims) p *= d;
        return p;
    }
}
