using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>BatchNormalization and InstanceNormalization over the channel axis 1: every per-channel parameter is sliced.</summary>
internal sealed class NormalizationRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["BatchNormalization", "InstanceNormalization"];

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        if (t.Axis != 1) return w.Fail($"{ChannelWalk.Describe(node)} normalizes another axis");
        for (int i = 1; i < node.Input.Count; i++)
        {
            if (w.Constant(node.Input[i]) is null) return w.Fail($"{ChannelWalk.Describe(node)} has computed parameters");
            w.Slice(node, i, 0, t.Pos);
        }
        return t;
    }

    /// <summary>|scale| / sqrt(variance + epsilon) per channel: how much a BatchNormalization amplifies each channel.</summary>
    public override float[]? ChannelScale(NodeProto bn, GraphIndex index, int channels)
    {
        if (bn.OpType != "BatchNormalization" || bn.Input.Count < 5) return null;
        var scale = index.Constant(bn.Input[1]);
        var variance = index.Constant(bn.Input[4]);
        if (scale is null || variance is null) return null;
        float eps = GraphIndex.FloatAttr(bn, "epsilon") ?? 1e-5f;
        var s = TensorData.ToFloat(scale);
        var v = TensorData.ToFloat(variance);
        if (s.Length != channels || v.Length != channels) return null;
        return s.Select((x, i) => MathF.Abs(x) / MathF.Sqrt(v[i] + eps)).ToArray();
    }
}
