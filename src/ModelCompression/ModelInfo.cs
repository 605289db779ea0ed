using ModelCompression.Native.Onnx;

namespace ModelCompression;

/// <summary>What Get-ModelInfo reports about a model.</summary>
[EngineRecord(typeof(ModelSummary), Renamed = ["SerializedSize=SizeBytes", "OperatorCounts=Operators"])]
public sealed class ModelInfo
{
    /// <summary>The Model's name and file (null for a model a stage made, until it is exported).</summary>
    public string Name { get; internal set; } = "";
    public string? Path { get; internal set; }
    /// <summary>Size of the file the model was read from, history or not; null for a model a stage made in memory.</summary>
    public long? FileSize { get; init; }
    /// <summary>Size of the model serialized into one file.</summary>
    public long SizeBytes { get; init; }
    public long Parameters { get; init; }
    public Dictionary<string, long> BytesByElementType { get; init; } = [];
    public long IrVersion { get; init; }
    public Dictionary<string, long> Opsets { get; init; } = [];
    public string Producer { get; init; } = "";
    public ModelValueInfo[] Inputs { get; init; } = [];
    public ModelValueInfo[] Outputs { get; init; } = [];
    public Dictionary<string, int> Operators { get; init; } = [];
    public int NodeCount { get; init; }
    /// <summary>
    /// Share of the weights that are zero (0..1): float weights equal to 0, quantized weights equal to their zero point
    /// (scales and zero points are not weights); null when not measured (large weights in external data, without -ScanWeights).
    /// </summary>
    public double? Sparsity { get; init; }
    public ModelStageInfo[] History { get; init; } = [];
    public CompressionReport? Report { get; internal set; }

    public string OpsetText => string.Join(", ", Opsets.Select(o => $"{o.Key} {o.Value}"));
    public string InputText => string.Join("; ", Inputs.Select(i => i.ToString()));
    public string OutputText => string.Join("; ", Outputs.Select(i => i.ToString()));

    internal static ModelInfo From(Model model, bool scanWeights)
    {
        var info = EngineRecords.Map<ModelInfo>(ModelSummary.Of(model.Engine, scanWeights ? long.MaxValue : ModelSummary.DefaultScanLimit));
        info.Name = model.Name;
        info.Path = model.Path;
        info.Report = model.Report;
        return info;
    }
}

/// <summary>A model input or output: name, element type, shape (symbolic dimensions by name).</summary>
[EngineRecord(typeof(ValueSignature), Omitted = [nameof(ValueSignature.ElementTypeCode)])]
public sealed class ModelValueInfo
{
    public string Name { get; init; } = "";
    public string ElementType { get; init; } = "";
    public string[] Shape { get; init; } = [];

    public override string ToString() => $"{Name}: {ElementType}[{string.Join(",", Shape)}]";
}
