using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Onnx;

/// <summary>A value the graph takes or produces: name, element type and shape (symbolic dimensions by name).</summary>
public sealed record ValueSignature(string Name, string ElementType, int ElementTypeCode, IReadOnlyList<string> Shape)
{
    public override string ToString() => $"{Name}: {ElementType}[{string.Join(",", Shape)}]";

    public static ValueSignature From(ValueInfoProto v)
    {
        var tt = v.Type?.TensorType;
        if (tt is null) return new ValueSignature(v.Name, v.Type?.ValueCase.ToString() ?? "unknown", 0, []);
        var shape = tt.Shape?.Dim.Select(d => d.ValueCase switch
        {
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimValue => d.DimValue.ToString(System.Globalization.CultureInfo.InvariantCulture),
            TensorShapeProto.Types.Dimension.ValueOneofCase.DimParam => d.DimParam,
            _ => "?",
        }).ToList() ?? [];
        return new ValueSignature(v.Name, ElementTypes.Name(tt.ElemType), tt.ElemType, shape);
    }
}

/// <summary>Everything Get-ModelInfo reports, computed in one pass over the model.</summary>
public sealed record ModelSummary(
    string Name,
    string? Path,
    long? FileSize,
    long SerializedSize,
    long Parameters,
    IReadOnlyDictionary<string, long> BytesByElementType,
    long IrVersion,
    IReadOnlyDictionary<string, long> Opsets,
    string Producer,
    IReadOnlyList<ValueSignature> Inputs,
    IReadOnlyList<ValueSignature> Outputs,
    IReadOnlyDictionary<string, int> OperatorCounts,
    int NodeCount,
    double? Sparsity,
    IReadOnlyList<ModelStage> History)
{
    /// <summary>Weights in external data are read for sparsity up to this many bytes unless the caller asks for more.</summary>
    public const long DefaultScanLimit = 1L << 30;

    /// <summary>
    /// The summary of <paramref name="model"/>. Sparsity needs every weight's values: weights in external data are read
    /// only when they total at most <paramref name="scanLimit"/> bytes, otherwise sparsity is left unmeasured (null),
    /// so that a 4 GB model answers in well under a second.
    /// </summary>
    public static ModelSummary Of(OnnxModel model, long scanLimit = DefaultScanLimit)
    {
        var proto = model.Proto;
        var graph = proto.Graph;
        long parameters = 0, weightElements = 0, zeros = 0;
        bool scan = graph.Initializer.Where(TensorData.IsExternal).Sum(TensorData.StorageBytes) <= scanLimit;
        var bytes = new SortedDictionary<string, long>(StringComparer.Ordinal);
        var readers = Readers(graph);
        var initializers = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (var t in graph.Initializer) initializers.TryAdd(t.Name, t);
        // Initializers and Constant nodes alike (PaddleOCR's exports hold their weights in Constant nodes). Weights are
        // the tensors that hold parameters (not scales or zero points); a quantized one is zero where it equals its zero point.
        foreach (var (t, count) in ParameterCount.Tensors(graph))
        {
            parameters += count;
            string type = ElementTypes.Name(t.DataType);
            bytes[type] = bytes.GetValueOrDefault(type) + TensorData.StorageBytes(t);
            if (!scan || count <= 1) continue;
            if (ElementTypes.IsFloatingPoint(t.DataType))
            {
                weightElements += TensorData.ElementCount(t);
                zeros += TensorData.CountZeros(t);
            }
            else if (readers.TryGetValue(t.Name, out var reader)
                && QuantizedZeros.Count(t, reader.Node, reader.Slot, name => initializers.GetValueOrDefault(name)) is { } z)
            {
                weightElements += count;
                zeros += z;
            }
        }
        var ops = new SortedDictionary<string, int>(StringComparer.Ordinal);
        int nodes = 0;
        foreach (var node in AllNodes(graph))
        {
            nodes++;
            string key = string.IsNullOrEmpty(node.Domain) || node.Domain == "ai.onnx" ? node.OpType : node.Domain + "." + node.OpType;
            ops[key] = ops.GetValueOrDefault(key) + 1;
        }
        var initNames = graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        var opsets = new SortedDictionary<string, long>(StringComparer.Ordinal);
        foreach (var o in proto.OpsetImport) opsets[string.IsNullOrEmpty(o.Domain) ? "ai.onnx" : o.Domain] = o.Version;
        string producer = string.IsNullOrEmpty(proto.ProducerVersion) ? proto.ProducerName : $"{proto.ProducerName} {proto.ProducerVersion}";
        // The file as it was read, history or not; a model a stage made in memory has no file until it is exported.
        long? fileSize = model.LoadedFrom?.Length;
        return new ModelSummary(
            model.Name, model.SourcePath, fileSize, model.SerializedSize, parameters, bytes, proto.IrVersion, opsets, producer,
            graph.Input.Where(i => !initNames.Contains(i.Name)).Select(ValueSignature.From).ToList(),
            graph.Output.Select(ValueSignature.From).ToList(),
            ops, nodes,
            !scan ? null : weightElements == 0 ? 0 : (double)zeros / weightElements,
            model.History);
    }

    /// <summary>The first node that reads each value, and at which input.</summary>
    static Dictionary<string, (NodeProto Node, int Slot)> Readers(GraphProto graph)
    {
        var readers = new Dictionary<string, (NodeProto, int)>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
            for (int i = 0; i < node.Input.Count; i++)
                if (node.Input[i].Length > 0) readers.TryAdd(node.Input[i], (node, i));
        return readers;
    }

    /// <summary>Nodes of the graph and of every subgraph (If/Loop/Scan bodies).</summary>
    public static IEnumerable<NodeProto> AllNodes(GraphProto graph)
    {
        foreach (var node in graph.Node)
        {
            yield return node;
            foreach (var a in node.Attribute)
            {
                if (a.G is not null) foreach (var n in AllNodes(a.G)) yield return n;
                foreach (var g in a.Graphs) foreach (var n in AllNodes(g)) yield return n;
            }
        }
    }
}
