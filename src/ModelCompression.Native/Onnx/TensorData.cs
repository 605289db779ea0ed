using System.Buffers;
using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Google.Protobuf;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// Reads and writes the values of a <see cref="TensorProto"/>, whichever of its storage fields (raw_data, the typed
/// repeated fields, or external data in a <see cref="TensorFile"/>) holds them. Every reader checks what the tensor
/// declares against what it stores (<see cref="Validate"/>) before it allocates anything.
/// </summary>
public static class TensorData
{
    /// <summary>Elements the shape declares, in checked 64-bit arithmetic (a shape that overflows is invalid data).</summary>
    public static long ElementCount(TensorProto t)
    {
        long n = 1;
        foreach (long d in t.Dims)
        {
            if (d < 0) throw new EngineException("TensorShapeInvalid", EngineErrorKind.InvalidData, $"Tensor '{t.Name}' has a negative dimension ({d}).");
            try { n = checked(n * d); }
            catch (OverflowException) { throw ShapeOverflows(t); }
        }
        return n;
    }

    public static long[] Shape(TensorProto t) => t.Dims.ToArray();

    public static bool IsExternal(TensorProto t) => t.DataLocation == TensorProto.Types.DataLocation.External;

    /// <summary>Bytes the declared shape needs in storage (packed for 4-bit types); -1 for types without a fixed size.</summary>
    public static long StorageBytesOfShape(TensorProto t, string? file = null)
    {
        long count = ElementCount(t);
        try { return ElementTypes.ByteCount(t.DataType, count); }
        catch (OverflowException) { throw ShapeOverflows(t, file); }
    }

    /// <summary>Bytes the tensor's values occupy in storage (packed for 4-bit types), wherever they are.</summary>
    public static long StorageBytes(TensorProto t)
    {
        if (ExternalTensor.TryGet(t, out var e)) return e.Length;
        if (t.HasRawData) return t.RawData.Length;
        long bytes = StorageBytesOfShape(t);
        if (bytes >= 0) return bytes;
        return t.StringData.Sum(s => (long)s.Length);
    }

    /// <summary>
    /// Checks that the tensor stores exactly what its shape declares (raw bytes, typed values or external length);
    /// the one check every reader makes before allocating for the declared size.
    /// </summary>
    public static void Validate(TensorProto t, string? file = null)
    {
        long n = ElementCount(t);
        long needed = StorageBytesOfShape(t, file);
        if (IsExternal(t))
        {
            if (ExternalTensor.TryGet(t, out var e) && needed >= 0 && e.Length != needed) throw SizeMismatch(t, $"{e.Length:N0} external bytes", $"{needed:N0}", file);
            return;
        }
        if (t.HasRawData)
        {
            if (needed >= 0 && t.RawData.Length != needed) throw SizeMismatch(t, $"{t.RawData.Length:N0} bytes", $"{needed:N0}", file);
            return;
        }
        long stored = (DT)t.DataType switch
        {
            DT.Float => t.FloatData.Count,
            DT.Double => t.DoubleData.Count,
            DT.Int64 => t.Int64Data.Count,
            DT.Uint32 or DT.Uint64 => t.Uint64Data.Count,
            DT.String => t.StringData.Count,
            DT.Complex64 => t.FloatData.Count,
            DT.Complex128 => t.DoubleData.Count,
            _ => t.Int32Data.Count,
        };
        long expected = (DT)t.DataType switch
        {
            DT.Int4 or DT.Uint4 => (n + 1) / 2,          // int32_data holds the packed bytes, one per int32
            DT.Complex64 or DT.Complex128 => 2 * n,      // real and imaginary parts
            _ => n,
        };
        if (stored != expected) throw SizeMismatch(t, $"{stored:N0} values", $"{expected:N0}", file);
    }

    /// <summary>Values of any numeric tensor as float32 (int and quantized types are converted as numbers).</summary>
    public static float[] ToFloat(TensorProto t)
    {
        Validate(t);
        var result = GC.AllocateUninitializedArray<float>(CheckedLength(t));
        ToFloat(t, result);
        return result;
    }

    /// <summary>
    /// The tensor's values as float32, written into <paramref name="result"/> (exactly the element count long): external
    /// data is read straight into it (float32) or through a pooled buffer, so a loop over large tensors allocates nothing.
    /// </summary>
    public static void ToFloat(TensorProto t, Span<float> result)
    {
        Validate(t);
        int n = CheckedLength(t);
        if (result.Length != n) throw new ArgumentException($"Tensor '{t.Name}' has {n:N0} elements, not {result.Length:N0}.", nameof(result));
        var dt = (DT)t.DataType;
        if (ExternalTensor.TryGet(t, out var e))
        {
            if (dt == DT.Float) { e.File.Read(e.Offset, MemoryMarshal.AsBytes(result)); return; }
            int length = checked((int)e.Length);
            byte[] raw = ArrayPool<byte>.Shared.Rent(length);
            try
            {
                e.File.Read(e.Offset, raw.AsSpan(0, length));
                FromRawBytes(t, raw.AsSpan(0, length), result);
            }
            finally { ArrayPool<byte>.Shared.Return(raw); }
            return;
        }
        if (t.HasRawData)
        {
            FromRawBytes(t, t.RawData.Span, result);
            return;
        }
        switch (dt)
        {
            case DT.Float: for (int i = 0; i < n; i++) result[i] = t.FloatData[i]; break;
            case DT.Double: for (int i = 0; i < n; i++) result[i] = (float)t.DoubleData[i]; break;
            case DT.Int64: for (int i = 0; i < n; i++) result[i] = t.Int64Data[i]; break;
            case DT.Uint32 or DT.Uint64: for (int i = 0; i < n; i++) result[i] = t.Uint64Data[i]; break;
            case DT.Float16: for (int i = 0; i < n; i++) result[i] = (float)BitConverter.UInt16BitsToHalf((ushort)t.Int32Data[i]); break;
            case DT.Bfloat16: for (int i = 0; i < n; i++) result[i] = BFloat16ToFloat((ushort)t.Int32Data[i]); break;
            case DT.Int4 or DT.Uint4:
                {
                    // int32_data holds the packed bytes, one byte per int32.
                    var packed = t.Int32Data.Select(v => (byte)v).ToArray();
                    for (int i = 0; i < n; i++) result[i] = UnpackInt4(packed, i, dt == DT.Int4);
                    break;
                }
            case DT.Int8 or DT.Uint8 or DT.Int16 or DT.Uint16 or DT.Int32 or DT.Bool:
                for (int i = 0; i < n; i++) result[i] = t.Int32Data[i]; break;
            default: throw Unsupported(t);
        }
    }

    static void FromRawBytes(TensorProto t, ReadOnlySpan<byte> raw, Span<float> result)
    {
        int n = result.Length;
        switch ((DT)t.DataType)
        {
            case DT.Float: MemoryMarshal.Cast<byte, float>(raw).CopyTo(result); break;
            case DT.Double: for (int i = 0; i < n; i++) result[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(raw[(8 * i)..]); break;
            case DT.Float16: TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(raw), result); break;
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
    }

    /// <summary>Values of an integer tensor as int64.</summary>
    public static long[] ToInt64(TensorProto t)
    {
        if ((DT)t.DataType != DT.Int64) return ToFloat(t).Select(v => (long)v).ToArray();
        Validate(t);
        int n = CheckedLength(t);
        if (ExternalTensor.TryGet(t, out var e))
        {
            var values = new long[n];
            e.File.Read(e.Offset, MemoryMarshal.AsBytes(values.AsSpan()));
            return values;
        }
        return t.HasRawData ? MemoryMarshal.Cast<byte, long>(t.RawData.Span).ToArray() : t.Int64Data.ToArray();
    }

    /// <summary>The tensor's values as little-endian bytes in the layout raw_data uses.</summary>
    public static ReadOnlyMemory<byte> RawBytes(TensorProto t)
    {
        Validate(t);
        if (ExternalTensor.TryGet(t, out var e)) return e.ReadAll();
        if (t.HasRawData) return t.RawData.Memory;
        CheckedLength(t);
        return (DT)t.DataType switch
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

    /// <summary>The tensor's bytes in an array the caller owns and may change: read from the file once for external data, copied otherwise.</summary>
    public static byte[] RawBytesCopy(TensorProto t)
    {
        Validate(t);
        return ExternalTensor.TryGet(t, out var e) ? e.ReadAll() : RawBytes(t).ToArray();
    }

    /// <summary>A float32 tensor holding <paramref name="values"/> (in raw_data, or in a scratch file while a large model's stage runs).</summary>
    public static TensorProto FromFloat(string name, long[] dims, ReadOnlySpan<float> values) =>
        Create(name, DT.Float, dims, MemoryMarshal.AsBytes(values), null);

    public static TensorProto FromInt64(string name, long[] dims, ReadOnlySpan<long> values) =>
        Create(name, DT.Int64, dims, MemoryMarshal.AsBytes(values), null);

    /// <summary>A tensor of any fixed-size type from its raw little-endian bytes (taken, not copied, when kept in memory).</summary>
    public static TensorProto FromRaw(string name, DT type, long[] dims, byte[] raw) => Create(name, type, dims, raw, raw);

    static TensorProto Create(string name, DT type, long[] dims, ReadOnlySpan<byte> bytes, byte[]? owned)
    {
        var t = new TensorProto { Name = name, DataType = (int)type };
        t.Dims.AddRange(dims);
        if (!TensorSpill.TrySpill(t, bytes)) t.RawData = UnsafeByteOperations.UnsafeWrap(owned ?? bytes.ToArray());
        return t;
    }

    /// <summary>Count of elements exactly equal to zero (for sparsity), any numeric type; external data is read in chunks.</summary>
    public static long CountZeros(TensorProto t)
    {
        var dt = (DT)t.DataType;
        if (dt is not (DT.Float or DT.Float16 or DT.Bfloat16) || !(t.HasRawData || IsExternal(t))) return ToFloat(t).LongCount(v => v == 0f);
        Validate(t);
        if (!ExternalTensor.TryGet(t, out var e)) return CountZeros(t.RawData.Span, dt);
        const int Chunk = 1 << 20;
        var buffer = ArrayPool<byte>.Shared.Rent(Chunk);
        try
        {
            long zeros = 0;
            for (long done = 0; done < e.Length; done += Chunk)
            {
                var span = buffer.AsSpan(0, (int)Math.Min(Chunk, e.Length - done));
                e.File.Read(e.Offset + done, span);
                zeros += CountZeros(span, dt);
            }
            return zeros;
        }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>Zeros among raw float32, float16 or bfloat16 values (+0 and -0; vectorized for float32).</summary>
    public static long CountZeros(ReadOnlySpan<byte> raw, DT type)
    {
        if (type == DT.Float) return MemoryMarshal.Cast<byte, float>(raw).Count(0f);
        long zeros = 0;
        foreach (ushort b in MemoryMarshal.Cast<byte, ushort>(raw)) if ((b & 0x7FFF) == 0) zeros++;
        return zeros;
    }

    public static float BFloat16ToFloat(ushort bits) => BitConverter.Int32BitsToSingle(bits << 16);

    static float UnpackInt4(ReadOnlySpan<byte> packed, int i, bool signed)
    {
        int nibble = (i & 1) == 0 ? packed[i >> 1] & 0x0F : packed[i >> 1] >> 4;
        return signed && nibble >= 8 ? nibble - 16 : nibble;
    }

    /// <summary>The element count as an array length; tensors of 2^31 elements or more cannot be read into one array.</summary>
    static int CheckedLength(TensorProto t)
    {
        long n = ElementCount(t);
        if (n > Array.MaxLength)
            throw new EngineException("TensorTooLarge", EngineErrorKind.LimitsExceeded,
                $"Tensor '{t.Name}' has {n:N0} elements; tensors of more than {Array.MaxLength:N0} elements cannot be processed.");
        return (int)n;
    }

    static EngineException SizeMismatch(TensorProto t, string holds, string needs, string? file) =>
        new("TensorDataSizeMismatch", EngineErrorKind.InvalidData,
            $"Tensor '{t.Name}'{In(file)} holds {holds} but its shape [{string.Join(",", t.Dims)}] of {ElementTypes.Name(t.DataType)} needs {needs}.") { Target = file };

    static EngineException ShapeOverflows(TensorProto t, string? file = null) =>
        new("TensorShapeInvalid", EngineErrorKind.InvalidData, $"Tensor '{t.Name}'{In(file)} declares a shape [{string.Join(",", t.Dims)}] whose size overflows.") { Target = file };

    static string In(string? file) => file is null ? "" : $" in '{file}'";

    static EngineException Unsupported(TensorProto t) =>
        new("TensorTypeUnsupported", EngineErrorKind.NotImplemented, $"Tensor '{t.Name}' has element type {ElementTypes.Name(t.DataType)}, which this operation cannot read as numbers.");
}
