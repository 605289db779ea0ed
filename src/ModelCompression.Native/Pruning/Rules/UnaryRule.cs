using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>Activations and other one-input elementwise ops: each channel maps to itself (constant extra parameters allowed).</summary>
internal sealed class UnaryRule : ChannelRule
{
    public override IReadOnlyList<string> OpTypes { get; } =
    [
        "Relu", "Sigmoid", "Tanh", "Erf", "Gelu", "LeakyRelu", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Softplus", "Softsign",
        "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Identity", "Dropout", "Cast",
        "Mish", "ThresholdedRelu", "Clip", "IsNaN", "IsInf", "Not",
    ];

    public override bool FollowsInterleaved => true;

    public override Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs)
    {
        if (inputs.Count != 1 || inputs[0].Index != 0) return w.Fail($"{node.OpType} node '{ChannelWalk.Label(node)}' reads the channels as a parameter");
        for (int i = 1; i < node.Input.Count; i++)
            if (node.Input[i].Length > 0 && w.Constant(node.Input[i]) is null) return w.Fail($"{node.OpType} node '{ChannelWalk.Label(node)}' has a computed parameter");
        return inputs[0].Track;
    }
}
