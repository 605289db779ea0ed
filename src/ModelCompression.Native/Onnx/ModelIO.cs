using System.IO.MemoryMappedFiles;
using Google.Protobuf;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Onnx;

/// <summary>Options for <see cref="ModelIO.Save"/>.</summary>
public sealed record SaveOptions
{
    /// <summary>
    /// Store tensors of at least <see cref="ExternalThreshold"/> bytes in a "&lt;file&gt;.data" file beside the model.
    /// Null: as the model came (external data when any of its tensors is in a data file), and always when one file
    /// would pass protobuf's 2 GB; false: one file unless it would pass 2 GB.
    /// </summary>
    public bool? ExternalData { get; init; }
    public int ExternalThreshold { get; init; } = 1024;
    public bool Overwrite { get; init; }
    /// <summary>Models whose single-file form would reach this size are written with external data regardless.</summary>
    public long SingleFileLimit { get; init; } = ModelIO.SingleFileLimit;
    /// <summary>
    /// Tensors still in a data file are hard-linked beside the written model instead of copied, where the file system
    /// allows: for the short-lived files ONNX Runtime loads (<see cref="RuntimeModel"/>), never for exports.
    /// </summary>
    internal bool LinkExternalFiles { get; init; }
    /// <summary>
    /// The target's folder belongs to this save alone (a GenAI export's staging folder, a session's folder): nothing
    /// stale to remove there, nobody to take turns with (and its owner may hold the folder's lock already).
    /// </summary>
    internal bool PrivateFolder { get; init; }
}

/// <summary>What <see cref="ModelIO.Save"/> wrote.</summary>
public sealed record SaveResult(string ModelPath, string? DataPath, bool ExternalDataForced);

/// <summary>
/// Loads and saves ONNX files. Loading parses the graph and binds tensors stored in external data to their files
/// without reading them (refusing paths that leave the model's folder and sizes that do not fit the file); saving
/// streams tensors into the new data file and is atomic (temporary files, then rename).
/// </summary>
public static class ModelIO
{
    /// <summary>Protobuf cannot serialize a message of 2 GiB or more; stay well below it.</summary>
    public const long SingleFileLimit = 2_000_000_000;
    const int ExternalAlignment = 4096;

    public static OnnxModel Load(string path, CancellationToken cancel = default)
    {
        // Checks and parsing look at the file a link finally leads to; external data is found beside the path as given.
        string full = Path.GetFullPath(path), file = FinalTarget(full);
        if (GenAiFolder.IsFolder(file)) return GenAiFolder.Load(full, cancel);
        if (Directory.Exists(file))
            throw Error("ModelPathIsDirectory", EngineErrorKind.InvalidArgument, full,
                $"'{full}' is a folder, not an ONNX model file; to load the models in it, give '{Path.Combine(full, "*.onnx")}'.");
        if (!File.Exists(file))
            throw Error("ModelFileNotFound", EngineErrorKind.ObjectNotFound, full, $"Model file '{full}' does not exist.");
        // Devices, FIFOs and sockets report no size: refused here, before anything opens them.
        if (new FileInfo(file).Length == 0)
            throw Error("ModelFileEmpty", EngineErrorKind.InvalidData, full, $"Model file '{full}' is empty (or not a regular file).");

        ModelProto proto;
        try
        {
            proto = ParseMapped(file);
        }
        catch (InvalidProtocolBufferException e)
        {
            bool truncated = e.Message.Contains("truncated", StringComparison.OrdinalIgnoreCase);
            throw Error(truncated ? "ModelFileTruncated" : "ModelFileNotOnnx", EngineErrorKind.InvalidData, full,
                truncated ? $"Model file '{full}' is truncated: {e.Message}" : $"'{full}' is not an ONNX model (it is not a valid ModelProto: {e.Message})", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Error("ModelFileUnreadable", EngineErrorKind.ReadError, full, $"Model file '{full}' cannot be read: {e.Message}", e);
        }
        if (!proto.HasIrVersion || proto.Graph is null)
            throw Error("ModelFileNotOnnx", EngineErrorKind.InvalidData, full, $"'{full}' is not an ONNX model (no IR version or no graph).");
        if (proto.IrVersion >= 3 && proto.OpsetImport.Count == 0)
            throw Error("ModelFileTruncated", EngineErrorKind.InvalidData, full, $"Model file '{full}' is incomplete: it declares no operator set (a truncated file?).");

        cancel.ThrowIfCancellationRequested();
        CheckUniqueNames(proto.Graph, full);
        var external = new ExternalDataReader(Path.GetDirectoryName(full)!, full);
        foreach (var tensor in AllTensors(proto.Graph))
        {
            cancel.ThrowIfCancellationRequested();
            if (tensor.DataLocation == TensorProto.Types.DataLocation.External) external.Bind(tensor);
            else TensorData.Validate(tensor, full);
        }

        IReadOnlyList<ModelStage> history = [];
        var warnings = new List<string>();
        var entry = proto.MetadataProps.FirstOrDefault(p => p.Key == ModelStage.MetadataKey);
        if (entry is not null && !ModelStage.TryDeserialize(entry.Value, out history))
            warnings.Add($"The compression history stored in '{full}' is damaged and was dropped; the model itself loaded normally.");
        return new OnnxModel(proto, full, history) { LoadedFrom = FileIdentity.Of(full), LoadWarnings = warnings };
    }

    /// <summary>
    /// Loads a model this process wrote to a temporary folder (ONNX Runtime's output, say) and takes over its data files:
    /// they move to the scratch folder and live as long as the model does, so the folder can go.
    /// </summary>
    internal static OnnxModel LoadAndAdopt(string path, CancellationToken cancel = default)
    {
        var loaded = Load(path, cancel);
        if (loaded.Files.Count == 0) return loaded;
        var adopted = loaded.Files.ToDictionary(f => f, f => (TensorFile)ScratchFile.Adopt(f.Path));
        foreach (var t in AllTensors(loaded.Proto.Graph))
            if (ExternalTensor.TryGet(t, out var e)) ExternalTensor.Point(t, adopted[e.File], e.Offset, e.Length);
        return new OnnxModel(loaded.Proto, loaded.SourcePath, loaded.History);
    }

    /// <summary>The file a path finally leads to, following links (a link's own size and type say nothing of its target).</summary>
    static string FinalTarget(string path)
    {
        var info = new FileInfo(path);
        if (info.LinkTarget is null) return path;
        FileSystemInfo? target;
        try { target = info.ResolveLinkTarget(returnFinalTarget: true); }
        catch (IOException e)
        {
            throw Error("ModelFileNotFound", EngineErrorKind.ObjectNotFound, path, $"Model file '{path}' is a link that leads nowhere: {e.Message}", e);
        }
        if (target is null) return path;
        if (!target.Exists && !Directory.Exists(target.FullName))
            throw Error("ModelFileNotFound", EngineErrorKind.ObjectNotFound, path, $"Model file '{path}' is a link to '{target.FullName}', which does not exist.");
        return target.FullName;
    }

    /// <summary>Names an ONNX graph must keep unique; a model that repeats one is refused before anything indexes it.</summary>
    static void CheckUniqueNames(GraphProto graph, string file)
    {
        var initializers = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in graph.Initializer)
            if (!initializers.Add(t.Name))
                throw Error("ModelDuplicateName", EngineErrorKind.InvalidData, file, $"'{file}' defines the initializer '{t.Name}' more than once.");
        var produced = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
            foreach (var o in node.Output)
                if (o.Length > 0 && (!produced.Add(o) || initializers.Contains(o)))
                    throw Error("ModelDuplicateName", EngineErrorKind.InvalidData, file, $"'{file}' produces the value '{o}' more than once (node '{node.Name}').");
    }

    /// <summary>
    /// Parses the file through a read-only memory map: the parser copies each embedded tensor once, straight from the
    /// page cache into the model. The map is released before returning; the model owns ordinary managed memory.
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
    /// Tensors still in a data file are copied into the new one in chunks, never as whole arrays. Nothing is left
    /// behind on failure or cancellation, and an existing file is replaced only when asked.
    /// </summary>
    public static SaveResult Save(OnnxModel model, string path, SaveOptions? options = null, CancellationToken cancel = default)
    {
        options ??= new SaveOptions();
        string full = Path.GetFullPath(path);
        string dir = Path.GetDirectoryName(full)!;
        CheckTarget(model, full, options.Overwrite);
        foreach (var file in model.Files) file.CheckUnchanged();

        var proto = model.Proto.Clone();
        SetHistory(proto, model.History);
        bool external = options.ExternalData ?? AllTensors(proto.Graph).Any(ExternalTensor.IsBound);
        bool forced = !external && SerializedSize(proto) >= options.SingleFileLimit;
        external |= forced;

        string dataName = Path.GetFileName(full) + ".data";
        string dataPath = Path.Combine(dir, dataName);
        // What a killed export to this folder left is removed first (never what a live process is writing).
        if (!options.PrivateFolder) TemporaryFiles.RemoveStale(dir);
        string tempModel = TemporaryFiles.Beside(full), tempData = TemporaryFiles.Beside(dataPath);
        var links = new List<(TensorFile File, string Name, string Temp)>();
        // The temporary files stay open, locked as their owner's, until they have their final names.
        FileStream? data = null, modelFile = null;
        try
        {
            if (external)
            {
                data = TemporaryFiles.Create(tempData);
                foreach (var tensor in proto.Graph.Initializer)
                {
                    cancel.ThrowIfCancellationRequested();
                    if (options.LinkExternalFiles && ExternalTensor.TryGet(tensor, out var source) && LinkedName(source.File, full, links) is { } linked)
                        ExternalTensor.Locate(tensor, linked, source.Offset, source.Length);
                    else if (TensorData.StorageBytes(tensor) >= options.ExternalThreshold && tensor.DataType != (int)TensorProto.Types.DataType.String)
                        MoveToExternal(tensor, data, dataName, cancel);
                }
                data.Flush(flushToDisk: !options.LinkExternalFiles);
            }
            // Whatever the model file holds itself is embedded: tensors still in a data file are read back in.
            foreach (var tensor in AllTensors(proto.Graph))
                if (ExternalTensor.IsBound(tensor)) Embed(tensor);
            modelFile = TemporaryFiles.Create(tempModel);
            using (var coded = new CodedOutputStream(new CancellableStream(modelFile, cancel), 1 << 20, leaveOpen: true)) proto.WriteTo(coded);
            modelFile.Flush(flushToDisk: !options.LinkExternalFiles);
            Commit(full, external ? (tempData, dataPath) : null, links.Select(l => (l.Temp, Path.Combine(dir, l.Name))), tempModel, options, cancel);
        }
        catch (Exception e)
        {
            Abandon(data);
            Abandon(modelFile);
            TryDelete(tempModel);
            TryDelete(tempData);
            foreach (var link in links) TryDelete(link.Temp);
            if (e is IOException or UnauthorizedAccessException)
                throw Error("ExportWriteFailed", EngineErrorKind.WriteError, full, $"Could not write '{full}': {e.Message}", e);
            throw;
        }
        data?.Dispose();
        modelFile?.Dispose();
        return new SaveResult(full, external ? dataPath : null, forced);
    }

    /// <summary>Refuses a target in no folder, a folder, or an existing file (the model's own source too) unless overwriting.</summary>
    static void CheckTarget(OnnxModel model, string full, bool overwrite)
    {
        string dir = Path.GetDirectoryName(full)!;
        if (!Directory.Exists(dir))
            throw Error("ExportDirectoryNotFound", EngineErrorKind.ObjectNotFound, full, $"The folder '{dir}' does not exist.");
        if (Directory.Exists(full))
            throw Error("ExportPathIsDirectory", EngineErrorKind.InvalidArgument, full, $"'{full}' is a directory; give a file path or use -Directory.");
        if (File.Exists(full) && !overwrite)
            throw Error("ExportFileExists", EngineErrorKind.ResourceExists, full, $"'{full}' already exists. Use -Force to overwrite it.");
        if (model.SourcePath is not null && string.Equals(Path.GetFullPath(model.SourcePath), full, StringComparison.Ordinal) && !overwrite)
            throw Error("ExportFileExists", EngineErrorKind.ResourceExists, full, $"'{full}' is the model's own source file. Use -Force to overwrite it.");
    }

    /// <summary>Closes a file that failed: what is still buffered cannot be written either (the disk is full, say).</summary>
    static void Abandon(FileStream? stream)
    {
        try { stream?.Dispose(); } catch (IOException) { }
    }

    /// <summary>
    /// Gives the written files their final names, the model's last, holding the folder's lock so that two exports to one
    /// path cannot interleave their renames (which would pair one model's graph with the other's data file).
    /// </summary>
    static void Commit(string model, (string Temp, string Final)? data, IEnumerable<(string Temp, string Final)> links, string tempModel, SaveOptions options, CancellationToken cancel)
    {
        using var folderLock = options.PrivateFolder ? null : NativeFiles.LockFolder(Path.GetDirectoryName(model)!, cancel);
        // Checked again under the lock: another export may have written the file since the first check.
        if (!options.Overwrite && File.Exists(model))
            throw Error("ExportFileExists", EngineErrorKind.ResourceExists, model, $"'{model}' already exists. Use -Force to overwrite it.");
        if (data is { } d) File.Move(d.Temp, d.Final, overwrite: true);
        foreach (var link in links) File.Move(link.Temp, link.Final, overwrite: true);
        File.Move(tempModel, model, overwrite: true);
    }

    /// <summary>
    /// Size of the model written into one file, in 64 bits: the structure as protobuf sizes it plus every tensor's
    /// bytes wherever they are (protobuf's own count is 32-bit and wraps for a model over 2 GB).
    /// </summary>
    public static long SerializedSize(ModelProto proto)
    {
        if (proto.Graph is null) return proto.CalculateSize();
        long payload = 0;
        foreach (var t in AllTensors(proto.Graph))
            payload += TensorData.IsExternal(t) ? TensorData.StorageBytes(t) + 8 : t.RawData.Length;
        // The structure without the bytes: a clone shares tensor bytes, so dropping them from it costs nothing.
        var shell = proto.Clone();
        foreach (var t in AllTensors(shell.Graph)) { t.ClearRawData(); t.ExternalData.Clear(); t.ClearDataLocation(); }
        return shell.CalculateSize() + payload;
    }

    /// <summary>Serialized bytes of a model with every tensor embedded (small models only: ONNX Runtime gets large ones by file, <see cref="RuntimeModel"/>).</summary>
    public static byte[] ToBytes(ModelProto model, string name)
    {
        long size = SerializedSize(model);
        if (size >= SingleFileLimit)
            throw new EngineException("ModelTooLargeForMemorySession", EngineErrorKind.LimitsExceeded,
                $"Model '{name}' is {size:N0} bytes, too large to serialize into one buffer.");
        if (!AllTensors(model.Graph).Any(TensorData.IsExternal)) return model.ToByteArray();
        var copy = model.Clone();
        foreach (var t in AllTensors(copy.Graph)) if (ExternalTensor.TryGet(t, out _)) Embed(t);
        return copy.ToByteArray();
    }

    public static byte[] ToBytes(OnnxModel model) => ToBytes(model.Proto, model.Name);

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

    static void MoveToExternal(TensorProto tensor, FileStream data, string location, CancellationToken cancel)
    {
        long offset = (data.Position + ExternalAlignment - 1) / ExternalAlignment * ExternalAlignment;
        if (offset > data.Position) data.Write(new byte[offset - data.Position]);
        long length;
        if (ExternalTensor.TryGet(tensor, out var source))
        {
            source.File.CopyTo(source.Offset, source.Length, data, cancel);
            length = source.Length;
        }
        else
        {
            var bytes = TensorData.RawBytes(tensor);
            data.Write(bytes.Span);
            length = bytes.Length;
        }
        ExternalTensor.Locate(tensor, location, offset, length);
    }

    /// <summary>Reads a tensor's external bytes into raw_data.</summary>
    static void Embed(TensorProto tensor)
    {
        var bytes = TensorData.RawBytes(tensor);
        tensor.ExternalData.Clear();
        tensor.ClearDataLocation();
        tensor.RawData = UnsafeByteOperations.UnsafeWrap(bytes);
    }

    /// <summary>
    /// The name of a hard link to <paramref name="file"/> beside the model being written (ONNX Runtime refuses data
    /// reached through symbolic links or outside the model's folder); null when the file system cannot link it.
    /// </summary>
    static string? LinkedName(TensorFile file, string modelPath, List<(TensorFile File, string Name, string Temp)> links)
    {
        foreach (var link in links) if (link.File == file) return link.Name;
        file.CheckUnchanged();
        string name = Path.GetFileName(modelPath) + $".{links.Count}.data";
        string temp = TemporaryFiles.Beside(Path.Combine(Path.GetDirectoryName(modelPath)!, name));
        if (!NativeFiles.TryHardLink(file.Path, temp)) return null;
        links.Add((file, name, temp));
        return name;
    }

    static void TryDelete(string path)
    {
        try { if (File.Exists(path)) File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    internal static EngineException Error(string id, EngineErrorKind kind, string target, string message, Exception? inner = null) =>
        new(id, kind, message, inner) { Target = target };
}
