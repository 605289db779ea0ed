using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Raises a model's default-domain opset (9..12) to 13, where QuantizeLinear/DequantizeLinear take a per-channel axis
/// and ONNX Runtime's QDQ fusions produce valid operators. Operators whose signature changed on the way are rewritten,
/// one upgrade per operator (<see cref="Upgrades"/>): attributes that became inputs (Slice, Clip, Squeeze, Unsqueeze,
/// ReduceSum, Split; Dropout's ratio); operators whose meaning changed keep it (a pre-13 Softmax over a non-last axis
/// becomes Flatten → Softmax → Reshape) and anything else that cannot be carried over is refused with its name.
/// </summary>
internal static class OpsetUpgrade
{
    /// <summary>Operators that changed before 13 and are not converted: (name, opset from which they are unchanged up to 13).</summary>
    static readonly Dictionary<string, long> Unsupported = new(StringComparer.Ordinal)
    {
        ["Upsample"] = long.MaxValue, ["Scatter"] = long.MaxValue, ["Pad"] = 11, ["TopK"] = 10, ["Resize"] = 11,
    };

    static readonly Dictionary<string, Action<Upgrade, NodeProto>> Upgrades = new(StringComparer.Ordinal)
    {
        ["Slice"] = SliceInputs,
        ["Clip"] = ClipInputs,
        ["Squeeze"] = AxesInput, ["Unsqueeze"] = AxesInput, ["ReduceSum"] = AxesInput,
        ["Split"] = (u, n) => { var split = Ints(n, "split"); RemoveAttrs(n, "split"); if (split is not null) n.Input.Add(u.Const(n, "split", split)); },
        ["Dropout"] = (_, n) => RemoveAttrs(n, "ratio", "is_test"),
        ["Softmax"] = SoftmaxAxis, ["LogSoftmax"] = SoftmaxAxis, ["Hardmax"] = SoftmaxAxis,
    };

    /// <summary>What the upgrades share: the original opset, the graph index, value ranks, and softmaxes to flatten.</summary>
    sealed class Upgrade(long from, GraphIndex index, Dictionary<string, int> ranks)
    {
        public long From { get; } = from;
        public GraphIndex Index { get; } = index;
        public Dictionary<string, int> Ranks { get; } = ranks;
        public List<NodeProto> Flattened { get; } = [];

        public string Const(NodeProto n, string what, long[] values) =>
            Index.AddInitializer(TensorData.FromInt64(Index.Fresh((n.Name.Length > 0 ? n.Name : n.OpType) + "_" + what), [values.Length], values)).Name;
    }

    public static void To13(ModelProto model, string modelName)
    {
        var op = model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx");
        long from = op?.Version ?? 1;
        if (from >= 13) return;
        if (from < 9)
            throw Refuse($"model '{modelName}' has opset {from}; raising opsets below 9 is not supported");
        var u = new Upgrade(from, new GraphIndex(model), ValueTypes.InferWithRanks(model, modelName).Ranks);
        foreach (var n in model.Graph.Node)
        {
            if (n.Domain is not ("" or "ai.onnx")) continue;
            if (Unsupported.TryGetValue(n.OpType, out long since) && from < since)
                throw Refuse($"{n.OpType} '{n.Name}' changed between opset {from} and 13 and is not converted");
            if (Upgrades.TryGetValue(n.OpType, out var upgrade)) upgrade(u, n);
        }
        foreach (var n in u.Flattened) FlattenSoftmax(model.Graph, u.Index, n);
        op!.Version = 13;
        if (model.IrVersion < 7) model.IrVersion = 7;
    }

    static void SliceInputs(Upgrade u, NodeProto n)
    {
        if (u.From >= 10) return;
        // Opset 1-9 Slice requires starts and ends; a node without them is invalid and ONNX Runtime would refuse it.
        var starts = Ints(n, "starts") ?? throw Refuse($"Slice node '{n.Name}' has no 'starts'");
        var ends = Ints(n, "ends") ?? throw Refuse($"Slice node '{n.Name}' has no 'ends'");
        var axes = Ints(n, "axes");
        RemoveAttrs(n, "starts", "ends", "axes");
        n.Input.Add(u.Const(n, "starts", starts));
        n.Input.Add(u.Const(n, "ends", ends));
        if (axes is not null) n.Input.Add(u.Const(n, "axes", axes));
    }

    static void ClipInputs(Upgrade u, NodeProto n)
    {
        if (u.From >= 11) return;
        float? min = FloatAttr(n, "min"), max = FloatAttr(n, "max");
        RemoveAttrs(n, "min", "max");
        n.Input.Add(min is { } a ? u.Index.AddInitializer(Scalar(u.Index.Fresh(n.Name + "_min"), a)).Name : "");
        if (max is { } b) n.Input.Add(u.Index.AddInitializer(Scalar(u.Index.Fresh(n.Name + "_max"), b)).Name);
    }

    static void AxesInput(Upgrade u, NodeProto n)
    {
        var axes = Ints(n, "axes");
        RemoveAttrs(n, "axes");
        if (axes is not null && n.Input.Count < 2) n.Input.Add(u.Const(n, "axes", axes));
    }

    static void SoftmaxAxis(Upgrade u, NodeProto n)
    {
        long axis = IntAttr(n, "axis") ?? 1;
        bool last = axis == -1 || (u.Ranks.TryGetValue(n.Input[0], out int rank) && (axis == rank - 1 || axis + rank == rank - 1));
        if (!last) u.Flattened.Add(n);
    }

    /// <summary>Pre-13 softmax over a non-last axis normalizes over all axes from `axis` on: Flatten to 2-D, softmax the last axis, reshape back.</summary>
    static void FlattenSoftmax(GraphProto graph, GraphIndex index, NodeProto n)
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

    static long[]? Ints(NodeProto n, string name) => n.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.Ints.ToArray() : null;

    static void RemoveAttrs(NodeProto n, params string[] names)
    {
        for (int i = n.Attribute.Count - 1; i >= 0; i--) if (names.Contains(n.Attribute[i].Name)) n.Attribute.RemoveAt(i);
    }

    static EngineException Refuse(string why) =>
        new("QuantizationOpsetTooOld", EngineErrorKind.NotImplemented, $"Static quantization needs opset 13 (per-channel QuantizeLinear/DequantizeLinear), and the model cannot be raised to it: {why}.");
}
