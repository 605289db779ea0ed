using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Training;

/// <summary>
/// The op types the training engine runs and differentiates, each with the kernel that does it: the one table that
/// both the check of a model (an op that is not here is refused by name before anything runs) and the creation of
/// the kernels read. A new op is its kernel class and one line here.
/// </summary>
internal static class TrainOps
{
    delegate TrainOp Factory(NodeProto node, int opset);

    static readonly Dictionary<string, Factory> Onnx = new(StringComparer.Ordinal)
    {
        // linear algebra
        ["MatMul"] = (n, _) => new MatMulKernel(n),
        ["Gemm"] = (n, _) => new GemmKernel(n),
        // elementwise, with broadcasting
        ["Add"] = (n, _) => new BinaryOpKernel(n, Broadcast.BinaryOp.Add),
        ["Sub"] = (n, _) => new BinaryOpKernel(n, Broadcast.BinaryOp.Sub),
        ["Mul"] = (n, _) => new BinaryOpKernel(n, Broadcast.BinaryOp.Mul),
        ["Div"] = (n, _) => new BinaryOpKernel(n, Broadcast.BinaryOp.Div),
        ["Pow"] = (n, _) => new PowKernel(n),
        ["Relu"] = (n, _) => new UnaryOpKernel(n, UnaryKind.Relu),
        ["LeakyRelu"] = (n, _) => new UnaryOpKernel(n, UnaryKind.LeakyRelu),
        ["Sigmoid"] = (n, _) => new UnaryOpKernel(n, UnaryKind.Sigmoid),
        ["Tanh"] = (n, _) => new UnaryOpKernel(n, UnaryKind.Tanh),
        ["Erf"] = (n, _) => new UnaryOpKernel(n, UnaryKind.Erf),
        ["Gelu"] = (n, _) => new UnaryOpKernel(n, UnaryKind.Gelu),
        ["Neg"] = (n, _) => new UnaryOpKernel(n, UnaryKind.Neg),
        ["Exp"] = (n, _) => new UnaryOpKernel(n, UnaryKind.Exp),
        ["Sqrt"] = (n, _) => new UnaryOpKernel(n, UnaryKind.Sqrt),
        ["Clip"] = (n, opset) => new ClipKernel(n, false, opset),
        ["HardSigmoid"] = (n, opset) => new ClipKernel(n, true, opset),
        ["Softmax"] = (n, opset) => new SoftmaxKernel(n, false, opset),
        ["LogSoftmax"] = (n, opset) => new SoftmaxKernel(n, true, opset),
        ["Dropout"] = (n, _) => new DropoutKernel(n),
        // convolutions, pooling and normalizations
        ["Conv"] = (n, _) => new ConvKernel(n),
        ["MaxPool"] = (n, _) => new PoolKernel(n, true),
        ["AveragePool"] = (n, _) => new PoolKernel(n, false),
        ["GlobalAveragePool"] = (n, _) => new GlobalAveragePoolKernel(n),
        ["BatchNormalization"] = (n, _) => new BatchNormKernel(n),
        ["LayerNormalization"] = (n, _) => new LayerNormKernel(n),
        ["ReduceMean"] = (n, opset) => new ReduceKernel(n, true, opset),
        ["ReduceSum"] = (n, opset) => new ReduceKernel(n, false, opset),
        // rearranging values
        ["Transpose"] = (n, _) => new TransposeKernel(n),
        ["Concat"] = (n, _) => new ConcatKernel(n),
        ["Slice"] = (n, opset) => new SliceKernel(n, opset),
        ["Gather"] = (n, _) => new GatherKernel(n),
        ["Expand"] = (n, _) => new ExpandKernel(n),
        ["Tile"] = (n, _) => new TileKernel(n),
        ["Flatten"] = (n, opset) => new ReshapeLikeKernel(n, opset),
        ["Reshape"] = (n, opset) => new ReshapeLikeKernel(n, opset),
        ["Identity"] = (n, opset) => new ReshapeLikeKernel(n, opset),
        ["Squeeze"] = (n, opset) => new ReshapeLikeKernel(n, opset),
        ["Unsqueeze"] = (n, opset) => new ReshapeLikeKernel(n, opset),
        // masks
        ["Where"] = (n, _) => new WhereKernel(n),
        ["Trilu"] = (n, _) => new TriluKernel(n),
        ["Equal"] = (n, _) => new LogicKernel(n),
        ["Less"] = (n, _) => new LogicKernel(n),
        ["LessOrEqual"] = (n, _) => new LogicKernel(n),
        ["Greater"] = (n, _) => new LogicKernel(n),
        ["GreaterOrEqual"] = (n, _) => new LogicKernel(n),
        ["Not"] = (n, _) => new LogicKernel(n),
        ["And"] = (n, _) => new LogicKernel(n),
        ["Or"] = (n, _) => new LogicKernel(n),
        ["Xor"] = (n, _) => new LogicKernel(n),
        ["ConstantOfShape"] = (n, _) => new LogicKernel(n),
        // shape arithmetic (no gradient)
        ["Constant"] = (n, _) => new ShapeOpKernel(n),
        ["Shape"] = (n, _) => new ShapeOpKernel(n),
        ["Range"] = (n, _) => new ShapeOpKernel(n),
        ["Cast"] = (n, _) => new ShapeOpKernel(n),
    };

    /// <summary>The patterns <see cref="Fusions"/> runs as one op: not ONNX ops (no model holds them), so not offered as supported.</summary>
    static readonly Dictionary<string, Factory> Fused = new(StringComparer.Ordinal)
    {
        [Fusions.FusedMatMulAdd] = (n, _) => new MatMulKernel(n, bias: true),
        [Fusions.FusedGelu] = (n, _) => new UnaryOpKernel(n, UnaryKind.Gelu),
    };

    /// <summary>ONNX op types (default domain) the engine can train.</summary>
    public static IReadOnlyCollection<string> Supported => Onnx.Keys;

    public static bool Supports(NodeProto node) => node.Domain is "" or "ai.onnx" && Onnx.ContainsKey(node.OpType);

    /// <summary>The kernel of a supported (or fused) node; any other op is refused by name.</summary>
    public static TrainOp Create(NodeProto node, int opset)
    {
        if (node.Domain is "" or "ai.onnx" && (Onnx.TryGetValue(node.OpType, out var factory) || Fused.TryGetValue(node.OpType, out factory)))
            return factory(node, opset);
        throw new EngineException("TrainingOpUnsupported", EngineErrorKind.NotImplemented,
            $"Node '{node.Name}' ({QualifiedName(node)}): the training engine cannot differentiate this op. Supported: {string.Join(", ", Supported.Order(StringComparer.Ordinal))}.") { Target = node.Name };
    }

    /// <summary>The op type with its domain when it is not the default one ("com.microsoft.Attention").</summary>
    public static string QualifiedName(NodeProto node) => (node.Domain is "" or "ai.onnx" ? "" : node.Domain + ".") + node.OpType;
}
