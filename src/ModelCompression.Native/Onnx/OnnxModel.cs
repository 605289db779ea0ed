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
    }

    /// <summary>The model. Do not modify it in place: clone it (<see cref="Derive"/>) first.</summary>
    public ModelProto Proto { get; }
    public string? SourcePath { get; }
    public IReadOnlyList<ModelStage> History { get; }
    /// <summary>What the last stage reported (layers touched, skipped, ...), when it reported anything.</summary>
    public ModelReport? Report { get; }

    public string Name => SourcePath is null ? (Proto.Graph?.Name ?? "model") : Path.GetFileNameWithoutExtension(SourcePath);

    /// <summary>Serialized size in bytes, as it would be written into a single file.</summary>
    public long SerializedSize => Proto.CalculateSize();

    /// <summary>
    /// Runs <paramref name="transform"/> on a copy of this model and records the stage. The copy shares
    /// tensor bytes with this model; the transform may edit the copy's structure freely. A stage that works before
    /// it edits (calibration, training) passes the clock it started, so the history records its whole time.
    /// </summary>
    public OnnxModel Derive(string stageName, IReadOnlyDictionary<string, string> parameters, Func<ModelProto, ModelReport?> transform, Stopwatch? startedAt = null)
    {
        var sw = startedAt ?? Stopwatch.StartNew();
        long before = SerializedSize;
        var copy = Proto.Clone();
        var report = transform(copy);
        long after = copy.CalculateSize();
        var stage = new ModelStage(stageName, parameters, before, after, sw.Elapsed.TotalSeconds, DateTimeOffset.UtcNow, "ModelCompression " + EngineInfo.Version);
        return new OnnxModel(copy, SourcePath, [.. History, stage], report);
    }

    public IEnumerable<TensorProto> Initializers => Proto.Graph?.Initializer ?? Enumerable.Empty<TensorProto>();
}

/// <summary>A stage's report: free-form lines grouped by kind, plus optional per-layer rows.</summary>
public sealed class ModelReport
{
    public required string Stage { get; init; }
    public List<ReportEntry> Entries { get; } = [];
    public List<string> Notes { get; } = [];
    public Dictionary<string, double> Metrics { get; } = [];
}

/// <summary>One node or tensor a stage touched or skipped, and why.</summary>
public sealed record ReportEntry(string Target, string OpType, string Action, string Detail)
{
    /// <summary>
    /// The stage's error measure for this target, when it has one (weight-only quantization with calibration data: the
    /// layer's relative output error ||X W - X W_q|| / ||X W|| on the calibration activations).
    /// </summary>
    public double? Error { get; init; }
}

public static class EngineInfo
{
    public static string Version { get; } = typeof(EngineInfo).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";
}
