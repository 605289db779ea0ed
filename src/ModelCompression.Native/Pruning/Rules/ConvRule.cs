using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Conv and ConvTranspose. As a member: its output channels (weight rows and bias). As a consumer: the input channels
/// of its weight (a sink), or a depthwise convolution, whose channels are the incoming ones (its group count drops).
/// </summary>
internal sealed class ConvRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } = ["Conv", "ConvTranspose"];

    public override bool ReadsWeights => true;

    public override LayerShape? Layer(NodeProto node, TensorProto weight, out string? why)
    {
        why = null;
        if (node.OpType != "Conv") return null;
        if (weight.Dims.Count < 3) { why = "Conv weight has rank below 3"; return null; }
        long elements = TensorData.ElementCount(weight);
        int outputs = (int)weight.Dims[0];
        return new LayerShape(WeightLayout.OutputMajor, outputs, (int)(elements / outputs), ActivationAxis: 1,
            KernelSize: (int)(elements / outputs / weight.Dims[1]), Groups: (int)GraphIndex.IntAttr(node, "group", 1));
    }

    public override long Flops(NodeProto node, ShapeProbe probe)
    {
        var w = probe.Shape(node.Input[1]);
        if (w is not { Length: >= 3 }) return 0;
        if (node.OpType == "Conv") return probe.Shape(node.Output[0]) is { } output ? 2 * CostModel.Product(output) * CostModel.Product(w.AsSpan(1)) : 0;
        return probe.Shape(node.Input[0]) is { } x ? 2 * CostModel.Product(x) * CostModel.Product(w.AsSpan(1)) : 0;
    }

    public override (string Tensor, int Axis)? SinkInput(NodeProto node, SliceEdit edit) =>
        node.OpType == "Conv" && edit.Axis == 1 && GraphIndex.IntAttr(node, "group", 1) == 1 ? (node.Input[0], 1) : null;

    public override Track? Start(ChannelWalk w, int member)
    {
        var m = w.Group.Members[member];
        var (p, t) = (m.Node, m.Target!);
        if (p.OpType != "Conv") return w.Fail($"{ChannelWalk.Describe(p)} is not a layer whose output channels are pruned");
        if (w.Probe.Shape(p.Output[0]) is not { } outShape) return w.Fail("its output shape is unknown");
        if (t.Groups != 1)
            return w.Fail(t.Groups == t.Outputs && t.Inputs == t.KernelSize
                ? "depthwise convolution: its channels are the channels of the layer before it and are pruned with that layer"
                : $"grouped convolution (group {t.Groups}): its output channels are tied to their groups");
        var pos = w.Group.MemberPositions(member, m.Columns);
        w.Slice(p, 1, 0, pos);
        if (p.Input.Count > 2 && p.Input[2].Length > 0)
        {
            if (w.Constant(p.Input[2]) is null) return w.Fail("its bias is computed, not a constant");
            w.Slice(p, 2, 0, pos);
        }
        return new Track(1, outShape.Length, t.Outputs, pos);
    }

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (DataInput(w, node, inputs) is not { } t) return null;
        string d = ChannelWalk.Describe(node);
        var weight = w.Constant(node.Input[1]);
        if (node.OpType == "ConvTranspose")
        {
            if (t.Axis != 1 || GraphIndex.IntAttr(node, "group", 1) != 1) return w.Fail($"{d} is grouped");
            if (weight is null) return w.Fail($"{d} has a computed weight");
            w.Slice(node, 1, 0, t.Pos);
            w.Sink(node);
            return null;
        }
        if (t.Axis != 1) return w.Fail($"{d} reads another axis");
        if (weight is null) return w.Fail($"{d} has a computed weight");
        long group = GraphIndex.IntAttr(node, "group", 1);
        if (group == 1)
        {
            w.Slice(node, 1, 1, t.Pos);
            w.Sink(node);
            return null;
        }
        if (group == t.Length && weight.Dims[0] == group && weight.Dims[1] == 1)
        {
            // Depthwise: one filter per incoming channel, which it keeps apart.
            w.Slice(node, 1, 0, t.Pos);
            if (node.Input.Count > 2 && node.Input[2].Length > 0)
            {
                if (w.Constant(node.Input[2]) is null) return w.Fail($"{d} has a computed bias");
                w.Slice(node, 2, 0, t.Pos);
            }
            w.Group.Attributes.Add(new AttributeEdit(node, "group", -1, t.Pos));
            return t;
        }
        return w.Fail($"grouped {d} (group {group}) ties channels together");
    }
}
