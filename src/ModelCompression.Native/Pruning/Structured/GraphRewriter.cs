using System.Runtime.InteropServices;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Rewriting: applies the decided groups' edits to the graph. Constants lose the removed positions (a constant shared
/// by inputs that lose different positions is split into copies), integer entries of shape targets and slice bounds
/// and integer attributes (num_heads, group) drop by the removed positions, and what nothing reads any more goes.
/// </summary>
internal static class GraphRewriter
{
    /// <summary>Rewrites the graph; returns notes about constants that had to be split.</summary>
    public static List<string> Apply(GraphProto graph, GraphIndex index, IReadOnlyList<ChannelGroup> groups)
    {
        var notes = new List<string>();
        var edits = Edits.Collect(groups);
        SliceConstants(graph, index, edits.Removals, edits.ChangedTensors, notes);
        foreach (var ((node, input), list) in edits.Entries)
        {
            var original = index.Constant(node.Input[input])!;
            var values = TensorData.ToInt64(original);
            foreach (var (entry, change) in list) values[entry] = change(values[entry]);
            string name = Unique(index, (node.Name.Length > 0 ? node.Name : node.Output[0]) + ".pruned_shape");
            var t = original.DataType == (int)DT.Int32
                ? TensorData.FromRaw(name, DT.Int32, [.. original.Dims], MemoryMarshal.AsBytes(values.Select(v => (int)v).ToArray().AsSpan()).ToArray())
                : TensorData.FromInt64(name, [.. original.Dims], values);
            graph.Initializer.Add(t);
            index.Initializers[name] = t;
            node.Input[input] = name;
        }
        foreach (var (node, name, entry, delta) in edits.Attributes)
        {
            var a = node.Attribute.First(x => x.Name == name);
            if (entry < 0) a.I -= delta;
            else a.Ints[entry] -= delta;
        }
        foreach (var (name, axis, removed) in edits.Interface) Declare(graph, name, axis, removed);

        // Shapes recorded for changed tensors are stale; drop them (ONNX Runtime infers them again).
        for (int i = graph.ValueInfo.Count - 1; i >= 0; i--)
            if (edits.ChangedTensors.Contains(graph.ValueInfo[i].Name)) graph.ValueInfo.RemoveAt(i);
        RemoveDead(graph);
        return notes;
    }

    /// <summary>The decided groups' edits, composed: removed positions per constant input and axis (in the original coordinates), integer entries, attributes, declared shapes.</summary>
    sealed class Edits
    {
        public Dictionary<(NodeProto Node, int Input), SortedDictionary<int, SortedSet<int>>> Removals { get; } = new(NodeInputComparer.Instance);
        public Dictionary<(NodeProto Node, int Input), List<(int Entry, Func<long, long> Change)>> Entries { get; } = new(NodeInputComparer.Instance);
        public List<(NodeProto Node, string Name, int Entry, long Delta)> Attributes { get; } = [];
        public List<(string Name, int Axis, int Removed)> Interface { get; } = [];
        public HashSet<string> ChangedTensors { get; } = new(StringComparer.Ordinal);

        public static Edits Collect(IReadOnlyList<ChannelGroup> groups)
        {
            var edits = new Edits();
            foreach (var g in groups)
            {
                foreach (var e in g.Slices)
                {
                    if (!edits.Removals.TryGetValue((e.Node, e.Input), out var byAxis)) edits.Removals[(e.Node, e.Input)] = byAxis = [];
                    if (!byAxis.TryGetValue(e.Axis, out var set)) byAxis[e.Axis] = set = [];
                    set.UnionWith(g.RemovedPositions(e.Pos));
                }
                foreach (var e in g.Indices)
                {
                    var removed = g.RemovedPositions(e.Pos);
                    if (removed.Count > 0) edits.Entry(e.Node, e.Input, e.Entry, e.Bound ? v => Bound(v, e.Length, removed) : v => v - removed.Count * e.Scale);
                }
                foreach (var e in g.RepeatEdits)
                {
                    // A repeat factor: kept query heads per kept key/value head.
                    var (query, keyValue) = (g.RemovedPositions(e.Query).Count, g.RemovedPositions(e.KeyValue).Count);
                    if (query > 0 || keyValue > 0) edits.Entry(e.Node, e.Input, e.Entry, _ => Kept(g, e.Query) / Kept(g, e.KeyValue));
                }
                foreach (var e in g.Interface)
                    if (g.RemovedPositions(e.Pos).Count is > 0 and var removed) edits.Interface.Add((e.Name, e.Axis, removed));
                foreach (var e in g.Attributes)
                    if (g.RemovedPositions(e.Pos).Count is > 0 and var removed) edits.Attributes.Add((e.Node, e.Name, e.Entry, removed * e.Scale));
                edits.ChangedTensors.UnionWith(g.Tracks.Keys);
            }
            return edits;
        }

        void Entry(NodeProto node, int input, int entry, Func<long, long> change)
        {
            if (!Entries.TryGetValue((node, input), out var list)) Entries[(node, input)] = list = [];
            list.Add((entry, change));
        }
    }

    /// <summary>How many distinct positions of a position array the decision keeps.</summary>
    static long Kept(ChannelGroup g, int[][] pos) => pos.SelectMany(p => p).Distinct().Count() - g.RemovedPositions(pos).Count;

    /// <summary>Lowers a fixed dimension of a model input's or output's declared shape (a cache's head axis).</summary>
    static void Declare(GraphProto graph, string name, int axis, int removed)
    {
        foreach (var value in graph.Input.Concat(graph.Output))
            if (value.Name == name && value.Type?.TensorType?.Shape is { } shape && axis < shape.Dim.Count && shape.Dim[axis].HasDimValue)
                shape.Dim[axis].DimValue -= removed;
    }

    /// <summary>A Slice bound after removing positions of an axis of <paramref name="length"/>: past the end stays past the end.</summary>
    static long Bound(long value, long length, SortedSet<int> removed)
    {
        long v = value < 0 ? value + length : value;
        if (v >= length) return value;
        v = Math.Max(0, v);
        return v - removed.Count(p => p < v);
    }

    static void SliceConstants(GraphProto graph, GraphIndex index, Dictionary<(NodeProto Node, int Input), SortedDictionary<int, SortedSet<int>>> removals,
        HashSet<string> changedTensors, List<string> notes)
    {
        // Each constant source is sliced once per distinct edit; a source whose every use gets the same edit is replaced in place.
        var uses = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
            foreach (var input in node.Input)
                if (SourceKey(index, input) is { } key && !IsIdentityOfConstant(index, node)) uses[key] = uses.GetValueOrDefault(key) + 1;
        var bySource = removals.Where(kv => kv.Value.Values.Any(s => s.Count > 0))
            .GroupBy(kv => SourceKey(index, kv.Key.Node.Input[kv.Key.Input]) ?? throw new InvalidOperationException("edited input is not a constant")).ToList();
        var initializerIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < graph.Initializer.Count; i++) initializerIndex[graph.Initializer[i].Name] = i;
        foreach (var source in bySource)
        {
            var original = index.Constant(source.First().Key.Node.Input[source.First().Key.Input])!;
            var signatures = source.GroupBy(kv => Signature(kv.Value)).ToList();
            bool inPlace = signatures.Count == 1 && source.Count() == uses.GetValueOrDefault(source.Key) && index.Initializers.ContainsKey(source.Key);
            int k = 0;
            if (signatures.Count > 1)
                notes.Add($"Constant '{(original.Name.Length > 0 ? original.Name : source.Key)}' is shared by {source.Count()} node inputs that lose different channels; it was split into {signatures.Count} sliced copies.");
            foreach (var sig in signatures)
            {
                var sliced = Slice(original, sig.First().Value);
                if (inPlace)
                {
                    sliced.Name = original.Name;
                    graph.Initializer[initializerIndex[original.Name]] = sliced;
                    index.Initializers[original.Name] = sliced;
                    changedTensors.Add(original.Name);
                    UpdateInputInfo(graph, sliced);
                    break;
                }
                string name = Unique(index, $"{(original.Name.Length > 0 ? original.Name : source.Key)}.pruned{k++}");
                sliced.Name = name;
                graph.Initializer.Add(sliced);
                index.Initializers[name] = sliced;
                foreach (var kv in sig) kv.Key.Node.Input[kv.Key.Input] = name;
            }
        }
    }

    static bool IsIdentityOfConstant(GraphIndex index, NodeProto node) =>
        node.OpType == "Identity" && node.Domain.Length == 0 && index.Constant(node.Input[0]) is not null;

    /// <summary>The constant a name stands for: its initializer's name, or the Constant node's output.</summary>
    static string? SourceKey(GraphIndex index, string name)
    {
        if (index.InitializerName(name) is { } init) return index.GraphInputs.Contains(init) ? null : init;
        for (int hops = 0; hops < 16 && index.Producer.TryGetValue(name, out var node); hops++)
        {
            if (node.OpType == "Constant") return "constant:" + node.Output[0];
            if (node.OpType != "Identity") return null;
            name = node.Input[0];
        }
        return null;
    }

    static string Signature(SortedDictionary<int, SortedSet<int>> byAxis) =>
        string.Join(";", byAxis.Where(kv => kv.Value.Count > 0).Select(kv => kv.Key + ":" + string.Join(",", kv.Value)));

    public static string Unique(GraphIndex index, string name)
    {
        string candidate = name;
        for (int i = 1; index.Initializers.ContainsKey(candidate) || index.Producer.ContainsKey(candidate); i++) candidate = $"{name}{i}";
        return candidate;
    }

    /// <summary>A copy of the tensor without the given positions along the given axes (any fixed-size element type).</summary>
    internal static TensorProto Slice(TensorProto t, IReadOnlyDictionary<int, SortedSet<int>> removed)
    {
        int size = (int)ElementTypes.ByteCount(t.DataType, 1);
        if (size <= 0) throw new EngineException("PruningTensorTypeUnsupported", EngineErrorKind.NotImplemented, $"Tensor '{t.Name}' has a packed element type that cannot be sliced.");
        var dims = t.Dims.ToArray();
        int rank = dims.Length;
        var keep = new int[rank][];
        for (int a = 0; a < rank; a++)
            keep[a] = removed.TryGetValue(a, out var set) ? Enumerable.Range(0, (int)dims[a]).Where(i => !set.Contains(i)).ToArray() : Enumerable.Range(0, (int)dims[a]).ToArray();
        var newDims = keep.Select(k => (long)k.Length).ToArray();
        var strides = new long[rank];
        long stride = 1;
        for (int a = rank - 1; a >= 0; a--) { strides[a] = stride; stride *= dims[a]; }
        var src = TensorData.RawBytes(t).Span;
        long count = CostModel.Product(newDims);
        var dst = new byte[count * size];
        if (count > 0)
        {
            // Innermost axis copied as runs when it is kept whole.
            int last = rank - 1;
            bool wholeRow = rank > 0 && keep[last].Length == dims[last];
            var idx = new int[rank];
            long written = 0;
            while (written < count)
            {
                long offset = 0;
                for (int a = 0; a < (wholeRow ? last : rank); a++) offset += keep[a][idx[a]] * strides[a];
                if (wholeRow)
                {
                    int bytes = (int)dims[last] * size;
                    src.Slice((int)(offset * size), bytes).CopyTo(dst.AsSpan((int)(written * size)));
                    written += dims[last];
                    for (int a = last - 1; a >= 0; a--) { if (++idx[a] < keep[a].Length) break; idx[a] = 0; }
                }
                else
                {
                    src.Slice((int)(offset * size), size).CopyTo(dst.AsSpan((int)(written * size)));
                    written++;
                    for (int a = last; a >= 0; a--) { if (++idx[a] < keep[a].Length) break; idx[a] = 0; }
                }
            }
        }
        var result = TensorData.FromRaw(t.Name, (DT)t.DataType, newDims, dst);
        if (t.HasDocString) result.DocString = t.DocString;
        return result;
    }

    static void UpdateInputInfo(GraphProto graph, TensorProto t)
    {
        foreach (var input in graph.Input)
            if (input.Name == t.Name && input.Type?.TensorType?.Shape is { } shape && shape.Dim.Count == t.Dims.Count)
                for (int i = 0; i < t.Dims.Count; i++) shape.Dim[i] = new TensorShapeProto.Types.Dimension { DimValue = t.Dims[i] };
    }

    /// <summary>
    /// Drops nodes none of whose outputs anything reads (model outputs and subgraphs count as readers), then the
    /// initializers nothing reads, with the graph-input entry older models list them under.
    /// </summary>
    public static void RemoveDead(GraphProto graph)
    {
        var subgraphReads = new GraphIndex(graph, inputInitializersAreConstant: true).SubgraphReferences;
        bool changed = true;
        while (changed)
        {
            changed = false;
            var used = new HashSet<string>(subgraphReads, StringComparer.Ordinal);
            foreach (var n in graph.Node) foreach (var i in n.Input) used.Add(i);
            foreach (var o in graph.Output) used.Add(o.Name);
            for (int i = graph.Node.Count - 1; i >= 0; i--)
                if (graph.Node[i].Output.All(o => o.Length == 0 || !used.Contains(o)))
                {
                    graph.Node.RemoveAt(i);
                    changed = true;
                }
            if (!changed)
            {
                var dead = new HashSet<string>(StringComparer.Ordinal);
                for (int i = graph.Initializer.Count - 1; i >= 0; i--)
                    if (!used.Contains(graph.Initializer[i].Name)) { dead.Add(graph.Initializer[i].Name); graph.Initializer.RemoveAt(i); }
                for (int i = graph.Input.Count - 1; i >= 0; i--)
                    if (dead.Contains(graph.Input[i].Name)) graph.Input.RemoveAt(i);
            }
        }
    }

    sealed class NodeInputComparer : IEqualityComparer<(NodeProto Node, int Input)>
    {
        public static readonly NodeInputComparer Instance = new();
        public bool Equals((NodeProto Node, int Input) x, (NodeProto Node, int Input) y) => ReferenceEquals(x.Node, y.Node) && x.Input == y.Input;
        public int GetHashCode((NodeProto Node, int Input) obj) => HashCode.Combine(System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(obj.Node), obj.Input);
    }
}
