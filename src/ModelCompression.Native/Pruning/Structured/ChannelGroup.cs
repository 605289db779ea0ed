using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>The parts of a network that structured pruning tells apart; -Target selects them and each can have its own rate.</summary>
public enum PrunedPart
{
    /// <summary>Whole attention heads: Q/K/V projections, the reshapes into heads, the output projection, num_heads.</summary>
    Heads,
    /// <summary>
    /// Channels tied across layers by residual additions or gates: a transformer's hidden size (embeddings, norms and
    /// every projection reading or writing the residual stream), a CNN's residual channels.
    /// </summary>
    Hidden,
    /// <summary>Neurons or channels of one layer that only the next layers read: feed-forward neurons, MLP hidden units, convolution channels.</summary>
    Ffn,
    /// <summary>
    /// Whole key/value heads of grouped-query attention, each with the query heads it serves (the key/value cache
    /// shrinks). Pruned only when asked (-KeyValueHeadRate, or -Target KeyValueHeads with -Rate); with one key/value
    /// head per query head these are the heads themselves.
    /// </summary>
    KeyValueHeads,
}

/// <summary>What a group's members are: layers with a weight, constant tables (embeddings), or attention operators.</summary>
internal enum MemberKind { Layer, Table, Attention }

/// <summary>
/// Where a group's units sit along one axis of one tensor: Pos[u] lists the indices along Axis that unit u of the
/// group occupies (empty when the unit does not reach this tensor). Interleaved: the axis is (outer x Length), the
/// units' indices are its inner factor and the outer factor is known only at run time (heads merged with the batch).
/// </summary>
internal sealed record Track(int Axis, int Rank, int Length, int[][] Pos, bool Interleaved = false)
{
    /// <summary>Set when the positions are key/value heads repeated for groups of query heads (grouped-query attention).</summary>
    public Repeat? Repeat { get; init; }
}

/// <summary>
/// Key/value heads repeated for the query heads they serve (Unsqueeze, Expand, Reshape): <c>KeyValue</c> their
/// positions before the repeat, <c>Count</c> the constant entry that holds the repeat factor (the Expand's), and
/// <c>Target</c> the edit of the merging Reshape's target, recorded for removing whole key/value heads and replaced
/// when the repeated heads meet the query heads (then query heads can go within each group).
/// </summary>
internal sealed record Repeat(int[][] KeyValue, NodeProto Node, int Input, int Entry, IndexEdit? Target);

/// <summary>
/// Where repeated key/value heads meet query heads (Q·Kᵀ, P·V): <c>Query[u]</c> the positions of query unit u on the
/// head axis, <c>KeyValue[u]</c> those of key/value unit u (the query heads it serves). Not a tie: a key/value head
/// goes only with all of its query heads, and query heads go evenly within the groups.
/// </summary>
internal sealed record RepeatTie(int[][] Query, int[][] KeyValue);

/// <summary>Sets entry <c>Entry</c> of integer constant input <c>Input</c> of <c>Node</c> to kept(Query) / kept(KeyValue): a repeat factor.</summary>
internal sealed record RepeatEdit(NodeProto Node, int Input, int Entry, int[][] Query, int[][] KeyValue);

/// <summary>Lowers dimension <c>Axis</c> of a model input or output's declared shape by the removed positions (a key/value cache).</summary>
internal sealed record InterfaceEdit(string Name, int Axis, int[][] Pos);

/// <summary>One key/value group of grouped-query attention: its query-head classes and its key/value classes (key and value heads).</summary>
internal sealed record HeadBucket(int[] Query, int[] KeyValue);

/// <summary>Removes the removed units' positions from constant input <c>Input</c> of <c>Node</c> along <c>Axis</c>.</summary>
internal sealed record SliceEdit(NodeProto Node, int Input, int Axis, int[][] Pos);

/// <summary>
/// Lowers entry <c>Entry</c> of the integer constant input <c>Input</c> of <c>Node</c>: a Reshape target by the removed
/// positions times <c>Scale</c>; a Slice bound (<c>Bound</c>) by the removed positions below it on an axis of <c>Length</c>.
/// </summary>
internal sealed record IndexEdit(NodeProto Node, int Input, int Entry, int[][] Pos, long Scale = 1, bool Bound = false, long Length = 0);

/// <summary>Lowers an integer attribute (<c>Entry</c> -1) or one entry of an integer-list attribute by the removed positions times <c>Scale</c>.</summary>
internal sealed record AttributeEdit(NodeProto Node, string Name, int Entry, int[][] Pos, long Scale = 1);

/// <summary>
/// A source of a group's units: a layer whose output channels the group removes (one per unit, or blocks of them: a
/// head is a block of head_dim channels), a constant table whose last-axis columns it removes (an embedding), or an
/// attention operator whose heads it removes.
/// </summary>
internal sealed class Member
{
    public required MemberKind Kind { get; init; }
    public required NodeProto Node { get; init; }
    /// <summary>The layer's weight (MatMul/Gemm/Conv members).</summary>
    public WeightTarget? Target { get; init; }
    /// <summary>The constant the member owns: a table, or an attention operator's packed Q/K/V weight.</summary>
    public string? Constant { get; init; }
    public TensorProto? Tensor { get; init; }
    /// <summary>Output channels per unit (head_dim for heads).</summary>
    public int Block { get; init; } = 1;
    /// <summary>For each unit, the columns of the member's own weight (or table) that it covers; scores sum over them.</summary>
    public required int[][] Columns { get; init; }
    public int Units => Columns.Length;
    /// <summary>Per output channel, the scale of a normalization right after the layer (set while following).</summary>
    public float[]? ChannelScale { get; set; }
    /// <summary>The member's data input and its channel axis, whose activation norms weigh its columns (Wanda at the member).</summary>
    public (string Tensor, int Axis)? Activation { get; init; }
    public string Name => Node.Name.Length > 0 ? Node.Name : Node.Output[0];
    /// <summary>The weight this member reads; members of different groups with the same key are tied layers.</summary>
    public string Key => Target?.Name ?? Constant ?? Name;

    public static int[][] Blocks(int channels, int block) =>
        Enumerable.Range(0, channels / block).Select(u => Enumerable.Range(u * block, block).ToArray()).ToArray();

    public Member WithBlock(int block) => new()
    {
        Kind = Kind, Node = Node, Target = Target, Constant = Constant, Tensor = Tensor, Block = block, Activation = Activation,
        Columns = Blocks(Target?.Outputs ?? Columns.Length * Block, block),
    };
}

/// <summary>
/// Channels that must be removed together (a dependency group, DepGraph style): its members' units, where they travel
/// (tracks on tensors) and the edits that remove them. Units that meet at one position of one tensor are tied into a
/// class; a decision removes whole classes.
/// </summary>
internal sealed class ChannelGroup
{
    public ChannelGroup(IEnumerable<Member> members)
    {
        Members = members.ToList();
        Offsets = new int[Members.Count];
        int offset = 0;
        for (int m = 0; m < Members.Count; m++) { Offsets[m] = offset; offset += Members[m].Units; }
        Units = offset;
    }

    public List<Member> Members { get; }
    /// <summary>The first unit of each member.</summary>
    public int[] Offsets { get; }
    public int Units { get; }
    public Member First => Members[0];
    public Dictionary<string, Track> Tracks { get; } = new(StringComparer.Ordinal);
    public List<SliceEdit> Slices { get; } = [];
    public List<IndexEdit> Indices { get; } = [];
    public List<AttributeEdit> Attributes { get; } = [];
    public List<RepeatEdit> RepeatEdits { get; } = [];
    public List<InterfaceEdit> Interface { get; } = [];
    public List<RepeatTie> Repeats { get; } = [];
    /// <summary>Whether the channels are joined with others by a sum (a residual stream, the hidden size), not only by a gate.</summary>
    public bool Residual { get; set; }
    /// <summary>Units tied across tensors (positions of two operands that meet in one product).</summary>
    public List<int[][]> Ties { get; } = [];
    public List<string> Path { get; } = [];
    public List<string> Sinks { get; } = [];
    /// <summary>Why the rewrite is not exact for the kept channels (a normalization over the pruned axis).</summary>
    public List<string> Approximations { get; } = [];
    /// <summary>Fused normalizations over the group's channels (their scale and bias can be refitted on calibration data).</summary>
    public List<NodeProto> Norms { get; } = [];
    public string? Failure { get; set; }
    /// <summary>The computed tensor the channels met when the walk failed as coupled (residual Add, gate, attention product).</summary>
    public string? CoupledWith { get; set; }
    /// <summary>When the walk stopped at a split of the channels into heads: the channels per head.</summary>
    public int? SplitBlock { get; set; }
    public PrunedPart Part { get; set; } = PrunedPart.Ffn;
    /// <summary>Unit to class (units removed together) and the number of classes.</summary>
    public int[] ClassOf { get; set; } = [];
    public int Classes { get; set; }
    /// <summary>Per class, whether it is removed.</summary>
    public bool[] Removed { get; set; } = [];
    public int RemovedCount => Removed.Count(r => r);
    /// <summary>Grouped-query attention: the key/value groups (null when the heads are not grouped).</summary>
    public HeadBucket[]? Buckets { get; set; }
    /// <summary>What the report counts: query heads of grouped attention, else the classes.</summary>
    public int Choices => Buckets?.Sum(b => b.Query.Length) ?? Classes;
    public int RemovedChoices => Buckets?.Sum(b => b.Query.Count(c => Removed[c])) ?? RemovedCount;
    /// <summary>Key/value heads of a heads group (one per query head when they are not grouped), before and after.</summary>
    public int KeyValueHeads => Buckets?.Length ?? Classes;
    public int RemovedKeyValueHeads => Buckets?.Count(b => b.KeyValue.All(c => Removed[c])) ?? RemovedCount;
    public bool Viable => Failure is null;

    public bool UnitRemoved(int unit) => Removed.Length > 0 && Removed[ClassOf[unit]];

    /// <summary>A position array of the group's size holding <paramref name="local"/> at the member's units and nothing elsewhere.</summary>
    public int[][] MemberPositions(int member, int[][] local)
    {
        var pos = new int[Units][];
        Array.Fill(pos, []);
        for (int u = 0; u < local.Length; u++) pos[Offsets[member] + u] = local[u];
        return pos;
    }

    /// <summary>Ties units that share a position in any track, edit or tie set; classes are the connected sets.</summary>
    public void Tie()
    {
        var parent = Enumerable.Range(0, Units).ToArray();
        int Find(int x) { while (parent[x] != x) x = parent[x] = parent[parent[x]]; return x; }
        var seen = new HashSet<int[][]>(ReferenceEqualityComparer.Instance);
        void Join(int[][] pos)
        {
            if (!seen.Add(pos)) return;
            var at = new Dictionary<int, int>();
            for (int u = 0; u < pos.Length; u++)
                foreach (int p in pos[u])
                    if (at.TryGetValue(p, out int v)) parent[Find(u)] = Find(v);
                    else at[p] = u;
        }
        foreach (var t in Tracks.Values) Join(t.Pos);
        foreach (var e in Slices) Join(e.Pos);
        foreach (var e in Indices) Join(e.Pos);
        foreach (var e in Attributes) Join(e.Pos);
        foreach (var e in Interface) Join(e.Pos);
        foreach (var t in Ties) Join(t);
        var classOf = new int[Units];
        var ids = new Dictionary<int, int>();
        for (int u = 0; u < Units; u++)
        {
            int r = Find(u);
            if (!ids.TryGetValue(r, out int c)) ids[r] = c = ids.Count;
            classOf[u] = c;
        }
        ClassOf = classOf;
        Classes = ids.Count;
        Removed = new bool[Classes];
        Bucket();
    }

    /// <summary>
    /// Grouped-query attention: the key/value groups, from where repeated key/value heads met query heads. Each key/value
    /// class serves the query classes inside its span; key and value heads serving the same query heads form one group.
    /// Groups must be disjoint, of one size, and cover every class; otherwise each key/value head is tied to its query
    /// heads (only whole groups can go).
    /// </summary>
    void Bucket()
    {
        Buckets = null;
        if (Repeats.Count == 0) return;
        var serves = new Dictionary<int, SortedSet<int>>();
        foreach (var r in Repeats)
            for (int kv = 0; kv < Units; kv++)
            {
                if (r.KeyValue[kv].Length == 0) continue;
                var span = r.KeyValue[kv].ToHashSet();
                if (!serves.TryGetValue(ClassOf[kv], out var set)) serves[ClassOf[kv]] = set = [];
                for (int q = 0; q < Units; q++)
                    if (r.Query[q].Length > 0 && r.Query[q].All(span.Contains)) set.Add(ClassOf[q]);
            }
        var buckets = serves.GroupBy(kv => string.Join(",", kv.Value))
            .Select(x => new HeadBucket([.. x.First().Value], [.. x.Select(e => e.Key).Order()])).OrderBy(b => b.KeyValue[0]).ToArray();
        var query = buckets.SelectMany(b => b.Query).ToList();
        var keyValue = buckets.SelectMany(b => b.KeyValue).ToList();
        // One query head per group is no grouping: such heads go with their key/value heads, as in multi-head attention.
        if (buckets.All(b => b.Query.Length > 1 && b.Query.Length == buckets[0].Query.Length) && query.Distinct().Count() == query.Count
            && !query.Intersect(keyValue).Any() && query.Count + keyValue.Count == Classes)
        {
            Buckets = buckets;
            return;
        }
        foreach (var r in Repeats) Ties.Add(ChannelWalk.Union([r.Query, r.KeyValue]));
        Repeats.Clear();
        Tie();
    }

    /// <summary>The positions that the removed classes occupy in a position array.</summary>
    public SortedSet<int> RemovedPositions(int[][] pos)
    {
        var set = new SortedSet<int>();
        for (int u = 0; u < pos.Length; u++)
            if (UnitRemoved(u)) set.UnionWith(pos[u]);
        return set;
    }
}
