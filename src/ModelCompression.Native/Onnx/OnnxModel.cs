using System.Diagnostics;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// An ONNX model in memory, where it came from and what was done to it. Immutable by convention:
/// every transform builds a new <see cref="OnnxModel"/> through <see cref="Derive"/> and leaves this one as it is.
/// Tensor bytes are immutable <c>ByteString</c>s, so derived models share unchanged tensors.
/// </summary>
public sealed class OnnxModel
{
    public OnnxModel(ModelProto proto, string? sourcePath, IReadOnlyList<ModelStage> history, ModelReport? report = null)
    {
        Proto = proto;
        SourcePath = sourcePath;
        History = history;
        Report = report;
        Files = TensorFile.ReferencedBy(proto);
        serializedSize = new Lazy<long>(() => ModelIO.SerializedSize(Proto));
    }

    /// <summary>The model. Do not modify it in place: clone it (<see cref="Derive"/>) first.</summary>
    public ModelProto Proto { get; }
    public string? SourcePath { get; }
    public IReadOnlyList<ModelStage> History { get; }
    /// <summary>What the last stage reported (layers touched, skipped, ...), when it reported anything.</summary>
    public ModelReport? Report { get; }
    /// <summary>The file this model is, unchanged, when it was loaded and not derived (ONNX Runtime can take that file as it is).</summary>
    public FileIdentity? LoadedFrom { get; init; }
    /// <summary>Soft problems found while loading (a damaged history, say), for the caller to show as warnings.</summary>
    public IReadOnlyList<string> LoadWarnings { get; init; } = [];
    /// <summary>The ONNX Runtime GenAI folder the model was loaded from (a derived model keeps it: it is written back as such a folder).</summary>
    public GenAiFolder? Folder { get; init; }
    /// <summary>The data files this model's external tensors are in; holding them keeps scratch files alive.</summary>
    public IReadOnlyList<TensorFile> Files { get; }

    public string Name => Folder is not null ? Path.GetFileName(Folder.Path) : SourcePath is null ? (Proto.Graph?.Name ?? "model") : Path.GetFileNameWithoutExtension(SourcePath);

    /// <summary>Size in bytes as it would be written into a single file (64-bit; tensors in data files included).</summary>
    public long SerializedSize => serializedSize.Value;
    readonly Lazy<long> serializedSize;

    /// <summary>Stages of models at least this large write large new tensors to scratch files instead of memory.</summary>
    public static long SpillThreshold { get; set; } = 512L << 20;

    /// <summary>
    /// Runs <paramref name="transform"/> on a copy of this model and records the stage. The copy shares
    /// tensor bytes with this model; the transform may edit the copy's structure freely. A stage that works before
    /// it edits (calibration, training) passes the clock it started, so the history records its whole time.
    /// For a large model, tensors the transform creates go to a scratch file (<see cref="TensorSpill"/>).
    /// </summary>
    public OnnxModel Derive(string stageName, IReadOnlyDictionary<string, string> parameters, Func<ModelProto, ModelReport?> transform, Stopwatch? startedAt = null)
    {
        var sw = startedAt ?? Stopwatch.StartNew();
        long before = SerializedSize;
        var copy = Proto.Clone();
        TensorFile? spilled = null;
        var report = before >= SpillThreshold ? TensorSpill.Run(() => transform(copy), out spilled) : transform(copy);
        var stage = new ModelStage(stageName, parameters, before, ModelIO.SerializedSize(copy), sw.Elapsed.TotalSeconds, DateTimeOffset.UtcNow, "ModelCompression " + EngineInfo.Version);
        var derived = new OnnxModel(copy, SourcePath, [.. History, stage], report) { Folder = Folder };
        // The copy's external tensors name this model's data files and the stage's scratch file, which nothing else
        // holds until the new model does: a GC in between would release them (a weak registry entry gone; the large
        // bench's Dynamic int8 stage failed so with ExternalDataReleased).
        GC.KeepAlive(this);
        GC.KeepAlive(spilled);
        return derived;
    }

    public IEnumerable<TensorProto> Initializers => Proto.Graph?.Initializer ?? Enumerable.Empty<TensorProto>();
}

/// <summary>
/// A stage's report: per-layer rows, metrics, and lines of two kinds: <see cref="Warnings"/> for what the user should
/// act on (an option that did nothing, layers a mode cannot handle that another would), <see cref="Notes"/> for the rest.
/// </summary>
public sealed class ModelReport
{
    public required string Stage { get; init; }
    public List<ReportEntry> Entries { get; } = [];
    public List<string> Warnings { get; } = [];
    public List<string> Notes { get; } = [];
    public Dictionary<string, double> Metrics { get; } = [];
}

/// <summary>The actions a <see cref="ReportEntry"/> records; readers compare with these, never with literals.</summary>
public static class ReportActions
{
    public const string Quantized = "Quantized";
    public const string Converted = "Converted";
    public const string Pruned = "Pruned";
    public const string Removed = "Removed";
    public const string Folded = "Folded";
    public const string Added = "Added";
    public const string Trained = "Trained";
    public const string Kept = "Kept";
    public const string Skipped = "Skipped";
    public const string Candidate = "Candidate";
}

/// <summary>Names of the <see cref="ModelReport.Metrics"/> that readers look up; writers use them too.</summary>
public static class ReportMetrics
{
    /// <summary>Followed by an operator type: how many nodes of that type a quantization pass quantized.</summary>
    public const string QuantizedPrefix = "Quantized.";
    public const string SizeBefore = "SizeBefore";
    public const string SizeAfter = "SizeAfter";
    public const string NodesBefore = "NodesBefore";
    public const string NodesAfter = "NodesAfter";
    public const string ReconstructionErrorMean = "ReconstructionErrorMean";
    public const string ReconstructionErrorMax = "ReconstructionErrorMax";
}

/// <summary>One node or tensor a stage touched or skipped, and why.</summary>
public sealed record ReportEntry(string Target, string OpType, string Action, string Detail)
{
    /// <summary>
    /// The stage's error measure for this target, when it has one (weight-only quantization with calibration data: the
    /// layer's relative output error ||X W - X W_q|| / ||X W|| on the calibration activations).
    /// </summary>
    public double? Error { get; init; }

    /// <summary>Bytes the target takes after the stage, when the stage counts them (weight-only quantization: each layer's weight as stored).</summary>
    public long? Bytes { get; init; }
}

public static class EngineInfo
{
    public static string Version { get; } = typeof(EngineInfo).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";
}
