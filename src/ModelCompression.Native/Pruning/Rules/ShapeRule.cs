using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>Shape ends the channels' path; it is harmless while nothing reads the channel axis's size from it.</summary>
internal sealed class ShapeRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Shape"];
    public override bool FollowsInterleaved => true;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        string d = ChannelWalk.Describe(node);
        int start = ChannelWalk.Normalize(Math.Clamp(GraphIndex.IntAttr(node, "start", 0), -t.Rank, t.Rank), t.Rank);
        int end = GraphIndex.IntAttr(node, "end") is { } e ? ChannelWalk.Normalize(Math.Clamp(e, -t.Rank, t.Rank), t.Rank) : t.Rank;
        if (t.Axis < start || t.Axis >= end) return null;
        int entry = t.Axis - start, length = end - start;
        if (w.Index.GraphOutputs.Contains(node.Output[0])) return w.Fail($"{d} is a model output");
        foreach (var (consumer, input) in w.Index.ConsumersOf(node.Output[0]))
        {
            bool reads = consumer.OpType switch
            {
                "Gather" when input == 0 && w.Ints(consumer, 1) is { Length: 1 } idx => ChannelWalk.Normalize(idx[0], length) == entry,
                "Slice" when input == 0 && w.Ints(consumer, 1) is { Length: 1 } s && w.Ints(consumer, 2) is { Length: 1 } en
                    && (consumer.Input.Count < 4 || consumer.Input[3].Length == 0 || w.Ints(consumer, 3) is [0 or -1])
                    && (consumer.Input.Count < 5 || consumer.Input[4].Length == 0 || w.Ints(consumer, 4) is [1]) =>
                    Math.Clamp(ChannelWalk.Normalize(s[0], length), 0, length) <= entry && entry < Math.Clamp(ChannelWalk.Normalize(Math.Min(en[0], length), length), 0, length),
                _ => true,
            };
            if (reads) return w.Fail($"{d} feeds the size of the channel axis into {ChannelWalk.Describe(consumer)}");
        }
        return null;
    }
}
