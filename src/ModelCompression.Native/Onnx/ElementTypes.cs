using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Onnx;

/// <summary>Facts about ONNX tensor element types: names and storage sizes.</summary>
public static class ElementTypes
{
    public static string Name(int dataType) => dataType switch
    {
        (int)TensorProto.Types.DataType.Float => "float32",
        (int)TensorProto.Types.DataType.Uint8 => "uint8",
        (int)TensorProto.Types.DataType.Int8 => "int8",
        (int)TensorProto.Types.DataType.Uint16 => "uint16",
        (int)TensorProto.Types.DataType.Int16 => "int16",
        (int)TensorProto.Types.DataType.Int32 => "int32",
        (int)TensorProto.Types.DataType.Int64 => "int64",
        (int)TensorProto.Types.DataType.String => "string",
        (int)TensorProto.Types.DataType.Bool => "bool",
        (int)TensorProto.Types.DataType.Float16 => "float16",
        (int)TensorProto.Types.DataType.Double => "float64",
        (int)TensorProto.Types.DataType.Uint32 => "uint32",
        (int)TensorProto.Types.DataType.Uint64 => "uint64",
        (int)TensorProto.Types.DataType.Complex64 => "complex64",
        (int)TensorProto.Types.DataType.Complex128 => "complex128",
        (int)TensorProto.Types.DataType.Bfloat16 => "bfloat16",
        (int)TensorProto.Types.DataType.Float8E4M3Fn => "float8e4m3fn",
        (int)TensorProto.Types.DataType.Float8E4M3Fnuz => "float8e4m3fnuz",
        (int)TensorProto.Types.DataType.Float8E5M2 => "float8e5m2",
        (int)TensorProto.Types.DataType.Float8E5M2Fnuz => "float8e5m2fnuz",
        (int)TensorProto.Types.DataType.Uint4 => "uint4",
        (int)TensorProto.Types.DataType.Int4 => "int4",
        (int)TensorProto.Types.DataType.Float4E2M1 => "float4e2m1",
        (int)TensorProto.Types.DataType.Float8E8M0 => "float8e8m0",
        _ => $"type{dataType}",
    };

    /// <summary>Storage bits per element (4 for the packed 4-bit types); 0 for strings and unknown types.</summary>
    public static int Bits(int dataType) => dataType switch
    {
        (int)TensorProto.Types.DataType.Float or (int)TensorProto.Types.DataType.Int32 or (int)TensorProto.Types.DataType.Uint32 => 32,
        (int)TensorProto.Types.DataType.Double or (int)TensorProto.Types.DataType.Int64 or (int)TensorProto.Types.DataType.Uint64
            or (int)TensorProto.Types.DataType.Complex64 => 64,
        (int)TensorProto.Types.DataType.Complex128 => 128,
        (int)TensorProto.Types.DataType.Float16 or (int)TensorProto.Types.DataType.Bfloat16
            or (int)TensorProto.Types.DataType.Int16 or (int)TensorProto.Types.DataType.Uint16 => 16,
        (int)TensorProto.Types.DataType.Int8 or (int)TensorProto.Types.DataType.Uint8 or (int)TensorProto.Types.DataType.Bool
            or (int)TensorProto.Types.DataType.Float8E4M3Fn or (int)TensorProto.Types.DataType.Float8E4M3Fnuz
            or (int)TensorProto.Types.DataType.Float8E5M2 or (int)TensorProto.Types.DataType.Float8E5M2Fnuz
            or (int)TensorProto.Types.DataType.Float8E8M0 => 8,
        (int)TensorProto.Types.DataType.Int4 or (int)TensorProto.Types.DataType.Uint4 or (int)TensorProto.Types.DataType.Float4E2M1 => 4,
        _ => 0,
    };

    public static bool IsFloatingPoint(int dataType) => dataType is (int)TensorProto.Types.DataType.Float
        or (int)TensorProto.Types.DataType.Float16 or (int)TensorProto.Types.DataType.Bfloat16 or (int)TensorProto.Types.DataType.Double;

    /// <summary>Bytes needed for <paramref name="count"/> elements; -1 when the type has no fixed size.</summary>
    public static long ByteCount(int dataType, long count)
    {
        int bits = Bits(dataType);
        if (bits == 0) return -1;
        return bits == 4 ? (count + 1) / 2 : checked(count * (bits / 8));
    }
}
