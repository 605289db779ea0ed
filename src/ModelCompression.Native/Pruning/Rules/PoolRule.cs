using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>Pools work per channel on axis 1.</summary>
internal sealed class PoolRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"];

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        return t.Axis == 1 ? t : w.Fail($"{ChannelWalk.Describe(node)} pools over the channel axis");
    }
}
