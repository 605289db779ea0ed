using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Quantization;

internal static class StaticQuantizer
{
    public static (long, long) Run(OnnxModel source, ModelProto model, QuantizationOptions o, QuantizationReport report, IProgress<QuantizationProgress>? progress, CancellationToken cancel) =>
        throw new EngineException("QuantizationModeNotImplemented", EngineErrorKind.NotImplemented, "Static is not implemented yet.");
}
