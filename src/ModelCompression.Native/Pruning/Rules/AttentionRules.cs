using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// ONNX Runtime's com.microsoft Attention: projects its input into Q, K, V with one packed weight and attends with
/// num_heads heads. As a member its units are the heads (their Q, K and V columns, bias entries, num_heads and
/// qkv_hidden_sizes); as a consumer of the hidden channels it loses the packed weight's input rows.
/// </summary>
internal sealed class AttentionRule : ChannelRule
{
    public override string Domain => "com.microsoft";
    public override IReadOnlyList<string> OpTypes { get; } = ["Attention"];

    /// <summary>Q, K and V sizes of the packed weight, or null when the node does not look as documented.</summary>
    public static (long Q, long K, long V, long Heads)? Sizes(NodeProto node, TensorProto weight)
    {
        long heads = GraphIndex.IntAttr(node, "num_heads", 0);
        if (heads < 1 || weight.Dims.Count != 2) return null;
        var sizes = GraphIndex.IntsAttr(node, "qkv_hidden_sizes") ?? [weight.Dims[1] / 3, weight.Dims[1] / 3, weight.Dims[1] / 3];
        if (sizes.Length != 3 || sizes.Sum() != weight.Dims[1] || sizes.Any(s => s % heads != 0)) return null;
        return (sizes[0], sizes[1], sizes[2], heads);
    }

    /// <summary>Per head, its Q, K and V columns of the packed weight.</summary>
    public static int[][] HeadColumns(long q, long k, long v, long heads)
    {
        int dq = (int)(q / heads), dk = (int)(k / heads), dv = (int)(v / heads);
        return Enumerable.Range(0, (int)heads).Select(h =>
            Enumerable.Range(h * dq, dq).Concat(Enumerable.Range((int)q + h * dk, dk)).Concat(Enumerable.Range((int)(q + k) + h * dv, dv)).ToArray()).ToArray();
    }

    public override Member? Source(NodeProto node, GraphIndex index, out string? why)
    {
        why = null;
        var weight = node.Input.Count > 1 ? index.Constant(node.Input[1]) : null;
        if (weight is null || Sizes(node, weight) is not { } s)
        {
            why = "its packed Q/K/V weight is computed or does not match num_heads";
            return null;
        }
        return new Member
        {
            Kind = MemberKind.Attention, Node = node, Constant = index.ConstantSource(node.Input[1]), Tensor = weight,
            Columns = HeadColumns(s.Q, s.K, s.V, s.Heads), Activation = (node.Input[0], -1),
        };
    }

    /// <summary>The Q/K/V projection (input x packed weight) and the two attention products.</summary>
    public override long Flops(NodeProto node, ShapeProbe probe)
    {
        if (probe.Shape(node.Input[0]) is not { Length: 3 } x || probe.Shape(node.Input[1]) is not { Length: 2 } weight) return 0;
        long tokens = x[0] * x[1];
        var sizes = GraphIndex.IntsAttr(node, "qkv_hidden_sizes") ?? [weight[1] / 3, weight[1] / 3, weight[1] / 3];
        return 2 * tokens * weight[0] * weight[1] + 2 * tokens * x[1] * (sizes[0] + sizes[^1]);
    }

    public override Track? Start(ChannelWalk w, int member)
    {
        var m = w.Group.Members[member];
        var node = m.Node;
        if (w.Constant(node.Input[1]) is not { } weight || Sizes(node, weight) is not { } sizes)
            return w.Fail("its packed Q/K/V weight is computed or does not match num_heads");
        var (q, k, v, heads) = sizes;
        if (node.Input.Count > 4 && node.Input[4].Length > 0) return w.Fail("it reads a past key/value cache");
        var pos = w.Group.MemberPositions(member, m.Columns);
        w.Slice(node, 1, 1, pos);
        if (node.Input.Count > 2 && node.Input[2].Length > 0)
        {
            if (w.Constant(node.Input[2]) is null) return w.Fail("its bias is computed");
            w.Slice(node, 2, 0, pos);
        }
        var headPos = w.Group.MemberPositions(member, ChannelWalk.Identity((int)heads));
        if (!HeadBias(w, node, 5, heads, headPos)) return null;
        w.Group.Attributes.Add(new AttributeEdit(node, "num_heads", -1, headPos));
        if (GraphIndex.IntsAttr(node, "qkv_hidden_sizes") is not null)
            for (int i = 0; i < 3; i++) w.Group.Attributes.Add(new AttributeEdit(node, "qkv_hidden_sizes", i, headPos, new[] { q, k, v }[i] / heads));
        int dv = (int)(v / heads);
        var output = w.Group.MemberPositions(member, Member.Blocks((int)v, dv));
        return new Track(2, 3, (int)v, output);
    }

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        if (t.Axis != t.Rank - 1 || w.Constant(node.Input[1]) is null) return w.Fail($"{ChannelWalk.Describe(node)} reads the channels but not through a constant packed weight");
        w.Slice(node, 1, 0, t.Pos);
        w.Sink(node);
        return null;
    }

    /// <summary>An attention bias input [batch, heads, q, k] loses the removed heads when it is constant; a computed one with heads stops the walk.</summary>
    public static bool HeadBias(ChannelWalk w, NodeProto node, int input, long heads, int[][] headPos)
    {
        if (node.Input.Count <= input || node.Input[input].Length == 0) return true;
        if (w.Shape(node.Input[input]) is not { Length: 4 } shape) { w.Fail($"the shape of '{node.Input[input]}' is unknown"); return false; }
        if (shape[1] == 1) return true;
        if (shape[1] != heads || w.Constant(node.Input[input]) is null) { w.Fail($"{ChannelWalk.Describe(node)} adds a computed bias per head"); return false; }
        w.Slice(node, input, 1, headPos);
        return true;
    }
}

/// <summary>
/// ONNX Runtime's com.microsoft MultiHeadAttention: Q, K and V come from projections elsewhere in the graph. The units
/// arriving on its query, key and value inputs must be whole heads (units of single channels ask for a retry with
/// heads); a head's Q, K and V units are tied through the output, which carries the heads' V channels.
/// </summary>
internal sealed class MultiHeadAttentionRule : ChannelRule
{
    public override string Domain => "com.microsoft";
    public override IReadOnlyList<string> OpTypes { get; } = ["MultiHeadAttention"];

    /// <summary>The two attention products (Q·Kᵀ and P·V).</summary>
    public override long Flops(NodeProto node, ShapeProbe probe) =>
        probe.Shape(node.Input[0]) is { Length: 3 } q && node.Input.Count > 2 && probe.Shape(node.Input[1]) is { Length: 3 } k && probe.Shape(node.Input[2]) is { Length: 3 } v
            ? 2 * q[0] * q[1] * k[1] * (k[2] + v[2]) : 0;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        string d = ChannelWalk.Describe(node);
        long heads = GraphIndex.IntAttr(node, "num_heads", 0);
        if (heads < 1 || node.Input.Count < 3 || node.Input[1].Length == 0 || node.Input[2].Length == 0)
            return w.Fail($"{d} has packed Q/K/V inputs or no num_heads");
        if (Enumerable.Range(6, 2).Any(i => node.Input.Count > i && node.Input[i].Length > 0)) return w.Fail($"{d} reads a past key/value cache");
        var widths = new long[3];
        for (int i = 0; i < 3; i++)
        {
            if (w.Shape(node.Input[i]) is not { Length: 3 } s || s[2] % heads != 0) return w.Fail($"{d} input {i} is not [batch, sequence, heads x head_dim]");
            widths[i] = s[2];
        }
        var head = new int[w.Units][];
        Array.Fill(head, []);
        foreach (var (i, t) in inputs)
        {
            if (i > 2 || t.Axis != 2 || t.Interleaved) return w.Fail($"{d} reads the channels through input {i}");
            if (w.Heads(t.Pos, (int)(widths[i] / heads), d) is not { } blocks) return null;
            for (int u = 0; u < blocks.Length; u++) head[u] = [.. head[u].Concat(blocks[u]).Distinct().Order()];
        }
        for (int i = 0; i < 3; i++)
            if (!inputs.Any(x => x.Index == i))
                return w.Constant(node.Input[i]) is null
                    ? w.Couple(node.Input[i], $"coupled: {d} attends with '{node.Input[i]}' (pruned jointly)")
                    : w.Fail($"{d} has a constant input {i}");
        int dq = (int)(widths[0] / heads), dk = (int)(widths[1] / heads), dv = (int)(widths[2] / heads);
        if (node.Input.Count > 3 && node.Input[3].Length > 0)
        {
            if (w.Constant(node.Input[3]) is null) return w.Fail($"{d} has a computed bias");
            w.Slice(node, 3, 0, ChannelWalk.Map(head, h => Enumerable.Range(h * dq, dq)
                .Concat(Enumerable.Range((int)widths[0] + h * dk, dk)).Concat(Enumerable.Range((int)(widths[0] + widths[1]) + h * dv, dv))));
        }
        if (!AttentionRule.HeadBias(w, node, 5, heads, head)) return null;
        w.Group.Attributes.Add(new AttributeEdit(node, "num_heads", -1, head));
        return new Track(2, 3, (int)widths[2], ChannelWalk.Map(head, h => Enumerable.Range(h * dv, dv)));
    }
}
