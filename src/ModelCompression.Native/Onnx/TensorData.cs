using System.Buffers.Binary;
using System.Runtime.InteropServices;
using Google.Protobuf;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// Reads and writes the values of a <see cref="TensorProto"/>, whichever of its storage fields
/// (raw_data or the typed repeated fields) holds them. External data is resolved at load time,
/// so every tensor seen here is in memory.
/// </summary>
public static class TensorData
{
    public static long ElementCount(TensorProto t)
    {
        long n = 1;
        foreach (long d in t.Dims)
        {
            if (d < 0) throw new EngineException("TensorShapeInvalid", EngineErrorKind.InvalidData, $"Tensor '{t.Name}' has a negative dimension ({d}).");
            n = checked(n * d);
        }
        return n;
    }

    public static long[] Shape(TensorProto t) => t.Dims.ToArray();

    /// <summary>Bytes the tensor's values occupy in storage (packed for 4-bit types).</summary>
    public static long StorageBytes(TensorProto t)
    {
        if (t.HasRawData) return t.RawData.Length;
        long bytes = ElementTypes.ByteCount(t.DataType, ElementCount(t));
        if (bytes >= 0) return bytes;
        return t.StringData.Sum(s => (long)s.Length);
    }

    /// <summary>Values of any numeric tensor as float32 (int and quantized types are converted as numbers).</summary>
    public static float[] ToFloat(TensorProto t)
    {
        int n = checked((int)ElementCount(t));
        var result = new float[n];
        var dt = (DT)t.DataType;
        if (t.HasRawData)
        {
            ReadOnlySpan<byte> raw = t.RawData.Span;
            CheckRawLength(t, raw.Length, n);
            switch (dt)
            {
                case DT.Float: MemoryMarshal.Cast<byte, float>(raw).CopyTo(result); break;
                case DT.Double: for (int i = 0; i < n; i++) result[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(raw[(8 * i)..]); break;
                case DT.Float16: for (int i = 0; i < n; i++) result[i] = (float)BitConverter.UInt16BitsToHalf(BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..])); break;
                case DT.Bfloat16: for (int i = 0; i < n; i++) result[i] = BFloat16ToFloat(BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..])); break;
                case DT.Int8: for (int i = 0; i < n; i++) result[i] = (sbyte)raw[i]; break;
                case DT.Uint8: for (int i = 0; i < n; i++) result[i] = raw[i]; break;
                case DT.Bool: for (int i = 0; i < n; i++) result[i] = raw[i] != 0 ? 1 : 0; break;
                case DT.Int16: for (int i = 0; i < n; i++) result[i] = BinaryPrimitives.ReadInt16LittleEndian(raw[(2 * i)..]); break;
                case DT.Uint16: for (int i = 0; i < n; i++) result[i] = BinaryPrimitives.ReadUInt16LittleEndian(raw[(2 * i)..]); break;
                case DT.Int32: for (int i = 0; i < n; i++) result[i] = BinaryPrimitives.ReadInt32LittleEndian(raw[(4 * i)..]); break;
                case DT.Uint32: for (int i = 0; i < n; i++) result[i] = BinaryPrimitives.ReadUInt32LittleEndian(raw[(4 * i)..]); break;
                case DT.Int64: for (int i = 0; i < n; i++) result[i] = BinaryPrimitives.ReadInt64LittleEndian(raw[(8 * i)..]); break;
                case DT.Uint64: for (int i = 0; i < n; i++) result[i] = BinaryPrimitives.ReadUInt64LittleEndian(raw[(8 * i)..]); break;
                case DT.Int4: for (int i = 0; i < n; i++) result[i] = UnpackInt4(raw, i, signed: true); break;
                case DT.Uint4: for (int i = 0; i < n; i++) result[i] = UnpackInt4(raw, i, signed: false); break;
                default: throw Unsupported(t);
            }
            return result;
        }
        switch (dt)
        {
            case DT.Float: CheckCount(t, t.FloatData.Count, n); t.FloatData.CopyTo(result, 0); break;
            case DT.Double: CheckCount(t, t.DoubleData.Count, n); for (int i = 0; i < n; i++) result[i] = (float)t.DoubleData[i]; break;
            case DT.Int64: CheckCount(t, t.Int64Data.Count, n); for (int i = 0; i < n; i++) result[i] = t.Int64Data[i]; break;
            case DT.Uint32 or DT.Uint64: CheckCount(t, t.Uint64Data.Count, n); for (int i = 0; i < n; i++) result[i] = t.Uint64Data[i]; break;
            case DT.Float16: CheckCount(t, t.Int32Data.Count, n); for (int i = 0; i < n; i++) result[i] = (float)BitConverter.UInt16BitsToHalf((ushort)t.Int32Data[i]); break;
            case DT.Bfloat16: CheckCount(t, t.Int32Data.Count, n); for (int i = 0; i < n; i++) result[i] = BFloat16ToFloat((ushort)t.Int32Data[i]); break;
            case DT.Int4 or DT.Uint4:
                {
                    // int32_data holds the packed bytes, one byte per int32.
                    CheckCount(t, t.Int32Data.Count, (n + 1) / 2);
                    var packed = t.Int32Data.Select(v => (byte)v).ToArray();
                    for (int i = 0; i < n; i++) result[i] = UnpackInt4(packed, i, dt == DT.Int4);
                    break;
                }
            case DT.Int8 or DT.Uint8 or DT.Int16 or DT.Uint16 or DT.Int32 or DT.Bool:
                CheckCount(t, t.Int32Data.Count, n); for (int i = 0; i < n; i++) result[i] = t.Int32Data[i]; break;
            default: throw Unsupported(t);
        }
        return result;
    }

    /// <summary>Values of an integer tensor as int64.</summary>
    public static long[] ToInt64(TensorProto t)
    {
        int n = checked((int)ElementCount(t));
        var dt = (DT)t.DataType;
        if (dt == DT.Int64)
        {
            if (t.HasRawData)
            {
                CheckRawLength(t, t.RawData.Length, n);
                return MemoryMarshal.Cast<byte, long>(t.RawData.Span).ToArray();
            }
            CheckCount(t, t.Int64Data.Count, n);
            return t.Int64Data.ToArray();
        }
        var f = ToFloat(t);
        return f.Select(v => (long)v).ToArray();
    }

    /// <summary>The tensor's values as little-endian bytes in the layout raw_data uses.</summary>
    public static ReadOnlyMemory<byte> RawBytes(TensorProto t)
    {
        if (t.HasRawData) return t.RawData.Memory;
        var dt = (DT)t.DataType;
        int n = checked((int)ElementCount(t));
        return dt switch
        {
            DT.Float => MemoryMarshal.AsBytes(t.FloatData.ToArray().AsSpan()).ToArray(),
            DT.Double => MemoryMarshal.AsBytes(t.DoubleData.ToArray().AsSpan()).ToArray(),
            DT.Int64 => MemoryMarshal.AsBytes(t.Int64Data.ToArray().AsSpan()).ToArray(),
            DT.Uint64 => MemoryMarshal.AsBytes(t.Uint64Data.ToArray().AsSpan()).ToArray(),
            DT.Uint32 => MemoryMarshal.AsBytes(t.Uint64Data.Select(v => (uint)v).ToArray().AsSpan()).ToArray(),
            DT.Int32 => MemoryMarshal.AsBytes(t.Int32Data.ToArray().AsSpan()).ToArray(),
            DT.Int16 => MemoryMarshal.AsBytes(t.Int32Data.Select(v => (short)v).ToArray().AsSpan()).ToArray(),
            DT.Uint16 or DT.Float16 or DT.Bfloat16 => MemoryMarshal.AsBytes(t.Int32Data.Select(v => (ushort)v).ToArray().AsSpan()).ToArray(),
            DT.Int8 or DT.Uint8 or DT.Bool or DT.Int4 or DT.Uint4 => t.Int32Data.Select(v => (byte)v).ToArray(),
            _ => throw Unsupported(t),
        };
    }

    /// <summary>A float32 tensor holding <paramref name="values"/> in raw_data.</summary>
    public static TensorProto FromFloat(string name, long[] dims, ReadOnlySpan<float> values)
    {
        var t = new TensorProto { Name = name, DataType = (int)DT.Float };
        t.Dims.AddRange(dims);
        t.RawData = UnsafeByteOperations.UnsafeWrap(MemoryMarshal.AsBytes(values).ToArray());
        return t;
    }

    public static TensorProto FromInt64(string name, long[] dims, ReadOnlySpan<long> values)
    {
        var t = new TensorProto { Name = name, DataType = (int)DT.Int64 };
        t.Dims.AddRange(dims);
        t.RawData = UnsafeByteOperations.UnsafeWrap(MemoryMarshal.AsBytes(values).ToArray());
        return t;
    }

    /// <summary>A tensor of any fixed-size type from its raw little-endian bytes (taken, not copied).</summary>
    public static TensorProto FromRaw(string name, DT type, long[] dims, byte[] raw)
    {
        var t = new TensorProto { Name = name, DataType = (int)type };
        t.Dims.AddRange(dims);
        t.RawData = UnsafeByteOperations.UnsafeWrap(raw);
        return t;
    }

    /// <summary>Count of elements exactly equal to zero (for sparsity), any numeric type.</summary>
    public static long CountZeros(TensorProto t)
    {
        if ((DT)t.DataType == DT.Float && t.HasRawData)
        {
            var span = MemoryMarshal.Cast<byte, float>(t.RawData.Span);
            long zeros = 0;
            foreach (float v in span) if (v == 0f) zeros++;
            return zeros;
        }
        return ToFloat(t).LongCount(v => v == 0f);
    }

    public static float BFloat16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    private static float UnpackInt4(ReadOnlySpan<byte> packed, int i, bool signed)
    {
        int nibble = (i & 1) == 0 ? packed[i >> 1] & 0x0F : packed[i >> 1] >> 4;
        return signed && nibble >= 8 ? nibble - 16 : nibble;
    }

    private static void CheckRawLength(TensorProto t, int actual, int n)
    {
        long expected = ElementTypes.ByteCount(t.DataType, n);
        if (expected != actual)
            throw new EngineException("TensorDataSizeMismatch", EngineErrorKind.InvalidData,
                $"Tensor '{t.Name}' holds {actual} bytes but its shape [{string.Join(",", t.Dims)}] of {ElementTypes.Name(t.DataType)} needs {expected}.");
    }

    private static void CheckCount(TensorProto t, int actual, int n)
    {
        if (actual != n)
            throw new EngineException("TensorDataSizeMismatch", EngineErrorKind.InvalidData,
                $"Tensor '{t.Name}' holds {actual} values but its shape [{string.Join(",", t.Dims)}] needs {n}.");
    }

    private static EngineException Unsupported(TensorProto t) =>
        new("TensorTypeUnsupported", EngineErrorKind.NotImplemented, $"Tensor '{t.Name}' has element type {ElementTypes.Name(t.DataType)}, which this operation cannot read as numbers.");
}
