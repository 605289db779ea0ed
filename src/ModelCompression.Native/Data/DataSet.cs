using System.Globalization;
using System.IO.Compression;
using System.Text;
using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Data;

/// <summary>
/// Arrays read from a data file: NumPy's .npy/.npz, or CSV (a header row; numeric columns; an optional
/// label column). Arrays named y, label or labels are labels; the others feed the model's inputs,
/// by name where names match, else in order (see ModelInputs).
/// </summary>
public sealed class DataSet
{
    static readonly string[] LabelNames = ["y", "label", "labels"];

    public DataSet(string source, IReadOnlyList<NamedArray> arrays)
    {
        Source = source;
        Arrays = arrays;
        if (arrays.Count == 0) throw new EngineException("DataFileEmpty", EngineErrorKind.InvalidData, $"Data file '{source}' holds no arrays.");
        long rows = arrays[0].Rows;
        var odd = arrays.FirstOrDefault(a => a.Rows != rows);
        if (odd is not null)
            throw new EngineException("DataRowCountMismatch", EngineErrorKind.InvalidData,
                $"Data file '{source}': array '{odd.Name}' has {odd.Rows} rows but '{arrays[0].Name}' has {rows}.");
    }

    public string Source { get; }
    public IReadOnlyList<NamedArray> Arrays { get; }
    public long Rows => Arrays[0].Rows;
    public IReadOnlyList<NamedArray> Features => Arrays.Where(a => !IsLabel(a.Name)).ToList();
    public long[]? Labels => LabelArray?.AsInt64();
    /// <summary>The labels with their shape: [rows] (one class per row) or [rows, positions] (one per position, sequence models).</summary>
    public NamedArray? LabelArray => Arrays.FirstOrDefault(a => IsLabel(a.Name));

    static bool IsLabel(string name) => LabelNames.Contains(name, StringComparer.OrdinalIgnoreCase);

    public static DataSet Load(string path)
    {
        string full = Path.GetFullPath(path);
        if (!File.Exists(full))
            throw new EngineException("DataFileNotFound", EngineErrorKind.ObjectNotFound, $"Data file '{full}' does not exist.") { Target = full };
        try
        {
            return Path.GetExtension(full).ToLowerInvariant() switch
            {
                ".npy" => new DataSet(full, [Npy.Read(File.OpenRead(full), Path.GetFileNameWithoutExtension(full), full)]),
                ".npz" => ReadNpz(full),
                ".csv" => ReadCsv(full),
                var ext => throw new EngineException("DataFileFormatUnsupported", EngineErrorKind.InvalidArgument,
                    $"Data file '{full}' has extension '{ext}'; use .npz, .npy or .csv."),
            };
        }
        catch (EngineException e) when (e.Target is null)
        {
            throw new EngineException(e.ErrorId, e.Kind, e.Message.Contains(full, StringComparison.Ordinal) ? e.Message : $"{e.Message} (file '{full}')", e) { Target = full };
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException or FormatException)
        {
            throw new EngineException("DataFileInvalid", EngineErrorKind.InvalidData, $"Data file '{full}' cannot be read: {e.Message}", e) { Target = full };
        }
    }

    /// <summary>A file, or every .npz/.npy/.csv in a folder, as one set of batches (rows concatenated lazily by the caller).</summary>
    public static IReadOnlyList<DataSet> LoadMany(string path)
    {
        if (!Directory.Exists(path)) return [Load(path)];
        var files = Directory.EnumerateFiles(path)
            .Where(f => Path.GetExtension(f).ToLowerInvariant() is ".npz" or ".npy" or ".csv")
            .Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0)
            throw new EngineException("DataFolderEmpty", EngineErrorKind.InvalidData, $"Folder '{path}' holds no .npz, .npy or .csv file.") { Target = path };
        return files.Select(Load).ToList();
    }

    static DataSet ReadNpz(string path)
    {
        using var zip = ZipFile.OpenRead(path);
        var arrays = new List<NamedArray>();
        foreach (var entry in zip.Entries.Where(e => e.FullName.EndsWith(".npy", StringComparison.OrdinalIgnoreCase)))
        {
            using var s = entry.Open();
            arrays.Add(Npy.Read(s, Path.GetFileNameWithoutExtension(entry.FullName), path));
        }
        return new DataSet(path, arrays);
    }

    static DataSet ReadCsv(string path)
    {
        using var reader = new StreamReader(path, Encoding.UTF8);
        string? header = reader.ReadLine();
        if (header is null) throw new EngineException("DataFileEmpty", EngineErrorKind.InvalidData, $"CSV file '{path}' is empty.");
        var names = header.Split(',').Select(h => h.Trim().Trim('"')).ToArray();
        int labelCol = Array.FindIndex(names, n => IsLabel(n));
        var features = new List<float>();
        var labels = new List<long>();
        int rows = 0;
        for (string? line = reader.ReadLine(); line is not null; line = reader.ReadLine())
        {
            if (line.Length == 0) continue;
            var cells = line.Split(',');
            if (cells.Length != names.Length)
                throw new EngineException("CsvRowInvalid", EngineErrorKind.InvalidData, $"CSV file '{path}' line {rows + 2} has {cells.Length} cells; the header has {names.Length}.");
            for (int c = 0; c < cells.Length; c++)
            {
                if (!double.TryParse(cells[c], NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
                    throw new EngineException("CsvValueInvalid", EngineErrorKind.InvalidData, $"CSV file '{path}' line {rows + 2}, column '{names[c]}': '{cells[c]}' is not a number.");
                if (c == labelCol) labels.Add((long)v); else features.Add((float)v);
            }
            rows++;
        }
        if (rows == 0) throw new EngineException("DataFileEmpty", EngineErrorKind.InvalidData, $"CSV file '{path}' has a header but no rows.");
        int cols = names.Length - (labelCol >= 0 ? 1 : 0);
        var arrays = new List<NamedArray> { new("x", [rows, cols], features.ToArray()) };
        if (labelCol >= 0) arrays.Add(new NamedArray("y", [rows], labels.ToArray()));
        return new DataSet(path, arrays);
    }
}

/// <summary>NumPy's .npy format (versions 1-3), little-endian, C order.</summary>
public static class Npy
{
    /// <summary>What an .npy header says: element type (NumPy's descr without the byte order), shape, and where the values start.</summary>
    internal sealed record Header(string Kind, long[] Shape, long DataOffset)
    {
        public long Count => Shape.Aggregate(1L, (a, d) => checked(a * d));
        /// <summary>Bytes per element, or 0 for a type that is not read.</summary>
        public int ElementSize => Kind switch { "f4" or "i4" or "u4" => 4, "f8" or "i8" or "u8" => 8, "f2" or "i2" or "u2" => 2, "u1" or "i1" or "b1" => 1, _ => 0 };
        public bool IsInteger => Kind is "i1" or "u1" or "i2" or "u2" or "i4" or "u4" or "i8" or "u8";
    }

    /// <summary>Reads and checks the header (versions 1-3): magic, byte order, C order, a known element type.</summary>
    internal static Header ReadHeader(Stream stream, string name, string source)
    {
        var br = new BinaryReader(stream);
        var magic = br.ReadBytes(6);
        if (magic.Length < 6 || magic[0] != 0x93 || Encoding.ASCII.GetString(magic, 1, 5) != "NUMPY")
            throw new EngineException("NpyInvalid", EngineErrorKind.InvalidData, $"Array '{name}' in '{source}' is not in NumPy .npy format.");
        byte major = br.ReadByte(); br.ReadByte();
        int headerLen = major == 1 ? br.ReadUInt16() : (int)br.ReadUInt32();
        string header = Encoding.UTF8.GetString(br.ReadBytes(headerLen));
        string descr = HeaderValue(header, "descr").Trim('\'', '"');
        if (HeaderValue(header, "fortran_order").StartsWith("True", StringComparison.Ordinal))
            throw new EngineException("NpyFortranOrder", EngineErrorKind.NotImplemented, $"Array '{name}' in '{source}' is in Fortran order; save it in C order.");
        string shapeText = HeaderValue(header, "shape").Trim('(', ')', ' ');
        long[] shape = shapeText.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => long.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        if (descr.Length < 3 || descr[0] == '>')
            throw new EngineException("NpyTypeUnsupported", EngineErrorKind.NotImplemented, $"Array '{name}' in '{source}' has type '{descr}'; only little-endian numbers are read.");
        var result = new Header(descr[1..], shape, (major == 1 ? 10 : 12) + headerLen);
        if (result.ElementSize == 0)
            throw new EngineException("NpyTypeUnsupported", EngineErrorKind.NotImplemented, $"Array '{name}' in '{source}' has type '{descr}', which is not supported.");
        return result;
    }

    public static NamedArray Read(Stream stream, string name, string source)
    {
        using var _ = stream;
        var h = ReadHeader(stream, name, source);
        long count = h.Count;
        int size = h.ElementSize;
        if (count * size > Array.MaxLength)
            throw new EngineException("NpyTooLarge", EngineErrorKind.LimitsExceeded, $"Array '{name}' in '{source}' is too large ({count:N0} values).");
        var bytes = new BinaryReader(stream).ReadBytes((int)(count * size));
        if (bytes.Length != count * size)
            throw new EngineException("NpyTruncated", EngineErrorKind.InvalidData, $"Array '{name}' in '{source}' is truncated: {bytes.Length} of {count * size} bytes.");
        Array data = h.Kind switch
        {
            "f4" => Cast<float>(bytes),
            "f8" => Cast<double>(bytes),
            "f2" => Cast<Half>(bytes),
            "i8" => Cast<long>(bytes),
            "u8" => Array.ConvertAll(Cast<ulong>(bytes), v => (long)v),
            "i4" => Cast<int>(bytes),
            "u4" => Array.ConvertAll(Cast<uint>(bytes), v => (long)v),
            "i2" => Array.ConvertAll(Cast<short>(bytes), v => (int)v),
            "u2" => Array.ConvertAll(Cast<ushort>(bytes), v => (int)v),
            "u1" => bytes,
            "i1" => Cast<sbyte>(bytes),
            _ => Array.ConvertAll(bytes, v => v != 0),
        };
        return new NamedArray(name, h.Shape, data);
    }

    /// <summary>Writes a float32 or int64 array as .npy version 1 (used by tests and benches).</summary>
    public static void Write(Stream stream, NamedArray array)
    {
        string descr = array.Data switch { float[] => "<f4", long[] => "<i8", int[] => "<i4", double[] => "<f8", _ => throw new NotSupportedException(array.ElementType.Name) };
        string shape = array.Shape.Length == 1 ? $"({array.Shape[0]},)" : "(" + string.Join(", ", array.Shape) + ")";
        string header = $"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}";
        int pad = 16 - (10 + header.Length + 1) % 16;
        header = header + new string(' ', pad % 16) + "\n";
        var bw = new BinaryWriter(stream, Encoding.ASCII, leaveOpen: true);
        bw.Write((byte)0x93); bw.Write("NUMPY"u8.ToArray()); bw.Write((byte)1); bw.Write((byte)0);
        bw.Write((ushort)header.Length); bw.Write(Encoding.ASCII.GetBytes(header));
        var raw = new byte[Buffer.ByteLength(array.Data)];
        Buffer.BlockCopy(array.Data, 0, raw, 0, raw.Length);
        bw.Write(raw);
        bw.Flush();
    }

    /// <summary>Writes arrays as an .npz (a zip of .npy files).</summary>
    public static void WriteNpz(string path, IEnumerable<NamedArray> arrays)
    {
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        foreach (var a in arrays)
        {
            using var s = zip.CreateEntry(a.Name + ".npy").Open();
            Write(s, a);
        }
    }

    static T[] Cast<T>(byte[] bytes) where T : struct => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, T>(bytes).ToArray();

    static string HeaderValue(string header, string key)
    {
        int i = header.IndexOf("'" + key + "'", StringComparison.Ordinal);
        if (i < 0) throw new FormatException($"the .npy header has no '{key}'");
        int colon = header.IndexOf(':', i);
        int end = key == "shape" ? header.IndexOf(')', colon) + 1 : header.IndexOfAny([',', '}'], colon);
        return header[(colon + 1)..end].Trim();
    }
}
