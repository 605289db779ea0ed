using System.Text.Json;
using System.Text.Json.Nodes;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// An ONNX Runtime GenAI model folder: a <c>genai_config.json</c> that names the decoder's model file and describes it
/// (heads, key/value heads, head size, hidden size, layers, input and output names), the model with its external data,
/// and whatever else the runtime reads (tokenizer files). Loading checks the configuration against the model; writing
/// puts the compressed model under the configuration's file name, the configuration updated to what the model now is,
/// and every other file copied, into a folder that appears whole or not at all.
/// </summary>
public sealed class GenAiFolder
{
    public const string ConfigFileName = "genai_config.json";

    GenAiFolder(string path, JsonObject config, string modelFile)
    {
        Path = path;
        Config = config;
        ModelFile = modelFile;
    }

    GenAiFolder(GenAiFolder read, OnnxModel model) : this(read.Path, read.Config, read.ModelFile) =>
        ModelFiles = [System.IO.Path.Combine(read.Path, read.ModelFile), .. model.Files.Select(f => System.IO.Path.GetFullPath(f.Path))];

    /// <summary>The folder.</summary>
    public string Path { get; }
    /// <summary>The configuration as read (never modified: writing makes an updated copy).</summary>
    public JsonObject Config { get; }
    /// <summary>The decoder's file name, relative to the folder (<c>model.decoder.filename</c>).</summary>
    public string ModelFile { get; }
    /// <summary>The model file and its external data files as loaded: written anew on export, never copied.</summary>
    public IReadOnlyList<string> ModelFiles { get; } = [];

    public static bool IsFolder(string path) => Directory.Exists(path) && File.Exists(System.IO.Path.Combine(path, ConfigFileName));

    /// <summary>Loads the folder's decoder; the model knows its folder (<see cref="OnnxModel.Folder"/>).</summary>
    public static OnnxModel Load(string folder, CancellationToken cancel = default)
    {
        string full = System.IO.Path.GetFullPath(folder);
        var genai = Read(full);
        string modelPath = System.IO.Path.Combine(full, genai.ModelFile);
        if (!File.Exists(modelPath))
            throw new EngineException("GenAiModelFileMissing", EngineErrorKind.ObjectNotFound,
                $"'{System.IO.Path.Combine(full, ConfigFileName)}' names the model file '{genai.ModelFile}', which is not in the folder.") { Target = full };
        var model = ModelIO.Load(modelPath, cancel);
        genai.Check(model);
        return new OnnxModel(model.Proto, model.SourcePath, model.History) { LoadedFrom = model.LoadedFrom, LoadWarnings = model.LoadWarnings, Folder = new GenAiFolder(genai, model) };
    }

    static GenAiFolder Read(string folder)
    {
        string configPath = System.IO.Path.Combine(folder, ConfigFileName);
        JsonObject config;
        try
        {
            config = JsonNode.Parse(File.ReadAllText(configPath), documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }) as JsonObject
                ?? throw new JsonException("the file is not a JSON object");
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new EngineException("GenAiConfigInvalid", EngineErrorKind.InvalidData, $"'{configPath}' cannot be read as a GenAI configuration: {e.Message}", e) { Target = configPath };
        }
        var decoder = Decoder(config, configPath);
        // Every number it describes the model by must be a whole number, and the file name a string.
        foreach (var n in Numbers)
            if (decoder[n] is { } value && !(value is JsonValue v && v.TryGetValue(out long _)))
                throw new EngineException("GenAiConfigInvalid", EngineErrorKind.InvalidData,
                    $"'{configPath}' gives model.decoder.{n} as {value.ToJsonString()}, not a whole number.") { Target = configPath };
        string? file = decoder["filename"] is JsonValue name && name.TryGetValue(out string? text) ? text : null;
        if (string.IsNullOrWhiteSpace(file) || System.IO.Path.IsPathRooted(file) || file.Contains("..", StringComparison.Ordinal))
            throw new EngineException("GenAiConfigInvalid", EngineErrorKind.InvalidData,
                $"'{configPath}' names no model file inside the folder (model.decoder.filename is '{file}').") { Target = configPath };
        return new GenAiFolder(folder, config, file);
    }

    static JsonObject Decoder(JsonObject config, string source) =>
        (config["model"] as JsonObject)?["decoder"] as JsonObject
        ?? throw new EngineException("GenAiConfigInvalid", EngineErrorKind.InvalidData, $"'{source}' has no model.decoder section.") { Target = source };

    /// <summary>What the configuration says of the model, for the numbers it holds.</summary>
    public IReadOnlyDictionary<string, long> Declared => Numbers.Where(n => Decoder(Config, Path)[n] is JsonValue)
        .ToDictionary(n => n, n => (long)Decoder(Config, Path)[n]!, StringComparer.Ordinal);

    static readonly string[] Numbers = ["num_hidden_layers", "num_key_value_heads", "head_size", "num_attention_heads", "hidden_size"];

    /// <summary>Refuses a configuration that disagrees with its model: the runtime would size the cache wrongly.</summary>
    void Check(OnnxModel model)
    {
        var actual = Describe(model);
        var wrong = Declared.Where(d => actual.TryGetValue(d.Key, out long a) && a != d.Value).Select(d => $"{d.Key} {d.Value} (the model has {actual[d.Key]})").ToList();
        if (wrong.Count > 0)
            throw new EngineException("GenAiConfigMismatch", EngineErrorKind.InvalidData,
                $"'{System.IO.Path.Combine(Path, ConfigFileName)}' disagrees with '{ModelFile}': {string.Join(", ", wrong)}.") { Target = Path };
    }

    /// <summary>
    /// The configuration's numbers as the model shows them: layers, key/value heads and head size from its cache,
    /// query heads from its attention (GroupQueryAttention's num_heads, or the reshape of the query into heads),
    /// hidden size from its token embedding. Numbers the model does not show are left out.
    /// </summary>
    public static Dictionary<string, long> Describe(OnnxModel model)
    {
        var result = new Dictionary<string, long>(StringComparer.Ordinal);
        if (DecoderContract.Of(model) is not { HasCache: true } c) return result;
        result["num_hidden_layers"] = c.CacheLayers;
        result["num_key_value_heads"] = c.KeyValueHeads!.Value;
        result["head_size"] = c.HeadSize!.Value;
        if (c.QueryHeads(model) is { } heads) result["num_attention_heads"] = heads;
        var graph = model.Proto.Graph;
        var tables = graph.Initializer.Where(t => t.Dims.Count == 2).ToDictionary(t => t.Name, StringComparer.Ordinal);
        var embedding = graph.Node.FirstOrDefault(n => n.OpType == "Gather" && n.Input.Count == 2 && n.Input[1] == c.Tokens.Name && tables.ContainsKey(n.Input[0]));
        if (embedding is not null) result["hidden_size"] = tables[embedding.Input[0]].Dims[1];
        return result;
    }

    /// <summary>
    /// The configuration for <paramref name="model"/> written as <paramref name="modelFile"/>: every number the model
    /// shows replaced, the rest kept. A model whose layers differ in their cache (a non-uniform pruning) cannot be
    /// described by one configuration and is refused.
    /// </summary>
    public JsonObject ConfigFor(OnnxModel model, string modelFile)
    {
        if (DecoderContract.Of(model) is { HasCache: true } c && c.Cache.Select(e => (e.Heads, e.HeadSize)).Distinct().Count() > 1)
            throw new EngineException("GenAiConfigUnrepresentable", EngineErrorKind.InvalidOperation,
                $"Model '{model.Name}' has caches of different sizes in different layers ({string.Join(", ", c.Cache.Where(e => e.Kind == CacheKind.Key).Select(e => $"layer {e.Layer}: {e.Heads} heads"))}); " +
                "an ONNX Runtime GenAI configuration holds one key/value head count for all layers. Prune key/value heads uniformly (the same rate everywhere), or export the model alone with -Path.");
        var config = (JsonObject)Config.DeepClone();
        var decoder = Decoder(config, Path);
        decoder["filename"] = modelFile;
        foreach (var (name, value) in Describe(model))
            if (decoder.ContainsKey(name) || name is "num_hidden_layers" or "num_key_value_heads" or "head_size") decoder[name] = value;
        return config;
    }

    /// <summary>
    /// Writes <paramref name="model"/> as a GenAI folder at <paramref name="target"/>: a temporary folder beside it is
    /// filled (model, configuration, the source folder's other files) and then renamed, so the target never holds a
    /// half-written folder; an existing target is replaced only with <see cref="SaveOptions.Overwrite"/>.
    /// </summary>
    public SaveResult Export(OnnxModel model, string target, SaveOptions options, CancellationToken cancel = default)
    {
        target = System.IO.Path.GetFullPath(target.TrimEnd(System.IO.Path.DirectorySeparatorChar, System.IO.Path.AltDirectorySeparatorChar));
        if (File.Exists(target))
            throw new EngineException("ExportPathIsFile", EngineErrorKind.InvalidArgument, $"'{target}' is a file; a GenAI model is written as a folder.") { Target = target };
        if (Directory.Exists(target) && !options.Overwrite)
            throw new EngineException("ExportFileExists", EngineErrorKind.ResourceExists, $"'{target}' already exists; use -Force to replace it.") { Target = target };
        if (string.Equals(target, Path, StringComparison.Ordinal))
            throw new EngineException("ExportOverSource", EngineErrorKind.InvalidArgument,
                $"'{target}' is the folder the model was loaded from; its weights are read from there while it is written. Export to another folder.") { Target = target };
        var config = ConfigFor(model, ModelFile);
        string parent = System.IO.Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(parent);
        // Staged in a folder owned (named and locked) by this process: what a killed export left is removed first.
        TemporaryFiles.RemoveStale(parent);
        string staging = TemporaryFiles.Beside(target);
        Directory.CreateDirectory(staging);
        using var owned = NativeFiles.TryLockFolder(staging).Lock;
        try
        {
            var saved = ModelIO.Save(model, System.IO.Path.Combine(staging, ModelFile), options with { Overwrite = false, PrivateFolder = true }, cancel);
            File.WriteAllText(System.IO.Path.Combine(staging, ConfigFileName), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            CopyOthers(staging, cancel);
            Replace(staging, target, options.Overwrite, cancel);
            return new SaveResult(System.IO.Path.Combine(target, ModelFile), saved.DataPath is null ? null : System.IO.Path.Combine(target, System.IO.Path.GetFileName(saved.DataPath)), saved.ExternalDataForced);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new EngineException("ExportWriteFailed", EngineErrorKind.WriteError, $"Writing '{target}' failed: {e.Message}", e) { Target = target };
        }
        finally
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
        }
    }

    /// <summary>Copies every file and folder of the source folder but the model, its data files and the configuration (written anew).</summary>
    void CopyOthers(string staging, CancellationToken cancel)
    {
        var skip = ModelFiles.Append(System.IO.Path.Combine(Path, ConfigFileName)).ToHashSet(StringComparer.Ordinal);
        foreach (var entry in Directory.EnumerateFileSystemEntries(Path, "*", SearchOption.AllDirectories))
        {
            cancel.ThrowIfCancellationRequested();
            string relative = System.IO.Path.GetRelativePath(Path, entry), destination = System.IO.Path.Combine(staging, relative);
            if (Directory.Exists(entry)) Directory.CreateDirectory(destination);
            else if (!skip.Contains(entry) && !File.Exists(destination)) File.Copy(entry, destination);
        }
    }

    /// <summary>
    /// Moves the staged folder into place, holding the parent folder's lock (two exports to one folder take turns); an
    /// existing target goes aside first and is removed after.
    /// </summary>
    static void Replace(string staging, string target, bool overwrite, CancellationToken cancel)
    {
        using var parentLock = NativeFiles.LockFolder(System.IO.Path.GetDirectoryName(target)!, cancel);
        if (Directory.Exists(target) && !overwrite)
            throw new EngineException("ExportFileExists", EngineErrorKind.ResourceExists, $"'{target}' already exists; use -Force to replace it.") { Target = target };
        if (!Directory.Exists(target)) { Directory.Move(staging, target); return; }
        string aside = TemporaryFiles.Beside(target);
        Directory.Move(target, aside);
        try { Directory.Move(staging, target); }
        catch
        {
            Directory.Move(aside, target);
            throw;
        }
        Directory.Delete(aside, recursive: true);
    }
}
