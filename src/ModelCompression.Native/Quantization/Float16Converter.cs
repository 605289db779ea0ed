using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Quantization;

internal static class Float16Converter
{
    public static readonly string[] DefaultBlockList = [];
    public static (long, long) Run(ModelProto model, QuantizationOptions o, QuantizationReport report, CancellationToken cancel) =>
        throw new EngineException("QuantizationModeNotImplemented", EngineErrorKind.NotImplemented, "Float16 is not implemented yet.");
}
