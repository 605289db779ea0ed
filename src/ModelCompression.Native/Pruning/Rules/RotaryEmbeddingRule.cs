using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// ONNX Runtime's com.microsoft RotaryEmbedding: rotates the pairs of each head by position (cos/sin caches per rotary
/// dimension, the same for every head, so they keep their width). On [batch, heads, sequence, size] the heads pass; on
/// [batch, sequence, heads x size] the units must be whole heads (a rotation mixes the two halves of a head) and
/// num_heads drops with them.
/// </summary>
internal sealed class RotaryEmbeddingRule : ChannelRule
{
    public override string Domain => "com.microsoft";
    public override IReadOnlyList<string> OpTypes { get; } = ["RotaryEmbedding"];

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        string d = ChannelWalk.Describe(node);
        if (t.Rank == 4) return t.Axis == 1 ? t : w.Fail($"{d} rotates along the channels");
        long heads = GraphIndex.IntAttr(node, "num_heads", 0);
        if (t.Rank != 3 || t.Axis != 2 || heads < 1 || t.Length % heads != 0) return w.Fail($"{d} rotates [batch, sequence, hidden] without num_heads");
        int size = (int)(t.Length / heads);
        if (w.Heads(t.Pos, size, d) is not { } whole) return null;
        w.Group.Attributes.Add(new AttributeEdit(node, "num_heads", -1, whole));
        return t;
    }
}
