using Google.Protobuf;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// What a graph rewrite needs to know about a graph: which values are constants (initializers, Constant nodes,
/// and Identity nodes over them, as PyTorch emits for shared weights), who consumes a value, the opset, and fresh names.
/// </summary>
internal sealed class GraphIndex
{
    public const string MicrosoftDomain = "com.microsoft";

    readonly ModelProto model;
    readonly Dictionary<string, TensorProto> constants = new(StringComparer.Ordinal);
    readonly Dictionary<string, string> aliases = new(StringComparer.Ordinal);
    readonly HashSet<string> names = new(StringComparer.Ordinal);
    int counter;

    public GraphIndex(ModelProto model)
    {
        this.model = model;
        var graph = model.Graph;
        var inputs = graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        // An initializer that is also a graph input can be overridden at run time: not a constant.
        foreach (var t in graph.Initializer) if (!inputs.Contains(t.Name)) constants[t.Name] = t;
        foreach (var n in graph.Node)
        {
            if (n.OpType == "Constant" && n.Domain is "" or "ai.onnx" && n.Output.Count == 1)
            {
                var value = n.Attribute.FirstOrDefault(a => a.Name == "value" && a.T is not null);
                if (value is not null) constants[n.Output[0]] = value.T;
            }
        }
        // Identity over a constant is the same constant (PyTorch's export of tied/duplicated weights).
        bool changed = true;
        while (changed)
        {
            changed = false;
            foreach (var n in graph.Node)
                if (n.OpType == "Identity" && n.Input.Count == 1 && n.Output.Count == 1 && !aliases.ContainsKey(n.Output[0])
                    && (constants.ContainsKey(n.Input[0]) || aliases.ContainsKey(n.Input[0])))
                {
                    aliases[n.Output[0]] = aliases.TryGetValue(n.Input[0], out var root) ? root : n.Input[0];
                    changed = true;
                }
        }
        foreach (var v in graph.Input) names.Add(v.Name);
        foreach (var v in graph.Output) names.Add(v.Name);
        foreach (var t in graph.Initializer) names.Add(t.Name);
        foreach (var n in graph.Node) { names.Add(n.Name); foreach (var o in n.Output) names.Add(o); foreach (var i in n.Input) names.Add(i); }
        Opset = model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 1;
    }

    public long Opset { get; }

    /// <summary>The name of the constant a value really is (through Identity chains), or null when it is not constant.</summary>
    public string? ConstantSource(string name)
    {
        if (string.IsNullOrEmpty(name)) return null;
        if (aliases.TryGetValue(name, out var root)) return root;
        return constants.ContainsKey(name) ? name : null;
    }

    public TensorProto? Constant(string name) => ConstantSource(name) is { } src ? constants[src] : null;

    public bool IsFloatConstant(string name, out TensorProto tensor)
    {
        tensor = Constant(name)!;
        return tensor is not null && tensor.DataType == (int)DT.Float;
    }

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
        model.Graph.Initializer.Add(t);
        constants[t.Name] = t;
        return t;
    }

    public void EnsureMicrosoftDomain()
    {
        if (!model.OpsetImport.Any(o => o.Domain == MicrosoftDomain))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = 1 });
    }

    public static NodeProto Node(string opType, string name, IEnumerable<string> inputs, IEnumerable<string> outputs, string domain = "", params AttributeProto[] attributes)
    {
        var n = new NodeProto { OpType = opType, Name = name, Domain = domain };
        n.Input.AddRange(inputs);
        n.Output.AddRange(outputs);
        n.Attribute.AddRange(attributes);
        return n;
    }

    public static TensorProto Scalar(string name, float value) => TensorData.FromFloat(name, [], [value]);

    public static TensorProto Bytes(string name, DT type, long[] dims, byte[] raw) => TensorData.FromRaw(name, type, dims, raw);

    public static TensorProto Half(string name, long[] dims, byte[] raw) => TensorData.FromRaw(name, DT.Float16, dims, raw);

    public static long? IntAttr(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : null;
    public static float? FloatAttr(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.F : null;

    /// <summary>
    /// Removes initializers and Constant/Identity nodes nothing reads any more (weights replaced by their quantized copies).
    /// </summary>
    public static void RemoveUnused(GraphProto graph)
    {
        while (true)
        {
            var used = new HashSet<string>(StringComparer.Ordinal);
            foreach (var n in graph.Node) foreach (var i in n.Input) used.Add(i);
            foreach (var o in graph.Output) used.Add(o.Name);
            foreach (var n in graph.Node) CollectSubgraphInputs(n, used);
            int removed = 0;
            for (int i = graph.Node.Count - 1; i >= 0; i--)
            {
                var n = graph.Node[i];
                if (n.OpType is "Constant" or "Identity" && n.Domain is "" or "ai.onnx" && n.Output.All(o => !used.Contains(o)))
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

    static void CollectSubgraphInputs(NodeProto n, HashSet<string> used)
    {
        foreach (var a in n.Attribute)
        {
            if (a.G is not null) Collect(a.G, used);
            foreach (var g in a.Graphs) Collect(g, used);
        }
        static void Collect(GraphProto g, HashSet<string> used)
        {
            foreach (var n in g.Node) { foreach (var i in n.Input) used.Add(i); CollectSubgraphInputs(n, used); }
            foreach (var o in g.Output) used.Add(o.Name);
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

    public static ByteString Utf8(string s) => ByteString.CopyFromUtf8(s);
}
