using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// A constant weight as a quantizer reads it: the tensor holding its values (an initializer or a Constant node, through
/// Identity chains, and through a Cast to the computation type when the values are stored in another float type, as
/// -Mode Float16 -StorageOnly leaves them), the type the values are stored in, and the type the consuming node computes
/// in (which decides the type of new scales).
/// </summary>
internal sealed record WeightSource(string Name, TensorProto Tensor, DT Storage, DT Compute, bool ThroughCast)
{
    /// <summary>Float types whose weights can be quantized (read through <see cref="TensorData.ToFloat"/>).</summary>
    static readonly DT[] FloatTypes = [DT.Float, DT.Float16, DT.Bfloat16];

    public const string NotConstant = "weight (input B) is not a constant";

    /// <summary>The weight behind <paramref name="name"/>, or null with the reason it cannot be quantized.</summary>
    public static WeightSource? Resolve(GraphIndex index, string name, out string reason)
    {
        reason = "";
        if (index.Constant(name) is { } direct)
        {
            var type = (DT)direct.DataType;
            if (!FloatTypes.Contains(type)) { reason = $"weight is {ElementTypes.Name(direct.DataType)}, not a float type"; return null; }
            return new WeightSource(index.ConstantSource(name)!, direct, type, type, false);
        }
        // Shared weights reach their consumers through Identity chains (exporters deduplicate equal initializers).
        for (int hops = 0; hops < index.Graph.Node.Count && index.Producer.TryGetValue(name, out var identity)
            && identity.OpType == "Identity" && identity.Domain is "" or "ai.onnx" && identity.Input.Count == 1; hops++)
            name = identity.Input[0];
        if (index.Producer.TryGetValue(name, out var cast) && cast.OpType == "Cast" && cast.Domain is "" or "ai.onnx" && cast.Input.Count == 1
            && index.Constant(cast.Input[0]) is { } stored)
        {
            var from = (DT)stored.DataType;
            var to = (DT)(GraphIndex.IntAttr(cast, "to") ?? 0);
            if (FloatTypes.Contains(from) && FloatTypes.Contains(to))
                return new WeightSource(index.ConstantSource(cast.Input[0])!, stored, from, to, true);
            reason = $"weight is a Cast from {ElementTypes.Name((int)from)} to {ElementTypes.Name((int)to)}, not between float types";
            return null;
        }
        reason = NotConstant;
        return null;
    }

    /// <summary>The node's input at <paramref name="slot"/>, or null when the node has no such (non-empty) input.</summary>
    public static string? Input(NodeProto node, int slot) => slot < node.Input.Count && node.Input[slot].Length > 0 ? node.Input[slot] : null;

    /// <summary>The node's first output, or null when it has none.</summary>
    public static string? Output(NodeProto node) => node.Output.Count > 0 && node.Output[0].Length > 0 ? node.Output[0] : null;
}
