using System.IO.MemoryMappedFiles;
using System.Numerics.Tensors;

namespace ModelCompression.Native.Data;

/// <summary>
/// A long array of token ids (a 1-D NumPy .npy of any integer type) that language-model training reads as windows:
/// the file is mapped read-only and each window is converted to int64 straight from the mapping, so the corpus is
/// never copied, whatever its size, and no epoch makes a copy of it. The ids are scanned once when the stream opens
/// (their range is checked against the model's vocabulary before any training).
/// </summary>
public sealed unsafe class TokenStream : IDisposable
{
    readonly MemoryMappedFile map;
    readonly MemoryMappedViewAccessor view;
    readonly byte* data;
    readonly string kind;
    bool disposed;

    TokenStream(string source, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* data, string kind, long length)
    {
        Source = source; this.map = map; this.view = view; this.data = data; this.kind = kind; Length = length;
        (MinId, MaxId) = Range();
    }

    public string Source { get; }
    /// <summary>Number of tokens.</summary>
    public long Length { get; }
    /// <summary>NumPy's element type, for example int32 or uint16.</summary>
    public string ElementType => kind[0] switch { 'i' => "int", _ => "uint" } + (int.Parse(kind[1..]) * 8);
    public long MinId { get; }
    public long MaxId { get; }

    /// <summary>Opens a .npy file holding one 1-D array of integers.</summary>
    public static TokenStream Open(string path)
    {
        string full = Path.GetFullPath(path);
        if (!File.Exists(full))
            throw new EngineException("DataFileNotFound", EngineErrorKind.ObjectNotFound, $"Data file '{full}' does not exist.") { Target = full };
        if (!string.Equals(Path.GetExtension(full), ".npy", StringComparison.OrdinalIgnoreCase))
            throw new EngineException("TokenDataFormatUnsupported", EngineErrorKind.InvalidArgument,
                $"Token data '{full}' must be a .npy file holding a 1-D array of token ids (numpy.save('tokens.npy', ids)).") { Target = full };
        Npy.Header header;
        long fileLength;
        try
        {
            using var stream = File.OpenRead(full);
            fileLength = stream.Length;
            header = Npy.ReadHeader(stream, Path.GetFileNameWithoutExtension(full), full);
        }
        catch (Exception e) when (e is EndOfStreamException or IOException or FormatException)
        {
            throw new EngineException("DataFileInvalid", EngineErrorKind.InvalidData, $"Data file '{full}' cannot be read: {e.Message}", e) { Target = full };
        }
        catch (EngineException e) when (e.Target is null)
        {
            throw new EngineException(e.ErrorId, e.Kind, e.Message, e) { Target = full };
        }
        if (header.Shape.Length != 1)
            throw new EngineException("TokenDataShapeInvalid", EngineErrorKind.InvalidData,
                $"Token data '{full}' has shape [{string.Join(",", header.Shape)}]; it must be one 1-D array of token ids.") { Target = full };
        if (!header.IsInteger)
            throw new EngineException("TokenDataTypeInvalid", EngineErrorKind.InvalidData,
                $"Token data '{full}' holds {header.Kind} values; token ids must be integers (int8 to int64, uint8 to uint64).") { Target = full };
        long bytes = header.Count * header.ElementSize;
        if (header.DataOffset + bytes > fileLength)
            throw new EngineException("NpyTruncated", EngineErrorKind.InvalidData,
                $"Token data '{full}' is truncated: its header announces {header.Count:N0} values ({bytes:N0} bytes) but the file holds {fileLength - header.DataOffset:N0} bytes after it.") { Target = full };
        if (header.Count == 0)
            throw new EngineException("DataFileEmpty", EngineErrorKind.InvalidData, $"Token data '{full}' holds no tokens.") { Target = full };
        var map = MemoryMappedFile.CreateFromFile(full, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            return new TokenStream(full, map, view, p + view.PointerOffset + header.DataOffset, header.Kind, header.Count);
        }
        catch
        {
            view?.Dispose();
            map.Dispose();
            throw;
        }
    }

    /// <summary>Tokens [start, start + destination.Length) as int64.</summary>
    public void CopyWindow(long start, Span<long> destination)
    {
        ObjectDisposedException.ThrowIf(disposed, this);
        if (start < 0 || start + destination.Length > Length) throw new ArgumentOutOfRangeException(nameof(start), $"Window [{start}, {start + destination.Length}) is outside the {Length} tokens.");
        int n = destination.Length;
        switch (kind)
        {
            case "i8": new ReadOnlySpan<long>(data + start * 8, n).CopyTo(destination); break;
            case "u8": new ReadOnlySpan<long>(data + start * 8, n).CopyTo(destination); break;   // ids above 2^63 are refused when the stream opens
            case "i4": Widen(new ReadOnlySpan<int>(data + start * 4, n), destination); break;
            case "u4": Widen(new ReadOnlySpan<uint>(data + start * 4, n), destination); break;
            case "i2": Widen(new ReadOnlySpan<short>(data + start * 2, n), destination); break;
            case "u2": Widen(new ReadOnlySpan<ushort>(data + start * 2, n), destination); break;
            case "i1": Widen(new ReadOnlySpan<sbyte>(data + start, n), destination); break;
            default: Widen(new ReadOnlySpan<byte>(data + start, n), destination); break;
        }
    }

    static void Widen<T>(ReadOnlySpan<T> source, Span<long> destination) where T : System.Numerics.IBinaryInteger<T>
    {
        for (int i = 0; i < source.Length; i++) destination[i] = long.CreateTruncating(source[i]);
    }

    /// <summary>Smallest and largest id, in chunks straight from the mapping.</summary>
    (long Min, long Max) Range()
    {
        long min = long.MaxValue, max = long.MinValue;
        const int Chunk = 1 << 20;
        for (long s = 0; s < Length; s += Chunk)
        {
            int n = (int)Math.Min(Chunk, Length - s);
            (long lo, long hi) = kind switch
            {
                "i8" => MinMax(new ReadOnlySpan<long>(data + s * 8, n)),
                "u8" => MinMaxUnsigned(new ReadOnlySpan<ulong>(data + s * 8, n)),
                "i4" => MinMax(new ReadOnlySpan<int>(data + s * 4, n)),
                "u4" => MinMax(new ReadOnlySpan<uint>(data + s * 4, n)),
                "i2" => MinMax(new ReadOnlySpan<short>(data + s * 2, n)),
                "u2" => MinMax(new ReadOnlySpan<ushort>(data + s * 2, n)),
                "i1" => MinMax(new ReadOnlySpan<sbyte>(data + s, n)),
                _ => MinMax(new ReadOnlySpan<byte>(data + s, n)),
            };
            min = Math.Min(min, lo); max = Math.Max(max, hi);
        }
        return (min, max);
    }

    static (long, long) MinMax<T>(ReadOnlySpan<T> v) where T : System.Numerics.IBinaryInteger<T> =>
        (long.CreateTruncating(TensorPrimitives.Min(v)), long.CreateTruncating(TensorPrimitives.Max(v)));

    static (long, long) MinMaxUnsigned(ReadOnlySpan<ulong> v)
    {
        ulong max = TensorPrimitives.Max(v);
        return ((long)TensorPrimitives.Min(v), max > long.MaxValue ? long.MaxValue : (long)max);
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        view.SafeMemoryMappedViewHandle.ReleasePointer();
        view.Dispose();
        map.Dispose();
    }

    public override string ToString() => $"{Path.GetFileName(Source)}: {ElementType}[{Length}]";
}
