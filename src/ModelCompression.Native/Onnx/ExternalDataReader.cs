using System.Globalization;
using Google.Protobuf;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// Binds tensors stored outside the model file to their data files without reading them. Locations are relative to
/// the model's folder and may not leave it (no "..", no absolute paths, no links); declared offsets and lengths must
/// fit the data file and the tensor's shape. The bytes are read later, when a stage needs them (<see cref="ModelDataFile"/>).
/// </summary>
sealed class ExternalDataReader(string modelDir, string modelPath)
{
    readonly string root = Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelDir)) + Path.DirectorySeparatorChar;
    readonly Dictionary<string, ModelDataFile> files = new(StringComparer.Ordinal);

    public void Bind(TensorProto tensor)
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

        string path = CheckedPath(tensor, location);
        if (!files.TryGetValue(path, out var file))
        {
            if (Directory.Exists(path))
                throw Fail("ExternalDataNotFound", EngineErrorKind.ObjectNotFound, $"External data '{path}' for tensor '{tensor.Name}' is a folder, not a file.");
            files[path] = file = ModelDataFile.Open(path)
                ?? throw Fail("ExternalDataNotFound", EngineErrorKind.ObjectNotFound, $"External data file '{path}' for tensor '{tensor.Name}' does not exist.");
        }

        long expected = TensorData.StorageBytesOfShape(tensor, modelPath);
        if (length < 0) length = expected >= 0 ? expected : file.Length - offset;
        // The file's size is checked before it is ever opened: devices, FIFOs and sockets report no size and fail here.
        if (offset > file.Length || length > file.Length - offset)
            throw Fail("ExternalDataOutOfRange", EngineErrorKind.InvalidData,
                $"Tensor '{tensor.Name}' claims bytes {offset:N0}..{offset + length:N0} of '{path}', which holds only {file.Length:N0} bytes (or is not a regular file).");
        if (expected >= 0 && expected != length)
            throw Fail("TensorDataSizeMismatch", EngineErrorKind.InvalidData,
                $"Tensor '{tensor.Name}' stores {length:N0} external bytes but its shape [{string.Join(",", tensor.Dims)}] needs {expected:N0}.");
        if (length > Array.MaxLength)
            throw Fail("TensorTooLarge", EngineErrorKind.LimitsExceeded, $"Tensor '{tensor.Name}' is {length:N0} bytes; single tensors over 2 GB are not supported.");
        ExternalTensor.Point(tensor, file, offset, length, location);
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
}
