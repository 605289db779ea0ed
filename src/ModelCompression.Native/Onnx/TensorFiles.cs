using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using Microsoft.Win32.SafeHandles;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// A file that holds tensor bytes outside a model: the external data file of a loaded model, or a scratch file a
/// stage wrote large results to. A tensor in memory points at one by an id in its external_data entries
/// (<see cref="ExternalTensor"/>), so it survives cloning and stays readable from anywhere; the bytes are read
/// with positional reads when a stage needs them, never held or mapped.
/// </summary>
public abstract class TensorFile
{
    /// <summary>The external_data key that names the file a tensor's bytes are in, while the model is in memory.</summary>
    internal const string IdKey = "model_compression.file";

    static readonly ConcurrentDictionary<string, WeakReference<TensorFile>> Registry = new(StringComparer.Ordinal);
    static long nextId;

    protected TensorFile(string path)
    {
        Path = path;
        long id = Interlocked.Increment(ref nextId);
        Id = id.ToString(CultureInfo.InvariantCulture);
        Registry[Id] = new WeakReference<TensorFile>(this);
        if (id % 256 == 0) Sweep();
    }

    /// <summary>Process-unique id, the value of <see cref="IdKey"/>.</summary>
    public string Id { get; }
    public string Path { get; }

    /// <summary>Reads <paramref name="destination"/>.Length bytes at <paramref name="offset"/>.</summary>
    public void Read(long offset, Span<byte> destination)
    {
        var handle = Acquire();
        try
        {
            CheckUnchanged(handle);
            ReadExactly(handle, offset, destination);
            CheckUnchanged(handle);   // and not during the read either
        }
        finally { Release(handle); }
    }

    /// <summary>
    /// Copies <paramref name="length"/> bytes at <paramref name="offset"/> to the end of <paramref name="output"/>: inside
    /// the kernel where the platform can, else through a small buffer. The bytes never become a managed array.
    /// </summary>
    public void CopyTo(long offset, long length, FileStream output, CancellationToken cancel)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent((int)Math.Clamp(length, 1, 1 << 20));
        var handle = Acquire();
        try
        {
            CheckUnchanged(handle);
            output.Flush();
            long start = output.Position;
            long done = NativeFiles.TryKernelCopy(handle, offset, output.SafeFileHandle, start, length, cancel);
            output.Position = start + done;
            while (done < length)
            {
                cancel.ThrowIfCancellationRequested();
                int n = (int)Math.Min(buffer.Length, length - done);
                ReadExactly(handle, offset + done, buffer.AsSpan(0, n));
                output.Write(buffer, 0, n);
                done += n;
            }
            CheckUnchanged(handle);
        }
        finally
        {
            Release(handle);
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    void ReadExactly(SafeFileHandle handle, long offset, Span<byte> destination)
    {
        for (int done = 0; done < destination.Length;)
        {
            int n = RandomAccess.Read(handle, destination[done..], offset + done);
            if (n <= 0) throw Changed($"it ended {offset + done:N0} bytes in");
            done += n;
        }
    }

    /// <summary>Throws <c>ExternalDataChanged</c> when the file is no longer the one the model was loaded with.</summary>
    public virtual void CheckUnchanged() { }

    protected abstract SafeFileHandle Acquire();
    protected virtual void Release(SafeFileHandle handle) { }
    protected virtual void CheckUnchanged(SafeFileHandle handle) { }

    protected EngineException Changed(string how) =>
        new("ExternalDataChanged", EngineErrorKind.InvalidData,
            $"The external data file '{Path}' changed after the model was loaded ({how}); load the model again.") { Target = Path };

    internal static TensorFile? Find(string id) =>
        Registry.TryGetValue(id, out var weak) && weak.TryGetTarget(out var file) ? file : null;

    /// <summary>The files the tensors of <paramref name="proto"/> point at (a model holds them so they stay readable).</summary>
    internal static IReadOnlyList<TensorFile> ReferencedBy(ModelProto proto)
    {
        if (proto.Graph is null) return [];
        HashSet<TensorFile>? files = null;
        foreach (var t in ModelIO.AllTensors(proto.Graph))
            if (ExternalTensor.TryGet(t, out var e)) (files ??= []).Add(e.File);
        return files is null ? [] : [.. files];
    }

    /// <summary>Drops registry entries of files nobody references any more.</summary>
    static void Sweep()
    {
        foreach (var (id, weak) in Registry)
            if (!weak.TryGetTarget(out _)) Registry.TryRemove(id, out _);
    }
}

/// <summary>
/// The external data file of a model loaded from disk. Not held open (it must stay replaceable), and checked on every
/// read against the length and write time seen at load, so a file changed underneath is an error, never wrong weights.
/// </summary>
public sealed class ModelDataFile : TensorFile
{
    ModelDataFile(FileIdentity identity) : base(identity.Path) => Identity = identity;

    /// <summary>The file as it was at load.</summary>
    public FileIdentity Identity { get; }
    public long Length => Identity.Length;
    DateTime LastWriteUtc => Identity.LastWriteUtc;

    /// <summary>
    /// The data file <paramref name="path"/> as it is now; null when no such file exists. One object per version of a
    /// file, kept for the life of the process (it holds no handle, only the identity): a proto whose model object was
    /// collected still finds its weights, and loading the same file again adds nothing.
    /// </summary>
    internal static ModelDataFile? Open(string path) => File.Exists(path) ? Known.GetOrAdd(FileIdentity.Of(path), id => new ModelDataFile(id)) : null;

    static readonly ConcurrentDictionary<FileIdentity, ModelDataFile> Known = new();

    public override void CheckUnchanged()
    {
        if (!Identity.IsUnchanged())
            throw Changed(File.Exists(Path) ? $"{Length:N0} bytes written {LastWriteUtc:u} at load, now {new FileInfo(Path).Length:N0} bytes written {File.GetLastWriteTimeUtc(Path):u}" : "it is gone");
    }

    protected override void CheckUnchanged(SafeFileHandle handle)
    {
        long length = RandomAccess.GetLength(handle);
        DateTime written = File.GetLastWriteTimeUtc(handle);
        if (length != Length || written != LastWriteUtc)
            throw Changed($"{Length:N0} bytes written {LastWriteUtc:u} then, {length:N0} bytes written {written:u} now");
    }

    protected override SafeFileHandle Acquire()
    {
        // Checked before opening too: a FIFO put in the file's place would block the open.
        CheckUnchanged();
        try { return File.OpenHandle(Path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new EngineException("ExternalDataChanged", EngineErrorKind.InvalidData,
                $"The external data file '{Path}' cannot be read any more: {e.Message}", e) { Target = Path };
        }
    }

    protected override void Release(SafeFileHandle handle) => handle.Dispose();
}

/// <summary>
/// A scratch file in the temporary folder that a stage writes large results to, so a model larger than memory can be
/// transformed one tensor at a time. Deleted when no model points at it any more (and at process exit).
/// </summary>
public sealed class ScratchFile : TensorFile
{
    const int Alignment = 64;
    readonly SafeFileHandle handle;
    readonly object gate = new();
    long end;

    ScratchFile(string path, SafeFileHandle handle, long length) : base(path)
    {
        this.handle = handle;
        end = length;
    }

    public static ScratchFile Create()
    {
        string path = System.IO.Path.Combine(ScratchFolder.Path, $"{Guid.NewGuid():N}.data");
        try
        {
            var handle = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read | FileShare.Delete, FileOptions.DeleteOnClose);
            return new ScratchFile(path, handle, 0);
        }
        catch (IOException e) { throw WriteFailed(path, e); }
    }

    /// <summary>Takes over a file (ONNX Runtime's output, say): moved into the scratch folder and deleted with this object.</summary>
    public static ScratchFile Adopt(string path)
    {
        string target = System.IO.Path.Combine(ScratchFolder.Path, $"{Guid.NewGuid():N}.data");
        File.Move(path, target);
        var handle = File.OpenHandle(target, FileMode.Open, FileAccess.ReadWrite, FileShare.Read | FileShare.Delete, FileOptions.DeleteOnClose);
        return new ScratchFile(target, handle, RandomAccess.GetLength(handle));
    }

    /// <summary>Appends <paramref name="bytes"/> (thread-safe) and returns where they start.</summary>
    public long Append(ReadOnlySpan<byte> bytes)
    {
        long offset;
        lock (gate)
        {
            offset = (end + Alignment - 1) / Alignment * Alignment;
            end = offset + bytes.Length;
        }
        try { RandomAccess.Write(handle, bytes, offset); }
        catch (IOException e) { throw WriteFailed(Path, e); }
        return offset;
    }

    static EngineException WriteFailed(string path, IOException e) =>
        new("ScratchWriteFailed", EngineErrorKind.WriteError,
            $"Could not write intermediate tensors to '{path}' (the temporary folder; set TMPDIR to a folder with more room): {e.Message}", e) { Target = path };

    protected override SafeFileHandle Acquire() => handle;

    /// <summary>Deletes the file now (a stage that failed: nothing points at it).</summary>
    internal void Discard() => handle.Dispose();
}

/// <summary>Where an external tensor's bytes are: a file, an offset and a length.</summary>
public readonly record struct ExternalTensor(TensorFile File, long Offset, long Length)
{
    /// <summary>True when <paramref name="t"/> is stored in a <see cref="TensorFile"/> (a model in memory never has other external tensors).</summary>
    public static bool TryGet(TensorProto t, out ExternalTensor external)
    {
        external = default;
        if (t.DataLocation != TensorProto.Types.DataLocation.External) return false;
        string? id = null; long offset = 0, length = -1;
        foreach (var kv in t.ExternalData)
        {
            switch (kv.Key)
            {
                case TensorFile.IdKey: id = kv.Value; break;
                case "offset": offset = long.Parse(kv.Value, CultureInfo.InvariantCulture); break;
                case "length": length = long.Parse(kv.Value, CultureInfo.InvariantCulture); break;
            }
        }
        if (id is null)
            throw new EngineException("ExternalDataUnresolved", EngineErrorKind.InvalidData,
                $"Tensor '{t.Name}' is marked external but was not loaded through ModelIO.Load; its bytes cannot be found.");
        var file = TensorFile.Find(id) ?? throw new EngineException("ExternalDataReleased", EngineErrorKind.InvalidOperation,
            $"Tensor '{t.Name}' points at a data file that was released with the model that held it.");
        external = new ExternalTensor(file, offset, length);
        return true;
    }

    /// <summary>True when <paramref name="t"/>'s bytes are in a <see cref="TensorFile"/> of this process.</summary>
    public static bool IsBound(TensorProto t) =>
        t.DataLocation == TensorProto.Types.DataLocation.External && t.ExternalData.Any(kv => kv.Key == TensorFile.IdKey);

    /// <summary>Points <paramref name="t"/> at <paramref name="length"/> bytes of <paramref name="file"/> (its values fields are cleared).</summary>
    public static void Point(TensorProto t, TensorFile file, long offset, long length, string? location = null)
    {
        Locate(t, location ?? System.IO.Path.GetFileName(file.Path), offset, length);
        t.ExternalData.Add(new StringStringEntryProto { Key = TensorFile.IdKey, Value = file.Id });
    }

    /// <summary>Points <paramref name="t"/> at <paramref name="length"/> bytes of the data file <paramref name="location"/> beside a model file, in the form ONNX files use (its values fields are cleared).</summary>
    internal static void Locate(TensorProto t, string location, long offset, long length)
    {
        t.ClearRawData();
        t.FloatData.Clear(); t.Int32Data.Clear(); t.Int64Data.Clear(); t.DoubleData.Clear(); t.Uint64Data.Clear();
        t.ExternalData.Clear();
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
        t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.ToString(CultureInfo.InvariantCulture) });
        t.DataLocation = TensorProto.Types.DataLocation.External;
    }

    public byte[] ReadAll()
    {
        var bytes = GC.AllocateUninitializedArray<byte>(checked((int)Length));
        File.Read(Offset, bytes);
        return bytes;
    }
}

/// <summary>
/// While a stage of a large model runs, tensors it creates above a size go to a scratch file instead of memory, so
/// the stage holds one tensor at a time. Entered by <see cref="OnnxModel.Derive"/>; flows into parallel loops.
/// </summary>
public static class TensorSpill
{
    static readonly AsyncLocal<Target?> current = new();

    /// <summary>Tensors at least this large are spilled while a scope is active.</summary>
    public const int MinimumBytes = 64 * 1024;

    public static bool Active => current.Value is not null;

    /// <summary>
    /// Runs <paramref name="work"/> with large new tensors going to a scratch file, given back in
    /// <paramref name="spilled"/> for the caller to hold until a model does (only weak references reach it otherwise);
    /// when the work fails (or is cancelled) the file is deleted at once, since nothing can point at it.
    /// </summary>
    public static T Run<T>(Func<T> work, out TensorFile? spilled)
    {
        var previous = current.Value;
        var target = current.Value = new Target();
        try
        {
            var result = work();
            spilled = target.Created;
            return result;
        }
        catch
        {
            target.Discard();
            throw;
        }
        finally { current.Value = previous; }
    }

    /// <summary>Writes <paramref name="bytes"/> to the scope's scratch file and points <paramref name="t"/> at them; false when no scope is active or the tensor is small.</summary>
    internal static bool TrySpill(TensorProto t, ReadOnlySpan<byte> bytes)
    {
        var target = current.Value;
        if (target is null || bytes.Length < MinimumBytes) return false;
        var file = target.File;
        long offset = file.Append(bytes);
        ExternalTensor.Point(t, file, offset, bytes.Length);
        return true;
    }

    /// <summary>The scope's scratch file, made on the first spill.</summary>
    sealed class Target
    {
        readonly Lazy<ScratchFile> file = new(ScratchFile.Create, LazyThreadSafetyMode.ExecutionAndPublication);
        public ScratchFile File => file.Value;
        public ScratchFile? Created => file.IsValueCreated ? file.Value : null;
        public void Discard() => Created?.Discard();
    }
}
