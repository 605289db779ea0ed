using ModelCompression.Native.Onnx;

namespace ModelCompression;

/// <summary>
/// An ONNX model in memory, as PowerShell sees it: where it came from, its size and parameters, and the
/// compression stages applied to it. Every stage returns a new Model; this one never changes.
/// </summary>
public sealed class Model
{
    /// <param name="derivedFrom">The model a stage made this one from; null for a model loaded from a file.</param>
    internal Model(OnnxModel engine, Model? derivedFrom = null)
    {
        Engine = engine;
        // A derived model is not its source: it has no file until exported, and its name says what was done
        // (wine_mlp.pruning.quantize), so reports that set it against its source tell the two apart.
        Name = derivedFrom is null ? engine.Name : $"{derivedFrom.Name}.{engine.History[^1].Name.ToLowerInvariant()}";
        Path = derivedFrom is not null ? null : engine.Folder?.Path ?? engine.SourcePath;
        SizeBytes = engine.SerializedSize;
        Parameters = ParameterCount.Of(engine.Proto);
        History = engine.History.Select(ModelStageInfo.From).ToArray();
        Report = engine.Report is null ? null : CompressionReport.From(engine.Report);
    }

    internal OnnxModel Engine { get; }

    public string Name { get; }
    /// <summary>The file (or ONNX Runtime GenAI folder) the model was loaded from; null for a model a stage made in memory (until it is exported).</summary>
    public string? Path { get; }
    /// <summary>The file this model or its first ancestor was loaded from: Export-Model -Directory names its file after it.</summary>
    internal string? OriginPath => Engine.SourcePath;
    /// <summary>Size of the model serialized into one file.</summary>
    public long SizeBytes { get; }
    public long Parameters { get; }
    public ModelStageInfo[] History { get; }
    /// <summary>What the last stage reported, when it reported anything.</summary>
    public CompressionReport? Report { get; }
    public string Stages => History.Length == 0 ? "" : string.Join(" > ", History.Select(h => h.Name));

    public override string ToString() => Path ?? Name;
}

/// <summary>One compression stage in a model's history.</summary>
public sealed class ModelStageInfo
{
    public required string Name { get; init; }
    public required Dictionary<string, string> Parameters { get; init; }
    public long SizeBefore { get; init; }
    public long SizeAfter { get; init; }
    public double Seconds { get; init; }
    public DateTimeOffset Timestamp { get; init; }
    public required string Tool { get; init; }

    internal static ModelStageInfo From(ModelStage s) => new()
    {
        Name = s.Name,
        Parameters = new Dictionary<string, string>(s.Parameters),
        SizeBefore = s.SizeBefore,
        SizeAfter = s.SizeAfter,
        Seconds = s.Seconds,
        Timestamp = s.Timestamp,
        Tool = s.Tool,
    };

    public override string ToString() => $"{Name}({string.Join(", ", Parameters.Select(p => p.Key + "=" + p.Value))})";
}

/// <summary>A stage's report: nodes or tensors touched or skipped with the reason, notes, and metrics.</summary>
public sealed class CompressionReport
{
    public required string Stage { get; init; }
    public required ReportRow[] Entries { get; init; }
    public required string[] Notes { get; init; }
    public required Dictionary<string, double> Metrics { get; init; }

    internal static CompressionReport From(ModelReport r) => new()
    {
        Stage = r.Stage,
        Entries = r.Entries.Select(e => new ReportRow { Target = e.Target, OpType = e.OpType, Action = e.Action, Detail = e.Detail, Error = e.Error }).ToArray(),
        Notes = r.Notes.ToArray(),
        Metrics = new Dictionary<string, double>(r.Metrics),
    };

    public override string ToString() => $"{Stage}: {Entries.Length} entries";
}

public sealed class ReportRow
{
    public required string Target { get; init; }
    public required string OpType { get; init; }
    public required string Action { get; init; }
    public required string Detail { get; init; }
    /// <summary>The stage's error measure for this row, when it has one (weight-only quantization with calibration data: the layer's relative output error).</summary>
    public double? Error { get; init; }
}
