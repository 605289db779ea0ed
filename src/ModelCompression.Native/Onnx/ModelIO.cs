using System.IO.MemoryMappedFiles;
using Google.Protobuf;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Onnx;

/// <summary>Options for <see cref="ModelIO.Save"/>.</summary>
public sealed record SaveOptions
{
    /// <summary>Store tensors of at least <see cref="ExternalThreshold"/> bytes in a "&lt;file&gt;.data" file beside the model.</summary>
    public bool ExternalData { get; init; }
    public int ExternalThreshold { get; init; } = 1024;
    public bool Overwrite { get; init; }
    /// <summary>Models whose single-file form would reach this size are written with external data regardless.</summary>
    public long SingleFileLimit { get; init; } = ModelIO.SingleFileLimit;
}

/// <summary>What <see cref="ModelIO.Save"/> wrote.</summary>
public sealed record SaveResult(string ModelPath, string? DataPath, bool ExternalDataForced);

/// <summary>
/// Loads and saves ONNX files. Loading resolves external data (refusing paths that leave the model's
/// folder and sizes that do not fit the file) so that an <see cref="OnnxModel"/> is self-contained;
/// saving is atomic (temporary file, then rename).
/// </summary>
public static class ModelIO
{
    /// <summary>Protobuf cannot serialize a message of 2 GiB or more; stay well below it.</summary>
    public const long SingleFileLimit = 2_000_000_000;
    const int ExternalAlignment = 4096;

    public static OnnxModel Load(string path, CancellationToken cancel = default)
    {
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full))
            throw Error("ModelPathIsDirectory", EngineErrorKind.InvalidArgument, full, $"'{full}' is a directory, not an ONNX model file.");
        if (!File.Exists(full))
            throw Error("ModelFileNotFound", EngineErrorKind.ObjectNotFound, full, $"Model file '{full}' does not exist.");
        if (new FileInfo(full).Length == 0)
            throw Error("ModelFileEmpty", EngineErrorKind.InvalidData, full, $"Model file '{full}' is empty.");

        ModelProto proto;
        try
        {
            proto = ParseMapped(full);
        }
        catch (InvalidProtocolBufferException e)
        {
            bool truncated = e.Message.Contains("truncated", StringComparison.OrdinalIgnoreCase);
            throw Error(truncated ? "ModelFileTruncated" : "ModelFileNotOnnx", EngineErrorKind.InvalidData, full,
                truncated ? $"Model file '{full}' is truncated: {e.Message}" : $"'{full}' is not an ONNX model (it is not a valid ModelProto: {e.Message})", e);
        }
        if (!proto.HasIrVersion || proto.Graph is null)
            throw Error("ModelFileNotOnnx", EngineErrorKind.InvalidData, full, $"'{full}' is not an ONNX model (no IR version or no graph).");
        if (proto.IrVersion >= 3 && proto.OpsetImport.Count == 0)
            throw Error("ModelFileTruncated", EngineErrorKind.InvalidData, full, $"Model file '{full}' is incomplete: it declares no operator set (a truncated file?).");

        cancel.ThrowIfCancellationRequested();
        using (var external = new ExternalDataReader(Path.GetDirectoryName(full)!, full))
        {
            foreach (var tensor in AllTensors(proto.Graph))
            {
                cancel.ThrowIfCancellationRequested();
                if (tensor.DataLocation == TensorProto.Types.DataLocation.External) external.Resolve(tensor);
                else CheckEmbedded(tensor, full);
            }
        }

        IReadOnlyList<ModelStage> history = [];
        var entry = proto.MetadataProps.FirstOrDefault(p => p.Key == ModelStage.MetadataKey);
        if (entry is not null) history = ModelStage.Deserialize(entry.Value);
        return new OnnxModel(proto, full, history);
    }

    /// <summary>
    /// Parses the file through a read-only memory map: the parser copies each tensor once, straight from the page
    /// cache into the model, so memory stays at about the model's size and no intermediate buffer is filled.
    /// The map is released before returning; the model owns ordinary managed memory.
    /// </summary>
    static unsafe ModelProto ParseMapped(string path)
    {
        long length = new FileInfo(path).Length;
        if (length > int.MaxValue)
            throw Error("ModelFileTooLarge", EngineErrorKind.LimitsExceeded, path,
                $"'{path}' is {length:N0} bytes; a single ONNX protobuf cannot exceed 2 GB (large models keep their tensors in external data).");
        using var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        using var view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        byte* start = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref start);
        try
        {
            return ModelProto.Parser.ParseFrom(new ReadOnlySpan<byte>(start + view.PointerOffset, (int)length));
        }
        finally
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
    }

    /// <summary>Parses a model from bytes (tests, in-memory builds). External data is not allowed here.</summary>
    public static OnnxModel FromBytes(byte[] bytes, string? name = null)
    {
        var proto = ModelProto.Parser.ParseFrom(bytes);
        return new OnnxModel(proto, name, []);
    }

    /// <summary>
    /// Writes <paramref name="model"/> to <paramref name="path"/> atomically, with the stage history in metadata_props.
    /// Nothing is left behind on failure or cancellation, and an existing file is replaced only when asked.
    /// </summary>
    public static SaveResult Save(OnnxModel model, string path, SaveOptions? options = null, CancellationToken cancel = default)
    {
        options ??= new SaveOptions();
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir))
            throw Error("ExportDirectoryNotFound", EngineErrorKind.ObjectNotFound, full, $"The folder '{dir}' does not exist.");
        if (Directory.Exists(full))
            throw Error("ExportPathIsDirectory", EngineErrorKind.InvalidArgument, full, $"'{full}' is a directory; give a file path or use -Directory.");
        if (File.Exists(full) && !options.Overwrite)
            throw Error("ExportFileExists", EngineErrorKind.ResourceExists, full, $"'{full}' already exists. Use -Force to overwrite it.");
        if (model.SourcePath is not null && string.Equals(Path.GetFullPath(model.SourcePath), full, StringComparison.Ordinal) && !options.Overwrite)
            throw Error("ExportFileExists", EngineErrorKind.ResourceExists, full, $"'{full}' is the model's own source file. Use -Force to overwrite it.");

        var proto = model.Proto.Clone();
        SetHistory(proto, model.History);
        bool forced = !options.ExternalData && proto.CalculateSize() >= options.SingleFileLimit;
        bool external = options.ExternalData || forced;

        string dataName = Path.GetFileName(full) + ".data";
        string dataPath = Path.Combine(dir, dataName);
        string tempModel = TempPath(full), tempData = TempPath(dataPath);
        try
        {
            if (external)
            {
                using (var data = new FileStream(tempData, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
                {
                    foreach (var tensor in proto.Graph.Initializer)
                    {
                        cancel.ThrowIfCancellationRequested();
                        if (TensorData.StorageBytes(tensor) < options.ExternalThreshold || tensor.DataType == (int)TensorProto.Types.DataType.String) continue;
                        MoveToExternal(tensor, data, dataName);
                    }
                    data.Flush(flushToDisk: true);
                }
            }
            using (var file = new FileStream(tempModel, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            using (var guarded = new CancellableStream(file, cancel))
            {
                using (var coded = new CodedOutputStream(guarded, 1 << 20)) proto.WriteTo(coded);
                file.Flush(flushToDisk: true);
            }
            if (external) File.Move(tempData, dataPath, overwrite: true);
            File.Move(tempModel, full, overwrite: true);
            return new SaveResult(full, external ? dataPath : null, forced);
        }
        catch (Exception e)
        {
            TryDelete(tempModel);
            TryDelete(tempData);
            if (e is IOException or UnauthorizedAccessException)
                throw Error("ExportWriteFailed", EngineErrorKind.WriteError, full, $"Could not write '{full}': {e.Message}", e);
            throw;
        }
    }

    /// <summary>Serialized bytes of a model with its history, for ONNX Runtime sessions (single-file models only).</summary>
    public static byte[] ToBytes(OnnxModel model)
    {
        if (model.SerializedSize >= SingleFileLimit)
            throw new EngineException("ModelTooLargeForMemorySession", EngineErrorKind.LimitsExceeded,
                $"Model '{model.Name}' is {model.SerializedSize:N0} bytes, too large for an in-memory session; export it with -ExternalData and load the file.");
        return model.Proto.ToByteArray();
    }

    public static void SetHistory(ModelProto proto, IReadOnlyList<ModelStage> history)
    {
        var existing = proto.MetadataProps.FirstOrDefault(p => p.Key == ModelStage.MetadataKey);
        if (history.Count == 0)
        {
            if (existing is not null) proto.MetadataProps.Remove(existing);
            return;
        }
        if (existing is null) proto.MetadataProps.Add(existing = new StringStringEntryProto { Key = ModelStage.MetadataKey });
        existing.Value = ModelStage.Serialize(history);
    }

    /// <summary>Every tensor a graph holds: initializers, Constant values and attribute tensors, subgraphs included.</summary>
    public static IEnumerable<TensorProto> AllTensors(GraphProto graph)
    {
        foreach (var t in graph.Initializer) yield return t;
        foreach (var s in graph.SparseInitializer)
        {
            if (s.Values is not null) yield return s.Values;
            if (s.Indices is not null) yield return s.Indices;
        }
        foreach (var node in graph.Node)
            foreach (var a in node.Attribute)
            {
                if (a.T is not null) yield return a.T;
                foreach (var t in a.Tensors) yield return t;
                if (a.G is not null) foreach (var t in AllTensors(a.G)) yield return t;
                foreach (var g in a.Graphs) foreach (var t in AllTensors(g)) yield return t;
            }
    }

    static void CheckEmbedded(TensorProto tensor, string file)
    {
        long count;
        try { count = TensorData.ElementCount(tensor); }
        catch (OverflowException e)
        {
            throw Error("TensorShapeInvalid", EngineErrorKind.InvalidData, file, $"Tensor '{tensor.Name}' in '{file}' declares a shape whose size overflows.", e);
        }
        if (!tensor.HasRawData) return;
        long expected = ElementTypes.ByteCount(tensor.DataType, count);
        if (expected >= 0 && expected != tensor.RawData.Length)
            throw Error("TensorDataSizeMismatch", EngineErrorKind.InvalidData, file,
                $"Tensor '{tensor.Name}' in '{file}' holds {tensor.RawData.Length:N0} bytes but its shape [{string.Join(",", tensor.Dims)}] needs {expected:N0}.");
    }

    static void MoveToExternal(TensorProto tensor, FileStream data, string location)
    {
        long offset = (data.Position + ExternalAlignment - 1) / ExternalAlignment * ExternalAlignment;
        if (offset > data.Position) data.Write(new byte[offset - data.Position]);
        var bytes = TensorData.RawBytes(tensor);
        data.Write(bytes.Span);
        tensor.ClearRawData();
        tensor.FloatData.Clear(); tensor.Int32Data.Clear(); tensor.Int64Data.Clear(); tensor.DoubleData.Clear(); tensor.Uint64Data.Clear();
        tensor.ExternalData.Clear();
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = bytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        tensor.DataLocation = TensorProto.Types.DataLocation.External;
    }

    static string TempPath(string target) =>
        Path.Combine(Path.GetDirectoryName(target)!, "." + Path.GetFileName(target) + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp");

    static void TryDelete(string path)
    {
        try { if (File.Exists(path)) File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    internal static EngineException Error(string id, EngineErrorKind kind, string target, string message, Exception? inner = null) =>
        new(id, kind, message, inner) { Target = target };

    /// <summary>Checks a cancellation token on every write so Ctrl+C stops a long save promptly.</summary>
    sealed class CancellableStream(Stream inner, CancellationToken cancel) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) { cancel.ThrowIfCancellationRequested(); inner.Write(buffer, offset, count); }
        public override void Write(ReadOnlySpan<byte> buffer) { cancel.ThrowIfCancellationRequested(); inner.Write(buffer); }
    }
}
