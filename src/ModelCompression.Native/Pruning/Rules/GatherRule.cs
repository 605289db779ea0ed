using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Gather along another axis than the channels': an embedding lookup in a table whose columns are the channels, or a
/// token picked from a sequence (BERT's [CLS]). The channel axis moves by the indices' rank.
/// </summary>
internal sealed class GatherRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Gather"];
    public override bool FollowsInterleaved => true;

    public override bool ReadsTable(NodeProto node, int input) => input == 0;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        string d = ChannelWalk.Describe(node);
        int axis = ChannelWalk.Normalize(GraphIndex.IntAttr(node, "axis", 0), t.Rank);
        if (axis == t.Axis) return w.Fail($"{d} selects along the channel axis");
        if (w.Shape(node.Input[1]) is not { } indices) return w.Fail($"the shape of '{node.Input[1]}' is unknown");
        int q = indices.Length;
        return t with { Axis = t.Axis < axis ? t.Axis : t.Axis - 1 + q, Rank = t.Rank - 1 + q };
    }
}
