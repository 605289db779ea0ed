using ModelCompression.Native.Onnx;

namespace ModelCompression;

/// <summary>What Get-ModelInfo reports about a model.</summary>
public sealed class ModelInfo
{
    public required string Name { get; init; }
    public string? Path { get; init; }
    /// <summary>Size of the file on disk; null for a model that was changed since it was loaded.</summary>
    public long? FileSize { get; init; }
    public long SizeBytes { get; init; }
    public long Parameters { get; init; }
    public required Dictionary<string, long> BytesByElementType { get; init; }
    public long IrVersion { get; init; }
    public required Dictionary<string, long> Opsets { get; init; }
    public required string Producer { get; init; }
    public required ModelValueInfo[] Inputs { get; init; }
    public required ModelValueInfo[] Outputs { get; init; }
    public required Dictionary<string, int> Operators { get; init; }
    public int NodeCount { get; init; }
    /// <summary>Share of exactly-zero values among floating-point weights (0..1); null when not measured (large weights in external data, without -ScanWeights).</summary>
    public double? Sparsity { get; init; }
    public required ModelStageInfo[] History { get; init; }
    public CompressionReport? Report { get; init; }

    public string OpsetText => string.Join(", ", Opsets.Select(o => $"{o.Key} {o.Value}"));
    public string InputText => string.Join("; ", Inputs.Select(i => i.ToString()));
    public string OutputText => string.Join("; ", Outputs.Select(i => i.ToString()));

    internal static ModelInfo From(Model model, bool scanWeights)
    {
        var s = ModelSummary.Of(model.Engine, scanWeights ? long.MaxValue : ModelSummary.DefaultScanLimit);
        return new ModelInfo
        {
            Name = model.Name,
            Path = model.Path,
            FileSize = model.Path is not null && s.FileSize >= 0 ? s.FileSize : null,
            SizeBytes = s.SerializedSize,
            Parameters = s.Parameters,
            BytesByElementType = new Dictionary<string, long>(s.BytesByElementType),
            IrVersion = s.IrVersion,
            Opsets = new Dictionary<string, long>(s.Opsets),
            Producer = s.Producer,
            Inputs = s.Inputs.Select(ModelValueInfo.From).ToArray(),
            Outputs = s.Outputs.Select(ModelValueInfo.From).ToArray(),
            Operators = new Dictionary<string, int>(s.OperatorCounts),
            NodeCount = s.NodeCount,
            Sparsity = s.Sparsity,
            History = s.History.Select(ModelStageInfo.From).ToArray(),
            Report = model.Report,
        };
    }
}

/// <summary>A model input or output: name, element type, shape (symbolic dimensions by name).</summary>
public sealed class ModelValueInfo
{
    public required string Name { get; init; }
    public required string ElementType { get; init; }
    public required string[] Shape { get; init; }

    internal static ModelValueInfo From(ValueSignature v) => new() { Name = v.Name, ElementType = v.ElementType, Shape = v.Shape.ToArray() };

    public override string ToString() => $"{Name}: {ElementType}[{string.Join(",", Shape)}]";
}
