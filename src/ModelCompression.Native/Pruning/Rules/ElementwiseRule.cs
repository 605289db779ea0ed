using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Broadcasting elementwise ops (Add, Mul, Where, ...): tracked inputs must carry the channels on the same axis
/// (counted from the end); constants with a full channel axis are sliced; a computed input with a full channel axis
/// couples the group to that tensor's producer (a residual Add, a gating Mul).
/// </summary>
internal sealed class ElementwiseRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } =
    [
        "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal", "Greater", "Less", "GreaterOrEqual",
        "LessOrEqual", "And", "Or", "Xor", "Mod",
    ];

    public override bool FollowsInterleaved => true;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        var first = inputs[0].Track;
        string label = ChannelWalk.Label(node);
        if (w.Probe.Shape(node.Output[0]) is not { } outShape) return w.Fail($"the shape of '{node.Output[0]}' is unknown");
        int outRank = outShape.Length;
        int fromEnd = first.Rank - first.Axis;
        foreach (var (_, tr) in inputs)
            if (tr.Rank - tr.Axis != fromEnd || tr.Length != first.Length || tr.Interleaved != first.Interleaved)
                return w.Fail($"{node.OpType} node '{label}' combines the channels with differently laid out ones");
        var pos = ChannelWalk.Union(inputs.Select(x => x.Track.Pos).ToList());
        // Tracked channels summed with each other: a residual stream (hidden size), not a gate.
        if (inputs.Count > 1 && node.OpType is "Add" or "Sub" or "Sum" or "Mean") w.Group.Residual = true;
        for (int i = 0; i < node.Input.Count; i++)
        {
            string name = node.Input[i];
            if (name.Length == 0 || w.IsTracked(name)) continue;
            var c = w.Constant(name);
            if (w.Shape(name) is not { } shape) return w.Fail($"the shape of '{name}' is unknown");
            int a = shape.Length - fromEnd;
            if (a < 0 || shape[a] == 1) continue;
            if (first.Interleaved) return w.Fail($"{node.OpType} node '{label}' applies '{name}' per head where heads are merged with the batch axis");
            if (shape[a] != first.Length) return w.Fail($"{node.OpType} node '{label}' broadcasts '{name}' oddly against the channels");
            if (c is null)
            {
                string source = w.Index.Producer.TryGetValue(name, out var pn) ? $"{pn.OpType} '{ChannelWalk.Label(pn)}'" : "a model input";
                return w.Couple(name, $"coupled: {node.OpType} node '{label}' joins the channels with '{name}' from {source} (residual or gate; left whole)");
            }
            if (ElementTypes.ByteCount(c.DataType, 1) <= 0) return w.Fail($"constant '{name}' has a packed element type");
            w.Slice(node, i, a, pos);
        }
        return new Track(outRank - fromEnd, outRank, first.Length, pos, first.Interleaved);
    }
}
