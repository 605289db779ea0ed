using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Element types of every value in a graph, as ONNX Runtime's own type inference sees them: each node output is
/// exposed as an (untyped) graph output of a copy of the model, and the session's output metadata gives its type.
/// No inference run is needed.
/// </summary>
internal static class ValueTypes
{
    public static Dictionary<string, DT> Infer(ModelProto model, string? modelName = null) => InferWithRanks(model, modelName).Types;

    /// <summary>Element types, and ranks where ONNX Runtime knows them.</summary>
    public static (Dictionary<string, DT> Types, Dictionary<string, int> Ranks) InferWithRanks(ModelProto model, string? modelName = null)
    {
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        var copy = model.Clone();
        var graph = copy.Graph;
        // Types need no weights: large initializers become graph inputs of their type and shape, so ONNX Runtime does
        // not load gigabytes to answer. Small ones stay: shape inference may need their values (Reshape's shape, say).
        var inputNames = graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        for (int i = graph.Initializer.Count - 1; i >= 0; i--)
        {
            var t = graph.Initializer[i];
            if (Onnx.TensorData.StorageBytes(t) < 1 << 16) continue;
            graph.Initializer.RemoveAt(i);
            if (inputNames.Add(t.Name)) graph.Input.Add(Onnx.GraphBuilder.Value(t.Name, (DT)t.DataType, [.. t.Dims.Cast<object>()]));
        }
        var seen = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            foreach (var o in n.Output)
                if (o.Length > 0 && seen.Add(o)) graph.Output.Add(new ValueInfoProto { Name = o });
        var result = new Dictionary<string, DT>(StringComparer.Ordinal);
        foreach (var v in graph.Input) if (v.Type?.TensorType is { } tt) result[v.Name] = (DT)tt.ElemType;
        foreach (var t in model.Graph.Initializer) result[t.Name] = (DT)t.DataType;
        using var options = Runtime.OrtObjects.SessionOptions();
        options.GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL;
        try
        {
            using var session = Runtime.RuntimeModel.Open(copy, modelName ?? "model", options);
            foreach (var (name, meta) in session.OutputMetadata)
                if (meta.IsTensor) { result[name] = FromOrt(meta.ElementDataType); if (meta.Dimensions is { } dims) ranks[name] = dims.Length; }
        }
        catch (OnnxRuntimeException e)
        {
            throw new EngineException("ModelSessionFailed", EngineErrorKind.InvalidData, $"ONNX Runtime cannot load model '{modelName ?? "model"}' to infer its value types: {e.Message}", e);
        }
        foreach (var v in graph.Input) if (v.Type?.TensorType?.Shape is { } shape) ranks[v.Name] = shape.Dim.Count;
        return (result, ranks);
    }

    static DT FromOrt(TensorElementType t) => t switch
    {
        TensorElementType.Float => DT.Float,
        TensorElementType.Float16 => DT.Float16,
        TensorElementType.Double => DT.Double,
        TensorElementType.BFloat16 => DT.Bfloat16,
        TensorElementType.Int8 => DT.Int8,
        TensorElementType.UInt8 => DT.Uint8,
        TensorElementType.Int16 => DT.Int16,
        TensorElementType.UInt16 => DT.Uint16,
        TensorElementType.Int32 => DT.Int32,
        TensorElementType.UInt32 => DT.Uint32,
        TensorElementType.Int64 => DT.Int64,
        TensorElementType.UInt64 => DT.Uint64,
        TensorElementType.Bool => DT.Bool,
        TensorElementType.String => DT.String,
        _ => DT.Undefined,
    };
}
