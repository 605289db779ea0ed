using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>A tracked input of a node: its index and where the group's units sit in it.</summary>
internal readonly record struct TrackedInput(int Index, Track Track);

/// <summary>
/// Follows one group's channels from its members forward through the graph, in graph order, asking each node's rule
/// (<see cref="ChannelRules"/>) where the channels go. What the rules may use: the graph index, the probed shapes, and
/// helpers that record edits, sinks and the reason the walk stops.
/// </summary>
internal sealed class ChannelWalk
{
    ChannelWalk(ChannelGroup group, PlanContext context)
    {
        Group = group;
        Context = context;
    }

    public ChannelGroup Group { get; }
    public PlanContext Context { get; }
    public GraphIndex Index => Context.Index;
    public ShapeProbe Probe => Context.Probe;
    public long Opset => Context.Opset;
    public int Units => Group.Units;

    /// <summary>Stops the walk: the group cannot be pruned, for this reason. Returns null so rules can <c>return w.Fail(...)</c>.</summary>
    public Track? Fail(string why)
    {
        Group.Failure ??= why;
        return null;
    }

    /// <summary>Stops the walk because the channels meet another computed tensor; the planner may merge the groups and follow again.</summary>
    public Track? Couple(string tensor, string why)
    {
        if (Group.Failure is null) Group.CoupledWith = tensor;
        return Fail(why);
    }

    /// <summary>Stops the walk at a split of the channels into blocks (heads); the planner follows again with units of that many channels.</summary>
    public Track? Split(int block, string why)
    {
        if (Group.Failure is null) Group.SplitBlock = block;
        return Fail(why);
    }

    /// <summary>
    /// Per unit, the heads of <paramref name="size"/> channels its positions fill; null when a unit is not whole heads,
    /// after asking for a retry with heads as units (units of single channels) or failing.
    /// </summary>
    public int[][]? Heads(int[][] pos, int size, string splitter)
    {
        var heads = new int[pos.Length][];
        for (int u = 0; u < pos.Length; u++)
        {
            var byHead = pos[u].GroupBy(p => p / size).ToList();
            if (byHead.Any(h => h.Count() != size))
            {
                if (pos.All(p => p.Length <= 1)) Split(size, $"{splitter} splits the channels into heads of {size}");
                else Fail($"{splitter} reads units that are not whole heads");
                return null;
            }
            heads[u] = [.. byHead.Select(h => h.Key).Order()];
        }
        return heads;
    }

    public TensorProto? Constant(string name) => name.Length == 0 ? null : Index.Constant(name);
    public bool IsTracked(string name) => Group.Tracks.ContainsKey(name);
    public bool TryTrack(string name, out Track track) => Group.Tracks.TryGetValue(name, out track!);

    /// <summary>A tensor's shape: a constant's dims, else the probe's.</summary>
    public long[]? Shape(string name) => Constant(name)?.Dims.ToArray() ?? Probe.Shape(name);

    /// <summary>Whether a dimension is the same at both probe sizes (true when only one probe ran).</summary>
    public bool IsStatic(string tensor, int axis) => Context.Alternate is not { } b || b.Shape(tensor) is not { } s || Probe.Shape(tensor) is not { } a
        || (axis < s.Length && axis < a.Length && s[axis] == a[axis]);

    public void Slice(NodeProto node, int input, int axis, int[][] pos) => Group.Slices.Add(new SliceEdit(node, input, axis, pos));
    public void Sink(NodeProto node) => Group.Sinks.Add(Label(node));
    public void Approximate(string why) { if (!Group.Approximations.Contains(why)) Group.Approximations.Add(why); }

    public static string Label(NodeProto node) => node.Name.Length > 0 ? node.Name : node.Output.FirstOrDefault() ?? node.OpType;
    public static string Describe(NodeProto node) => $"{node.OpType} node '{Label(node)}'";

    /// <summary>Integer values of a constant input, or null when the input is absent or computed.</summary>
    public long[]? Ints(NodeProto node, int input) =>
        input < node.Input.Count && Constant(node.Input[input]) is { } c ? TensorData.ToInt64(c) : null;

    /// <summary>The axes a node lists in its attribute or (newer opsets) its input, or null when computed or absent.</summary>
    public long[]? Axes(NodeProto node, int input) =>
        GraphIndex.IntsAttr(node, "axes") ?? (input < node.Input.Count && node.Input[input].Length > 0 ? Ints(node, input) : null);

    public static int Normalize(long axis, int rank) => (int)(axis < 0 ? axis + rank : axis);

    public static int[][] Identity(int n)
    {
        var r = new int[n][];
        for (int i = 0; i < n; i++) r[i] = [i];
        return r;
    }

    /// <summary>Per unit, the union of its positions in several arrays (the same array when all are one).</summary>
    public static int[][] Union(IReadOnlyList<int[][]> arrays)
    {
        if (arrays.All(a => ReferenceEquals(a, arrays[0]))) return arrays[0];
        var r = new int[arrays[0].Length][];
        for (int u = 0; u < r.Length; u++)
        {
            // Usually a unit sits in one of the inputs only (a residual Add joins different writers): share its array.
            int[]? only = null;
            bool several = false;
            foreach (var a in arrays)
                if (a[u].Length > 0) { if (only is null || only.AsSpan().SequenceEqual(a[u])) only ??= a[u]; else several = true; }
            if (!several) { r[u] = only ?? []; continue; }
            var set = new SortedSet<int>();
            foreach (var a in arrays) set.UnionWith(a[u]);
            r[u] = [.. set];
        }
        return r;
    }

    /// <summary>Maps every position through <paramref name="map"/>.</summary>
    public static int[][] Map(int[][] pos, Func<int, IEnumerable<int>> map) => pos.Select(ps => ps.SelectMany(map).Distinct().Order().ToArray()).ToArray();

    /// <summary>Follows the group from its members. On return the group has its tracks and edits, or a failure.</summary>
    public static void Follow(ChannelGroup g, PlanContext context)
    {
        var w = new ChannelWalk(g, context);
        int first = int.MaxValue;
        for (int m = 0; m < g.Members.Count; m++)
        {
            var member = g.Members[m];
            int start = member.Kind == MemberKind.Table ? w.StartTable(m) : w.StartNode(m);
            if (g.Failure is not null) return;
            first = Math.Min(first, start);
        }
        w.Walk(first);
    }

    /// <summary>A layer or attention member: its rule records its own edits and the track of its output; returns its place in the graph.</summary>
    int StartNode(int m)
    {
        var member = Group.Members[m];
        var node = member.Node;
        if (ChannelRules.For(node) is not { } rule) { Fail($"{Describe(node)} has no channel rule"); return 0; }
        if (node.Output.Skip(1).Any(o => o.Length > 0 && (Index.ConsumersOf(o).Count > 0 || Index.GraphOutputs.Contains(o))))
        { Fail("it has more than one output"); return 0; }
        string output = node.Output[0];
        if (Index.GraphOutputs.Contains(output)) { Fail("its output is a model output (model outputs keep their shapes)"); return 0; }
        if (Index.SubgraphReferences.Contains(output)) { Fail("its output is read inside a subgraph (If/Loop/Scan), which the rewrite does not follow"); return 0; }
        if (rule.Start(this, m) is not { } track) return 0;
        if (Group.Tracks.ContainsKey(output)) { Fail($"two members produce '{output}'"); return 0; }
        Group.Tracks[output] = track;
        // A normalization right after the layer (BatchNormalization) scales each channel: it belongs in the channel's importance.
        var direct = Index.ConsumersOf(output);
        member.ChannelScale = direct.Count == 1 ? ChannelRules.For(direct[0].Node)?.ChannelScale(direct[0].Node, Index, track.Length) : null;
        return Context.Order[node];
    }

    /// <summary>A table member: the constant itself is tracked along its last axis; every node that reads it is followed.</summary>
    int StartTable(int m)
    {
        var member = Group.Members[m];
        var table = Constant(member.Constant!)!;
        int rank = table.Dims.Count;
        Group.Tracks[member.Constant!] = new Track(rank - 1, rank, (int)table.Dims[rank - 1], Group.MemberPositions(m, member.Columns));
        var readers = Index.ConsumersOf(member.Constant!);
        if (Index.GraphOutputs.Contains(member.Constant!)) { Fail("the table is a model output"); return 0; }
        return readers.Count == 0 ? 0 : readers.Min(r => Context.Order[r.Node]) - 1;
    }

    void Walk(int first)
    {
        var nodes = Index.Graph.Node;
        for (int n = Math.Max(0, first); n < nodes.Count && Group.Failure is null; n++)
        {
            var node = nodes[n];
            var inputs = new List<TrackedInput>();
            for (int i = 0; i < node.Input.Count; i++)
                if (node.Input[i].Length > 0 && Group.Tracks.TryGetValue(node.Input[i], out var tr)) inputs.Add(new TrackedInput(i, tr));
            if (inputs.Count == 0) continue;
            bool member = Group.Members.Any(m => m.Kind != MemberKind.Table && ReferenceEquals(m.Node, node));
            var rule = ChannelRules.For(node);
            if (rule is null) { Fail($"its channels reach {Describe(node)}, which the rewrite does not follow"); return; }
            if (!rule.FollowsInterleaved && inputs.Any(x => x.Track.Interleaved)) { Fail($"its heads, merged with the batch axis, reach {Describe(node)}"); return; }
            // A tracked constant (a table) is sliced wherever it is read.
            foreach (var (i, tr) in inputs)
                if (Index.Constant(node.Input[i]) is not null) Slice(node, i, tr.Axis, tr.Pos);
            extraOutputs.Clear();
            var result = rule.Propagate(this, node, inputs);
            if (Group.Failure is not null) return;
            if (member && (result is not null || extraOutputs.Count > 0)) { Fail($"{Describe(node)} reads the channels it writes"); return; }
            if (member || (result is null && extraOutputs.Count == 0)) continue;
            if (result is not null) extraOutputs[0] = KeepRepeat(result, inputs);
            for (int o = 0; o < node.Output.Count && Group.Failure is null; o++)
                TrackOutput(node, node.Output[o], extraOutputs.GetValueOrDefault(o), o == 0);
        }
    }

    readonly Dictionary<int, Track> extraOutputs = [];

    /// <summary>For rules whose node passes the channels to more outputs than the first (a skip normalization's sum, an attention's cache).</summary>
    public void Output(int index, Track track) => extraOutputs[index] = track;

    /// <summary>A repeat that a rule passed on stays marked only while its positions pass unchanged (Transpose, scaling).</summary>
    static Track KeepRepeat(Track result, IReadOnlyList<TrackedInput> inputs) =>
        result.Repeat is null || !inputs.Any(x => ReferenceEquals(x.Track.Repeat, result.Repeat))
        || (inputs.Count == 1 && ReferenceEquals(inputs[0].Track.Pos, result.Pos)) ? result : result with { Repeat = null };

    void TrackOutput(NodeProto node, string name, Track? track, bool first)
    {
        if (name.Length == 0) return;
        if (track is null)
        {
            if (!first && (Index.ConsumersOf(name).Count > 0 || Index.GraphOutputs.Contains(name))) Fail($"{Describe(node)} uses its second output");
            return;
        }
        if (Index.GraphOutputs.Contains(name))
        {
            // A key/value cache output takes the new head count (its declared shape is rewritten); other outputs keep their shapes.
            if (!Context.CacheOutputs.Contains(name) || track.Interleaved) { Fail($"its channels reach model output '{name}' (model outputs keep their shapes)"); return; }
            Group.Interface.Add(new InterfaceEdit(name, track.Axis, track.Pos));
        }
        if (Index.SubgraphReferences.Contains(name)) { Fail($"its channels reach '{name}', which a subgraph (If/Loop/Scan) reads"); return; }
        Group.Tracks[name] = track;
        if (first) Group.Path.Add(node.OpType);
    }

    /// <summary>
    /// A key/value cache input met by the channels (the past keys joined with the new ones): it carries them as
    /// <paramref name="like"/> does and its declared shape takes the new head count. False when it is no cache input.
    /// </summary>
    public bool AdoptCache(string name, Track like)
    {
        if (!Context.CacheInputs.Contains(name) || like.Interleaved || Group.Tracks.ContainsKey(name)) return false;
        Group.Interface.Add(new InterfaceEdit(name, like.Axis, like.Pos));
        Group.Tracks[name] = like with { Repeat = null };
        return true;
    }
}

/// <summary>What every walk of one planning pass shares.</summary>
internal sealed class PlanContext
{
    public required GraphIndex Index { get; init; }
    public required ShapeProbe Probe { get; init; }
    /// <summary>A second probe at other input sizes (null when the model runs only at one size): tells static dimensions from dynamic ones.</summary>
    public ShapeProbe? Alternate { get; init; }
    public required long Opset { get; init; }
    public required Dictionary<NodeProto, int> Order { get; init; }
    /// <summary>The key/value cache's inputs and outputs (a decoder-with-past model): their head axis may shrink.</summary>
    public IReadOnlySet<string> CacheInputs { get; init; } = new HashSet<string>();
    public IReadOnlySet<string> CacheOutputs { get; init; } = new HashSet<string>();
}
