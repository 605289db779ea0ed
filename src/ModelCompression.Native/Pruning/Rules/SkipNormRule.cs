using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// ONNX Runtime's com.microsoft SkipLayerNormalization and SkipSimplifiedLayerNormalization (what Optimize-Model and the
/// GenAI model builder fuse a residual Add and the next normalization into): input + skip (+ bias) is normalized over
/// the last axis. Its two data inputs are the residual stream, so the channels join there as at an Add; gamma, beta
/// and bias lose the removed entries; the normalized output and the sum (output 3, the stream that goes on) carry the
/// channels. As for LayerNormalization, the statistics then come from the kept channels only (not exact).
/// </summary>
internal sealed class SkipNormRule : ChannelRule
{
    public override string Domain => "com.microsoft";
    public override IReadOnlyList<string> OpTypes { get; } = ["SkipLayerNormalization", "SkipSimplifiedLayerNormalization"];

    /// <summary>Output 3: input + skip (+ bias), the residual stream after the sum.</summary>
    const int SumOutput = 3;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        string d = ChannelWalk.Describe(node);
        var first = inputs[0].Track;
        if (inputs.Any(x => x.Index > 1)) return w.Fail($"{d} reads the channels as a parameter");
        if (inputs.Any(x => x.Track.Axis != x.Track.Rank - 1 || x.Track.Interleaved || x.Track.Length != first.Length))
            return w.Fail($"{d} normalizes over the last axis, not the channels' axis");
        if (inputs.Count == 1 && node.Input[1 - inputs[0].Index] is var other && other.Length > 0)
        {
            if (w.Constant(other) is not null) return w.Fail($"{d} adds a constant skip to the channels");
            return w.Couple(other, $"coupled: {d} adds '{other}' to the channels (residual; left whole)");
        }
        w.Group.Residual = true;
        var pos = ChannelWalk.Union(inputs.Select(x => x.Track.Pos).ToList());
        for (int i = 2; i < node.Input.Count; i++)
        {
            if (node.Input[i].Length == 0) continue;
            if (w.Constant(node.Input[i]) is not { } c) return w.Fail($"{d} has a computed scale or bias");
            if (c.Dims.Count == 0 || c.Dims[^1] == 1) continue;
            w.Slice(node, i, c.Dims.Count - 1, pos);
        }
        w.Approximate($"{node.OpType} '{ChannelWalk.Label(node)}' normalizes over the pruned channels: its statistics now come from the kept channels only");
        w.Group.Norms.Add(node);
        var track = first with { Pos = pos };
        if (node.Output.Count > SumOutput && node.Output[SumOutput].Length > 0) w.Output(SumOutput, track);
        return track;
    }

    public override Normalization? Normalizes(NodeProto node) => node.OpType == "SkipLayerNormalization"
        ? new Normalization([0, 1, 4], Scale: 2, Bias: 3, Centred: true, GraphIndex.FloatAttr(node, "epsilon") ?? 1e-12f)
        : new Normalization([0, 1, 3], Scale: 2, Bias: null, Centred: false, GraphIndex.FloatAttr(node, "epsilon") ?? 1e-12f);
}
