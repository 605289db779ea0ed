using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>Resize/Upsample keep channels apart when they scale only the spatial axes.</summary>
internal sealed class ResizeRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Resize", "Upsample"];

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        string d = ChannelWalk.Describe(node);
        if (t.Axis != 1) return w.Fail($"{d} resizes the channel axis");
        if (node.Input.Count > 3 && node.Input[3].Length > 0) return w.Fail($"{d} is given output sizes");
        int scalesInput = node.OpType == "Upsample" ? 1 : 2;
        if (node.Input.Count > scalesInput && node.Input[scalesInput].Length > 0)
        {
            var s = w.Constant(node.Input[scalesInput]);
            if (s is null) return w.Fail($"{d} has computed scales");
            var v = TensorData.ToFloat(s);
            if (v.Length > t.Axis && v[t.Axis] != 1f) return w.Fail($"{d} scales the channel axis");
        }
        return t;
    }
}
