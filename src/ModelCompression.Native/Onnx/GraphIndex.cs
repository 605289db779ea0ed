using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// What a graph rewrite needs to know about a graph: who produces and who consumes each tensor, which values are
/// constants (an initializer, a Constant node, or an Identity chain over either, as PyTorch emits for shared weights),
/// attribute helpers, wildcard matching of node names, and fresh names.
/// Built on the proto it indexes; rebuild it after editing the graph's structure.
/// </summary>
internal sealed class GraphIndex
{
    readonly bool inputInitializersAreConstant;
    readonly HashSet<string> overridable = new(StringComparer.Ordinal);
    readonly HashSet<string> names = new(StringComparer.Ordinal);
    int counter;

    /// <summary>Indexes a model's main graph for rewrites that must not bake in an initializer the caller may override.</summary>
    public GraphIndex(ModelProto model) : this(model.Graph, inputInitializersAreConstant: false)
    {
        Opset = model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 1;
    }

    /// <param name="graph">The graph to index.</param>
    /// <param name="inputInitializersAreConstant">
    /// Whether an initializer that is also a graph input (overridable at run time) counts as a constant. Pruning says yes:
    /// older exporters list every weight as an input, and pruning reshapes the weight together with its consumers.
    /// Quantization says no: it would freeze a value the caller may replace.
    /// </param>
    public GraphIndex(GraphProto graph, bool inputInitializersAreConstant)
    {
        Graph = graph;
        this.inputInitializersAreConstant = inputInitializersAreConstant;
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
            CollectSubgraphReads(node, SubgraphReferences);
        }
        foreach (var o in graph.Output) GraphOutputs.Add(o.Name);
        foreach (var i in graph.Input)
            if (Initializers.ContainsKey(i.Name)) overridable.Add(i.Name); else GraphInputs.Add(i.Name);

        foreach (var v in graph.Input) names.Add(v.Name);
        foreach (var v in graph.Output) names.Add(v.Name);
        foreach (var t in graph.Initializer) names.Add(t.Name);
        foreach (var n in graph.Node) { names.Add(n.Name); foreach (var o in n.Output) names.Add(o); foreach (var i in n.Input) names.Add(i); }
    }

    public GraphProto Graph { get; }
    public Dictionary<string, TensorProto> Initializers { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, NodeProto> Producer { get; } = new(StringComparer.Ordinal);
    public Dictionary<string, List<(NodeProto Node, int Input)>> Consumers { get; } = new(StringComparer.Ordinal);
    public HashSet<string> GraphOutputs { get; } = new(StringComparer.Ordinal);
    /// <summary>Graph inputs that are not initializers: the values a caller must feed.</summary>
    public HashSet<string> GraphInputs { get; } = new(StringComparer.Ordinal);

    /// <summary>Names read by nodes inside subgraphs (If/Loop/Scan bodies); they may come from this graph.</summary>
    public HashSet<string> SubgraphReferences { get; } = new(StringComparer.Ordinal);

    /// <summary>The default-domain opset of the model (1 when indexed from a bare graph).</summary>
    public long Opset { get; } = 1;

    public IReadOnlyList<(NodeProto Node, int Input)> ConsumersOf(string tensor) =>
        Consumers.TryGetValue(tensor, out var list) ? list : [];

    /// <summary>
    /// The name of the constant a value really is (an initializer or a Constant node's output, reached through
    /// Identity chains), or null when it is computed.
    /// </summary>
    public string? ConstantSource(string name)
    {
        // Graphs are acyclic, so a chain is never longer than the node count; the bound only guards malformed files.
        for (int hops = 0; hops <= Graph.Node.Count && !string.IsNullOrEmpty(name); hops++)
        {
            if (Initializers.ContainsKey(name)) return inputInitializersAreConstant || !overridable.Contains(name) ? name : null;
            if (!Producer.TryGetValue(name, out var node) || !IsDefaultDomain(node)) return null;
            if (node.OpType == "Identity" && node.Input.Count == 1) { name = node.Input[0]; continue; }
            return ConstantValue(node) is null ? null : name;
        }
        return null;
    }

    /// <summary>The constant a tensor name stands for, looking through Identity; null when it is computed.</summary>
    public TensorProto? Constant(string name) =>
        ConstantSource(name) is not { } src ? null
        : Initializers.TryGetValue(src, out var t) ? t : ConstantValue(Producer[src]);

    public bool IsFloatConstant(string name, out TensorProto tensor)
    {
        tensor = Constant(name)!;
        return tensor is not null && tensor.DataType == (int)DT.Float;
    }

    /// <summary>The initializer a tensor name resolves to through Identity (not Constant nodes), or null.</summary>
    public string? InitializerName(string name)
    {
        for (int hops = 0; hops <= Graph.Node.Count; hops++)
        {
            if (Initializers.ContainsKey(name)) return name;
            if (Producer.TryGetValue(name, out var node) && node.OpType == "Identity" && IsDefaultDomain(node) && node.Input.Count == 1) { name = node.Input[0]; continue; }
            return null;
        }
        return null;
    }

    /// <summary>The tensor a Constant node holds in its "value" attribute, or null for any other node.</summary>
    public static TensorProto? ConstantValue(NodeProto node) =>
        node.OpType == "Constant" && IsDefaultDomain(node) && node.Output.Count == 1
            ? node.Attribute.FirstOrDefault(a => a.Name == "value")?.T
            : null;

    static bool IsDefaultDomain(NodeProto node) => node.Domain is "" or "ai.onnx";

    /// <summary>A name not used anywhere in the graph yet.</summary>
    public string Fresh(string hint)
    {
        string baseName = hint.Length > 120 ? hint[..120] : hint;
        string name = baseName;
        while (!names.Add(name)) name = $"{baseName}_{++counter}";
        return name;
    }

    public TensorProto AddInitializer(TensorProto t)
    {
        names.Add(t.Name);
        Graph.Initializer.Add(t);
        Initializers[t.Name] = t;
        return t;
    }

    public static long? IntAttr(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : null;
    public static long IntAttr(NodeProto n, string name, long fallback) => IntAttr(n, name) ?? fallback;
    public static float? FloatAttr(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.F : null;
    public static long[]? IntsAttr(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.Ints.ToArray() : null;

    public static void SetIntAttr(NodeProto node, string name, long value)
    {
        foreach (var a in node.Attribute)
            if (a.Name == name) { a.I = value; return; }
        node.Attribute.Add(GraphBuilder.Attr(name, value));
    }

    /// <summary>
    /// Removes initializers and Constant/Identity/Cast nodes nothing reads any more (weights replaced by rewritten copies,
    /// with the Cast that turned their stored type into the computation type).
    /// </summary>
    public static void RemoveUnused(GraphProto graph)
    {
        while (true)
        {
            var used = new HashSet<string>(StringComparer.Ordinal);
            foreach (var n in graph.Node) foreach (var i in n.Input) used.Add(i);
            foreach (var o in graph.Output) used.Add(o.Name);
            foreach (var n in graph.Node) CollectSubgraphReads(n, used);
            int removed = 0;
            for (int i = graph.Node.Count - 1; i >= 0; i--)
            {
                var n = graph.Node[i];
                if (n.OpType is "Constant" or "Identity" or "Cast" && IsDefaultDomain(n) && n.Output.All(o => !used.Contains(o)))
                { graph.Node.RemoveAt(i); removed++; }
            }
            var inputs = graph.Input.Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
            for (int i = graph.Initializer.Count - 1; i >= 0; i--)
                if (!used.Contains(graph.Initializer[i].Name) && !inputs.Contains(graph.Initializer[i].Name)) { graph.Initializer.RemoveAt(i); removed++; }
            if (removed == 0) break;
        }
        var live = graph.Initializer.Select(t => t.Name).Concat(graph.Node.SelectMany(n => n.Output)).Concat(graph.Input.Select(v => v.Name)).ToHashSet(StringComparer.Ordinal);
        for (int i = graph.ValueInfo.Count - 1; i >= 0; i--)
            if (!live.Contains(graph.ValueInfo[i].Name)) graph.ValueInfo.RemoveAt(i);
    }

    /// <summary>Adds the names read inside a node's subgraphs (If/Loop/Scan bodies, nested), which may come from the outer graph.</summary>
    static void CollectSubgraphReads(NodeProto n, HashSet<string> reads)
    {
        foreach (var a in n.Attribute)
        {
            if (a.G is not null) Collect(a.G, reads);
            foreach (var g in a.Graphs) Collect(g, reads);
        }
        static void Collect(GraphProto g, HashSet<string> reads)
        {
            foreach (var n in g.Node) { foreach (var i in n.Input) reads.Add(i); CollectSubgraphReads(n, reads); }
            foreach (var o in g.Output) reads.Add(o.Name);
        }
    }

    /// <summary>True when <paramref name="name"/> matches one of the wildcard patterns (* and ?), case-insensitively.</summary>
    public static bool MatchesAny(string name, IReadOnlyList<string> patterns)
    {
        foreach (var p in patterns) if (Wildcard(name, p)) return true;
        return false;
    }

    static bool Wildcard(string s, string p)
    {
        int si = 0, pi = 0, star = -1, mark = 0;
        while (si < s.Length)
        {
            if (pi < p.Length && (p[pi] == '?' || char.ToLowerInvariant(p[pi]) == char.ToLowerInvariant(s[si]))) { si++; pi++; }
            else if (pi < p.Length && p[pi] == '*') { star = pi++; mark = si; }
            else if (star >= 0) { pi = star + 1; si = ++mark; }
            else return false;
        }
        while (pi < p.Length && p[pi] == '*') pi++;
        return pi == p.Length;
    }
}
