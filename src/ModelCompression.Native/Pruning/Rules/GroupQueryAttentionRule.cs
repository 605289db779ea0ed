using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// ONNX Runtime's com.microsoft GroupQueryAttention (ONNX Runtime GenAI's model builder): query [b, s, heads x size],
/// key and value [b, s, key/value heads x size] (or one packed input), the cache in past_key/past_value and out of
/// present_key/present_value [b, key/value heads, t, size], its rotary embedding inside (cos/sin caches of half a
/// head: per rotary dimension, the same for every head, so they keep their width). Each key/value head serves
/// heads / key/value heads consecutive query heads, as Expand/Reshape repeats them (<see cref="HeadRepeat"/>): query
/// heads go evenly within each group (num_heads drops), a key/value head only with its group (kv_num_heads drops and
/// the cache shrinks). Units arriving on its inputs must be whole heads (units of single channels ask for a retry).
/// </summary>
internal sealed class GroupQueryAttentionRule : ChannelRule
{
    public override string Domain => "com.microsoft";
    public override IReadOnlyList<string> OpTypes { get; } = ["GroupQueryAttention"];

    enum Role { Query, Key, Value }

    /// <summary>The two attention products (Q·Kᵀ and P·V) over the cache and the new tokens.</summary>
    public override long Flops(NodeProto node, ShapeProbe probe)
    {
        if (probe.Shape(node.Output[0]) is not { Length: 3 } output) return 0;
        long total = node.Output.Count > 1 && probe.Shape(node.Output[1]) is { Length: 4 } present ? present[2] : output[1];
        return 4 * CostModel.Product(output) * total;
    }

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        string d = ChannelWalk.Describe(node);
        long heads = GraphIndex.IntAttr(node, "num_heads", 0), kvHeads = GraphIndex.IntAttr(node, "kv_num_heads", 0);
        bool packed = node.Input.Count < 3 || node.Input[1].Length == 0;
        if (heads < 1 || kvHeads < 1 || heads % kvHeads != 0) return w.Fail($"{d} has no whole number of query heads per key/value head");
        if (w.Shape(node.Input[0]) is not { Length: 3 } q) return w.Fail($"{d} reads a query that is not [batch, sequence, heads x size]");
        long size = q[2] / (packed ? heads + 2 * kvHeads : heads);
        if (inputs.Any(x => x.Index > 2 || x.Track.Axis != 2 || x.Track.Interleaved)) return w.Fail($"{d} reads the channels through input {inputs.First(x => x.Index > 2 || x.Track.Axis != 2).Index}");
        // Whole heads per unit, each unit of one role (query, key or value heads).
        var role = new Role?[w.Units];
        var head = new int[w.Units][];
        Array.Fill(head, []);
        foreach (var (i, t) in inputs)
        {
            if (w.Heads(t.Pos, (int)size, d) is not { } blocks) return null;
            for (int u = 0; u < blocks.Length; u++)
                foreach (int block in blocks[u])
                {
                    var (r, index) = Place(i, block, packed, heads, kvHeads);
                    if (role[u] is { } known && known != r) return w.Fail($"{d} reads one unit as query and key/value heads");
                    role[u] = r;
                    head[u] = [.. head[u].Append(index).Distinct().Order()];
                }
        }
        for (int i = 0; i < 3; i++)
            if (i < node.Input.Count && node.Input[i].Length > 0 && !w.IsTracked(node.Input[i]))
                return w.Constant(node.Input[i]) is null ? w.Couple(node.Input[i], $"coupled: {d} attends with '{node.Input[i]}' (pruned jointly)") : w.Fail($"{d} has a constant input {i}");
        int[][] Of(Role r) => Enumerable.Range(0, w.Units).Select(u => role[u] == r ? head[u] : []).ToArray();
        var (query, keys, values) = (Of(Role.Query), Of(Role.Key), Of(Role.Value));
        var keyValue = ChannelWalk.Union([keys, values]);
        int perGroup = (int)(heads / kvHeads);
        w.Group.Attributes.Add(new AttributeEdit(node, "num_heads", -1, query));
        w.Group.Attributes.Add(new AttributeEdit(node, "kv_num_heads", -1, keyValue));
        w.Group.Repeats.Add(new RepeatTie(query, ChannelWalk.Map(keyValue, h => Enumerable.Range(h * perGroup, perGroup))));
        var key = new Track(1, 4, (int)kvHeads, keys);
        var value = new Track(1, 4, (int)kvHeads, values);
        if (node.Input.Count > 4 && !(Adopt(w, node, 3, key) && Adopt(w, node, 4, value))) return null;
        if (node.Output.Count > 1 && node.Output[1].Length > 0) w.Output(1, key);
        if (node.Output.Count > 2 && node.Output[2].Length > 0) w.Output(2, value);
        return new Track(2, 3, (int)(heads * size), ChannelWalk.Map(query, h => Enumerable.Range(h * (int)size, (int)size)));
    }

    /// <summary>Which heads a channel block of input <paramref name="input"/> belongs to.</summary>
    static (Role, int) Place(int input, int block, bool packed, long heads, long kvHeads) => input switch
    {
        1 => (Role.Key, block),
        2 => (Role.Value, block),
        _ when !packed || block < heads => (Role.Query, block),
        _ when block < heads + kvHeads => (Role.Key, block - (int)heads),
        _ => (Role.Value, block - (int)(heads + kvHeads)),
    };

    /// <summary>The past key or value: a cache input takes the new head count; another computed one stops the walk.</summary>
    static bool Adopt(ChannelWalk w, NodeProto node, int input, Track like)
    {
        string name = node.Input[input];
        if (name.Length == 0 || w.IsTracked(name) || w.AdoptCache(name, like)) return true;
        w.Fail($"{ChannelWalk.Describe(node)} reads a past key/value '{name}' that is not the model's cache input");
        return false;
    }
}
