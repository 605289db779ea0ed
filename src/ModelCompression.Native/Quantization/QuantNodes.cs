using Google.Protobuf;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>Builders for the nodes and tensors the quantizers insert; graph lookups live in <see cref="GraphIndex"/>.</summary>
internal static class QuantNodes
{
    public const string MicrosoftDomain = "com.microsoft";

    /// <summary>Declares ONNX Runtime's contrib domain, which MatMulNBits, DynamicQuantizeMatMul and old-opset Q/DQ need.</summary>
    public static void EnsureMicrosoftDomain(ModelProto model)
    {
        if (!model.OpsetImport.Any(o => o.Domain == MicrosoftDomain))
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = MicrosoftDomain, Version = 1 });
    }

    public static NodeProto Node(string opType, string name, IEnumerable<string> inputs, IEnumerable<string> outputs, string domain = "", params AttributeProto[] attributes)
    {
        var n = new NodeProto { OpType = opType, Name = name, Domain = domain };
        n.Input.AddRange(inputs);
        n.Output.AddRange(outputs);
        n.Attribute.AddRange(attributes);
        return n;
    }

    public static TensorProto Scalar(string name, float value) => TensorData.FromFloat(name, [], [value]);

    public static TensorProto Bytes(string name, DT type, long[] dims, byte[] raw) => TensorData.FromRaw(name, type, dims, raw);

    public static TensorProto Half(string name, long[] dims, byte[] raw) => TensorData.FromRaw(name, DT.Float16, dims, raw);

    public static ByteString Utf8(string s) => ByteString.CopyFromUtf8(s);
}
