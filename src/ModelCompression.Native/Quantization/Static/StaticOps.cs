using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;

namespace ModelCompression.Native.Quantization;

/// <summary>What static quantization needs to know about one operator family: which input is a weight (and its channel axis), which inputs are parameters.</summary>
internal interface IStaticOp
{
    /// <summary>The output-channel axis of the weight at input 1 (per-channel scales), or -1 when the family has no weight.</summary>
    int WeightAxis(NodeProto node) => -1;

    /// <summary>Inputs that are parameters rather than data (Resize's roi and scales, Clip's bounds, Reshape's shape): never quantized.</summary>
    bool IsAuxiliaryInput(int slot) => false;

    /// <summary>Whether the input at <paramref name="slot"/> is a bias (int32 with scale = input scale × weight scale).</summary>
    bool IsBias(int slot) => false;
}

/// <summary>Conv: weight [M, C/group, kH, kW], channels on axis 0; bias at input 2.</summary>
internal sealed class StaticConv : IStaticOp
{
    public int WeightAxis(NodeProto node) => 0;
    public bool IsBias(int slot) => slot == 2;
}

/// <summary>MatMul: weight [K, N], output channels on axis 1.</summary>
internal sealed class StaticMatMul : IStaticOp
{
    public int WeightAxis(NodeProto node) => 1;
}

/// <summary>Gemm: weight [K, N] (axis 1), or [N, K] with transB (axis 0); bias at input 2.</summary>
internal sealed class StaticGemm : IStaticOp
{
    public int WeightAxis(NodeProto node) => (IntAttr(node, "transB") ?? 0) != 0 ? 0 : 1;
    public bool IsBias(int slot) => slot == 2;
}

/// <summary>Operators whose inputs after the first are parameters (Resize, Reshape, Clip).</summary>
internal sealed class StaticWithParameters : IStaticOp
{
    public bool IsAuxiliaryInput(int slot) => slot > 0;
}

/// <summary>Element-wise, pooling, shape and activation operators: every float input and the output are activations.</summary>
internal sealed class StaticActivations : IStaticOp;
