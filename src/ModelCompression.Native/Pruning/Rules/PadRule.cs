using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>Pad keeps channels apart when it does not pad the channel axis.</summary>
internal sealed class PadRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Pad"];

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        string d = ChannelWalk.Describe(node);
        long[]? pads = GraphIndex.IntsAttr(node, "pads") ?? w.Ints(node, 1);
        if (node.Input.Count > 3 && node.Input[3].Length > 0) return w.Fail($"{d} pads selected axes");
        if (pads is null || pads.Length != 2 * t.Rank) return w.Fail($"{d} has computed pads");
        return pads[t.Axis] == 0 && pads[t.Axis + t.Rank] == 0 ? t : w.Fail($"{d} pads the channel axis");
    }
}
