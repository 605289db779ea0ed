using System.Globalization;
using Google.Protobuf;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// Reads tensors stored outside the model file. Locations are relative to the model's folder and may not
/// leave it (no "..", no absolute paths, no links); declared offsets and lengths must fit the data file
/// and the tensor's shape before any memory is allocated.
/// </summary>
sealed class ExternalDataReader(string modelDir, string modelPath) : IDisposable
{
    readonly string root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelDir)) + Path.DirectorySeparatorChar;
    readonly Dictionary<string, FileStream> open = new(StringComparer.Ordinal);

    public void Resolve(TensorProto tensor)
    {
        string? location = null; long offset = 0; long length = -1;
        foreach (var kv in tensor.ExternalData)
        {
            switch (kv.Key)
            {
                case "location": location = kv.Value; break;
                case "offset": offset = ParseLong(tensor, kv); break;
                case "length": length = ParseLong(tensor, kv); break;
            }
        }
        if (string.IsNullOrEmpty(location))
            throw Fail("ExternalDataInvalid", EngineErrorKind.InvalidData, $"Tensor '{tensor.Name}' is marked external but names no location.");

        string file = CheckedPath(tensor, location);
        if (!open.TryGetValue(file, out var stream))
        {
            if (!File.Exists(file))
                throw Fail("ExternalDataNotFound", EngineErrorKind.ObjectNotFound, $"External data file '{file}' for tensor '{tensor.Name}' does not exist.");
            open[file] = stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        }

        long count;
        try { count = TensorData.ElementCount(tensor); }
        catch (OverflowException) { throw Fail("TensorShapeInvalid", EngineErrorKind.InvalidData, $"Tensor '{tensor.Name}' declares a shape whose size overflows."); }
        long expected = ElementTypes.ByteCount(tensor.DataType, count);
        if (length < 0) length = expected >= 0 ? expected : stream.Length - offset;
        if (offset < 0 || length < 0 || offset > stream.Length || length > stream.Length - offset)
            throw Fail("ExternalDataOutOfRange", EngineErrorKind.InvalidData,
                $"Tensor '{tensor.Name}' claims bytes {offset:N0}..{offset + length:N0} of '{file}', which holds only {stream.Length:N0} bytes.");
        if (expected >= 0 && expected != length)
            throw Fail("TensorDataSizeMismatch", EngineErrorKind.InvalidData,
                $"Tensor '{tensor.Name}' stores {length:N0} external bytes but its shape [{string.Join(",", tensor.Dims)}] needs {expected:N0}.");
        if (length > Array.MaxLength)
            throw Fail("TensorTooLarge", EngineErrorKind.LimitsExceeded, $"Tensor '{tensor.Name}' is {length:N0} bytes; single tensors over 2 GB are not supported.");

        var bytes = new byte[length];
        stream.Position = offset;
        stream.ReadExactly(bytes);
        tensor.RawData = UnsafeByteOperations.UnsafeWrap(bytes);
        tensor.ExternalData.Clear();
        tensor.ClearDataLocation();
    }

    string CheckedPath(TensorProto tensor, string location)
    {
        if (Path.IsPathRooted(location) || location.Contains(':') || location.Split('/', '\\').Contains(".."))
            throw Fail("ExternalDataPathEscapes", EngineErrorKind.SecurityError,
                $"Tensor '{tensor.Name}' points at external data '{location}', outside the model's folder; refused.");
        string full = Path.GetFullPath(Path.Combine(root, location));
        if (!full.StartsWith(root, StringComparison.Ordinal))
            throw Fail("ExternalDataPathEscapes", EngineErrorKind.SecurityError,
                $"Tensor '{tensor.Name}' points at external data '{location}', outside the model's folder; refused.");
        // A link inside the folder could still lead anywhere: refuse links on the whole way down.
        for (string? p = full; p is not null && p.Length >= root.Length; p = Path.GetDirectoryName(p))
        {
            FileSystemInfo info = Directory.Exists(p) ? new DirectoryInfo(p) : new FileInfo(p);
            if (info.Exists && info.LinkTarget is not null)
                throw Fail("ExternalDataPathEscapes", EngineErrorKind.SecurityError,
                    $"External data '{location}' of tensor '{tensor.Name}' goes through a link ('{p}'); refused.");
        }
        return full;
    }

    long ParseLong(TensorProto tensor, StringStringEntryProto kv) =>
        long.TryParse(kv.Value, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) && v >= 0
            ? v
            : throw Fail("ExternalDataInvalid", EngineErrorKind.InvalidData, $"Tensor '{tensor.Name}' has an invalid external-data {kv.Key} '{kv.Value}'.");

    EngineException Fail(string id, EngineErrorKind kind, string message) =>
        ModelIO.Error(id, kind, modelPath, $"{message} (model '{modelPath}')");

    public void Dispose()
    {
        foreach (var s in open.Values) s.Dispose();
    }
}
