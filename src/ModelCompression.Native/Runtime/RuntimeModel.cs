using Microsoft.ML.OnnxRuntime;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Runtime;

/// <summary>
/// Opens ONNX Runtime sessions over models of any size: the file a model was loaded from when it is unchanged, the
/// serialized bytes of a small model, and otherwise a temporary file with external data (data files hard-linked
/// beside it where the file system allows, so a 4 GB model is not copied). Never one buffer for a large model.
/// </summary>
public static class RuntimeModel
{
    /// <summary>Models below this size go to ONNX Runtime as bytes; larger ones by file.</summary>
    public static long InMemoryLimit { get; set; } = 256L << 20;

    /// <summary>A session over <paramref name="model"/> as it is.</summary>
    public static InferenceSession Open(OnnxModel model, SessionOptions options) => Open(model.Proto, model.Name, options, model.LoadedFrom);

    /// <summary>A session over <paramref name="model"/> that the caller gives up on when <paramref name="cancel"/> is cancelled first.</summary>
    public static InferenceSession Open(OnnxModel model, SessionSettings settings, CancellationToken cancel) =>
        Open(model.Proto, model.Name, settings.Create, cancel, model.LoadedFrom);

    /// <summary>
    /// A session over <paramref name="proto"/> that the caller gives up on when <paramref name="cancel"/> is cancelled
    /// first: ONNX Runtime cannot stop loading (and optimizing) a model, seconds or minutes for a large one, so the load
    /// goes on in the background with options of its own (<paramref name="options"/> makes them) and its session is
    /// disposed when it is done, while Ctrl+C returns at once.
    /// </summary>
    public static InferenceSession Open(ModelProto proto, string name, Func<SessionOptions> options, CancellationToken cancel, FileIdentity? loadedFrom = null)
    {
        cancel.ThrowIfCancellationRequested();
        InferenceSession OpenWithOptions()
        {
            using var made = options();
            return Open(proto, name, made, loadedFrom);
        }
        if (!cancel.CanBeCanceled) return OpenWithOptions();
        var opening = Task.Run(OpenWithOptions, CancellationToken.None);
        try { Task.WaitAny([opening], cancel); }
        catch (OperationCanceledException)
        {
            opening.ContinueWith(t => { if (t.IsCompletedSuccessfully) t.Result.Dispose(); }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
            throw;
        }
        return opening.GetAwaiter().GetResult();
    }

    /// <summary>A session over <paramref name="proto"/> (a model, or a copy a caller edited: extra outputs, say).</summary>
    public static InferenceSession Open(ModelProto proto, string name, SessionOptions options, FileIdentity? loadedFrom = null)
    {
        ContribChecks.Check(proto, name);
        var files = TensorFile.ReferencedBy(proto);
        foreach (var file in files) file.CheckUnchanged();
        if (loadedFrom is not null && loadedFrom.IsUnchanged()) return new InferenceSession(loadedFrom.Path, options);
        if (ModelIO.SerializedSize(proto) < InMemoryLimit)
            return new InferenceSession(ModelIO.ToBytes(proto, name), options);

        string dir = ScratchFolder.CreateSubdirectory("session-");
        try
        {
            string path = Path.Combine(dir, "model.onnx");
            ModelIO.Save(new OnnxModel(proto, null, []), path, new SaveOptions { ExternalData = true, LinkExternalFiles = true, PrivateFolder = true });
            var session = new TemporaryFileSession(path, options, dir);
            // ONNX Runtime has read or mapped what it needs: on Unix the names can go now; Windows waits for Dispose.
            TryDelete(dir);
            return session;
        }
        catch
        {
            TryDelete(dir);
            throw;
        }
    }

    static void TryDelete(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    sealed class TemporaryFileSession(string path, SessionOptions options, string dir) : InferenceSession(path, options)
    {
        protected override void Dispose(bool disposing)
        {
            base.Dispose(disposing);
            TryDelete(dir);
        }
    }
}
