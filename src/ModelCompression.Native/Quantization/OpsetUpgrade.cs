using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Raises a model's default-domain opset (9..12) to 13, where QuantizeLinear/DequantizeLinear take a per-channel axis
/// and ONNX Runtime's QDQ fusions produce valid operators. Operators whose signature changed on the way are rewritten
/// (attributes that became inputs: Slice, Clip, Squeeze, Unsqueeze, ReduceSum, Split; Dropout's ratio); operators whose
/// meaning changed keep it (a pre-13 Softmax over a non-last axis becomes Flatten → Softmax → Reshape) and anything else that
/// cannot be carried over is refused with the operator's name.
/// </summary>
internal static class OpsetUpgrade
{
    static readonly string[] Unsupported = ["Upsample", "Scatter", "Pad", "TopK", "Resize", "BatchNormalization_v6"];

    public static void To13(ModelProto model, string modelName)
    {
        var op = model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx");
        long from = op?.Version ?? 1;
        if (from >= 13) return;
        if (from < 9)
            throw Refuse($"model '{modelName}' has opset {from}; raising opsets below 9 is not supported");
        var graph = model.Graph;
        var index = new GraphIndex(model);
        var ranks = ValueTypes.InferWithRanks(model, modelName).Ranks;
        var flattened = new List<NodeProto>();
        foreach (var n in graph.Node)
        {
            if (n.Domain is not ("" or "ai.onnx")) continue;
            switch (n.OpType)
            {
                case "Slice" when from < 10:
                    {
                        // Opset 1-9 Slice requires starts and ends; a node without them is invalid and ONNX Runtime would refuse it.
                        var starts = Ints(n, "starts") ?? throw Refuse($"Slice node '{n.Name}' has no 'starts'");
                        var ends = Ints(n, "ends") ?? throw Refuse($"Slice node '{n.Name}' has no 'ends'");
                        var axes = Ints(n, "axes");
                        RemoveAttrs(n, "starts", "ends", "axes");
                        n.Input.Add(Const(n, "starts", starts));
                        n.Input.Add(Const(n, "ends", ends));
                        if (axes is not null) n.Input.Add(Const(n, "axes", axes));
                        break;
                    }
                case "Clip" when from < 11:
                    {
                        float? min = FloatAttr(n, "min"), max = FloatAttr(n, "max");
                        RemoveAttrs(n, "min", "max");
                        n.Input.Add(min is { } a ? index.AddInitializer(Scalar(index.Fresh(n.Name + "_min"), a)).Name : "");
                        if (max is { } b) n.Input.Add(index.AddInitializer(Scalar(index.Fresh(n.Name + "_max"), b)).Name);
                        break;
                    }
                case "Squeeze" or "Unsqueeze" or "ReduceSum":
                    {
                        var axes = Ints(n, "axes");
                        RemoveAttrs(n, "axes");
                        if (axes is not null) { if (n.Input.Count < 2) n.Input.Add(Const(n, "axes", axes)); }
                        break;
                    }
                case "Split":
                    {
                        var split = Ints(n, "split");
                        RemoveAttrs(n, "split");
                        if (split is not null) n.Input.Add(Const(n, "split", split));
                        break;
                    }
                case "Dropout":
                    RemoveAttrs(n, "ratio", "is_test");
                    break;
                case "Softmax" or "LogSoftmax" or "Hardmax":
                    {
                        long axis = IntAttr(n, "axis") ?? 1;
                        bool last = axis == -1 || (ranks.TryGetValue(n.Input[0], out int rank) && (axis == rank - 1 || axis + rank == rank - 1));
                        if (!last) flattened.Add(n);
                        break;
                    }
                case var t when Unsupported.Contains(t) && !(t == "Pad" && from >= 11) && !(t == "TopK" && from >= 10) && !(t == "Resize" && from >= 11):
                    throw Refuse($"{t} '{n.Name}' changed between opset {from} and 13 and is not converted");
            }
        }
        // Pre-13 softmax over a non-last axis normalizes over all axes from `axis` on: Flatten to 2-D, softmax the last axis, reshape back.
        foreach (var n in flattened)
        {
            long axis = IntAttr(n, "axis") ?? 1;
            string x = n.Input[0], y = n.Output[0];
            string flat = index.Fresh(y + "_flat"), soft = index.Fresh(y + "_flat_softmax"), shape = index.Fresh(y + "_shape");
            var flatten = Node("Flatten", index.Fresh(n.Name + "_Flatten"), [x], [flat], "", GraphBuilder.Attr("axis", axis));
            var shapeNode = Node("Shape", index.Fresh(n.Name + "_Shape"), [x], [shape]);
            var reshape = Node("Reshape", index.Fresh(n.Name + "_Reshape"), [soft, shape], [y]);
            RemoveAttrs(n, "axis");
            n.Attribute.Add(GraphBuilder.Attr("axis", -1L));
            n.Input[0] = flat;
            n.Output[0] = soft;
            int at = graph.Node.IndexOf(n);
            graph.Node.Insert(at, shapeNode);
            graph.Node.Insert(at, flatten);
            graph.Node.Insert(at + 3, reshape);
        }
        op!.Version = 13;
        if (model.IrVersion < 7) model.IrVersion = 7;

        string Const(NodeProto n, string what, long[] values) =>
            index.AddInitializer(TensorData.FromInt64(index.Fresh((n.Name.Length > 0 ? n.Name : n.OpType) + "_" + what), [values.Length], values)).Name;
    }

    static long[]? Ints(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.Ints.ToArray() : null;

    static void RemoveAttrs(NodeProto n, params string[] names)
    {
        for (int i = n.Attribute.Count - 1; i >= 0; i--) if (names.Contains(n.Attribute[i].Name)) n.Attribute.RemoveAt(i);
    }

    static EngineException Refuse(string why) =>
        new("QuantizationOpsetTooOld", EngineErrorKind.NotImplemented, $"Static quantization needs opset 13 (per-channel QuantizeLinear/DequantizeLinear), and the model cannot be raised to it: {why}.");
}
