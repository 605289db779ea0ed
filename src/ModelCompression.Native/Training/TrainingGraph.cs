using System.Diagnostics;
using System.Numerics.Tensors;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Training;

/// <summary>A float initializer of the graph: its current value, its gradient after a backward pass, and whether it trains.</summary>
public sealed class TrainingParameter
{
    internal TrainingParameter(string name, Tensor value, bool trainable)
    {
        Name = name;
        Value = value;
        Grad = new float[value.Length];
        Trainable = trainable;
    }

    public string Name { get; }
    public Tensor Value { get; }
    public float[] Grad { get; }
    /// <summary>False for frozen tensors and for state that is not learned by gradient (BatchNormalization running statistics).</summary>
    public bool Trainable { get; internal set; }
    /// <summary>Whether a gradient reaches it from the outputs.</summary>
    public bool ReceivesGradient { get; internal set; }
    /// <summary>An additive attention mask stored as an initializer (see <see cref="TrainingGraph.IsAdditiveMask"/>): a constant, never trained.</summary>
    public bool IsMask { get; internal set; }
}

/// <summary>Time spent in the nodes of one op type since the graph was loaded (or <see cref="TrainingGraph.ResetTiming"/>).</summary>
public sealed record OpTiming(string OpType, int Nodes, double ForwardSeconds, double BackwardSeconds);

public sealed record TrainingGraphOptions
{
    /// <summary>Initializer names that keep their values.</summary>
    public IReadOnlyCollection<string> Freeze { get; init; } = [];
    /// <summary>Also compute gradients for the graph inputs (tests use it for numerical checks).</summary>
    public bool InputGradients { get; init; }
    /// <summary>Train weights that the exporter stored in Constant nodes (they become initializers).</summary>
    public bool PromoteWeightConstants { get; init; } = true;
    /// <summary>Seed of the random source Dropout draws from.</summary>
    public int Seed { get; init; } = 1;
}

/// <summary>
/// An ONNX graph made trainable: reverse-mode differentiation over its nodes, in the graph's topological order.
/// Every float initializer is a parameter (trainable unless frozen); <see cref="Forward"/> runs the graph and keeps
/// the values, <see cref="Backward"/> takes gradients of the outputs and leaves each parameter's gradient in
/// <see cref="TrainingParameter.Grad"/>; <see cref="WriteBack"/> puts the current values into a model proto.
/// </summary>
public sealed class TrainingGraph
{
    static readonly HashSet<string> Supported = new(StringComparer.Ordinal)
    {
        "MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "Erf", "Neg", "Exp", "Sqrt",
        "Softmax", "LogSoftmax", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization", "Flatten", "Reshape",
        "Transpose", "Concat", "LayerNormalization", "Dropout", "Identity", "Squeeze", "Unsqueeze", "Constant", "Shape", "Gather", "Cast",
        "Clip", "HardSigmoid", "Pow", "ReduceMean", "ReduceSum", "Slice", "Range", "Where", "Expand", "Trilu", "ConstantOfShape",
        "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor",
    };

    readonly TrainOp[] ops;
    readonly int[][] nodeInputs, nodeOutputs;
    readonly List<string> valueNames = [];
    readonly Dictionary<string, int> valueIndex = new(StringComparer.Ordinal);
    readonly Tensor?[] constants;
    readonly bool[] requiresGrad;
    readonly int[] inputIds, outputIds;
    readonly Dictionary<int, TrainingParameter> paramById = [];
    readonly PassContext context = new();
    readonly TensorArena arena = new();
    readonly long[] forwardTicks, backwardTicks;
    Tensor?[]? values;

    public IReadOnlyList<TrainingParameter> Parameters { get; }
    public IReadOnlyList<string> InputNames { get; }
    public IReadOnlyList<string> OutputNames { get; }
    public int Opset { get; }
    /// <summary>Weight Constant nodes turned into initializers (see <see cref="WeightConstants"/>); <see cref="WriteBack"/> does the same to its target.</summary>
    public int PromotedConstants { get; }

    /// <summary>Op types the engine can train, for messages and docs.</summary>
    public static IReadOnlyCollection<string> SupportedOps => Supported;

    TrainingGraph(OnnxModel model, TrainingGraphOptions options)
    {
        if (model.Proto.Graph is null) throw new EngineException("ModelHasNoGraph", EngineErrorKind.InvalidData, $"Model '{model.Name}' has no graph.");
        var working = model.Proto;
        if (options.PromoteWeightConstants)
        {
            var copy = model.Proto.Clone();
            PromotedConstants = WeightConstants.Promote(copy);
            if (PromotedConstants > 0) working = copy;
        }
        var graph = working.Graph;
        Opset = (int)(model.Proto.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 1);
        context.Rng = new Random(options.Seed);

        var unsupported = graph.Node.Where(n => !(n.Domain is "" or "ai.onnx") || !Supported.Contains(n.OpType))
            .Select(n => (n.Domain is "" or "ai.onnx" ? "" : n.Domain + ".") + n.OpType).Distinct().Order(StringComparer.Ordinal).ToList();
        if (unsupported.Count > 0)
            throw new EngineException("TrainingOpUnsupported", EngineErrorKind.NotImplemented,
                $"Model '{model.Name}' has ops the training engine cannot differentiate: {string.Join(", ", unsupported)}. Supported: {string.Join(", ", Supported.Order(StringComparer.Ordinal))}.") { Target = model.SourcePath };

        int Id(string name)
        {
            if (!valueIndex.TryGetValue(name, out int id)) { id = valueNames.Count; valueNames.Add(name); valueIndex[name] = id; }
            return id;
        }

        var freeze = new HashSet<string>(options.Freeze, StringComparer.Ordinal);
        var unknownFrozen = freeze.Where(f => !graph.Initializer.Any(t => t.Name == f)).ToList();
        if (unknownFrozen.Count > 0)
            throw new EngineException("FreezeTensorNotFound", EngineErrorKind.InvalidArgument,
                $"Model '{model.Name}' has no initializer named {string.Join(", ", unknownFrozen.Select(n => "'" + n + "'"))} to freeze.");
        var parameters = new List<TrainingParameter>();
        var initValues = new Dictionary<int, Tensor>();
        foreach (var t in graph.Initializer)
        {
            int id = Id(t.Name);
            var value = ShapeOpKernel.FromProto(t);
            initValues[id] = value;
            if ((DT)t.DataType == DT.Float)
            {
                bool mask = IsAdditiveMask(value.Data);
                var p = new TrainingParameter(t.Name, value, !freeze.Contains(t.Name) && !mask) { IsMask = mask };
                parameters.Add(p);
                paramById[id] = p;
            }
        }
        var initNames = graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        InputNames = graph.Input.Where(i => !initNames.Contains(i.Name)).Select(i => i.Name).ToList();
        inputIds = InputNames.Select(Id).ToArray();
        OutputNames = graph.Output.Select(o => o.Name).ToList();

        // Nodes in dependency order (exporters already sort them; sort anyway so a shuffled graph still trains).
        var available = new HashSet<string>(initNames.Concat(InputNames).Append(""), StringComparer.Ordinal);
        var pending = graph.Node.ToList();
        var ordered = new List<NodeProto>(pending.Count);
        while (pending.Count > 0)
        {
            int before = ordered.Count;
            for (int i = 0; i < pending.Count; i++)
            {
                var n = pending[i];
                if (!n.Input.All(available.Contains)) continue;
                ordered.Add(n);
                foreach (var o in n.Output) available.Add(o);
                pending.RemoveAt(i--);
            }
            if (ordered.Count == before)
            {
                var n = pending[0];
                throw new EngineException("TrainingGraphInvalid", EngineErrorKind.InvalidData,
                    $"Node '{n.Name}' ({n.OpType}) reads {string.Join(", ", n.Input.Where(i => !available.Contains(i)).Select(i => "'" + i + "'"))}, which nothing produces.");
            }
        }

        ordered = Fusions.Apply(ordered, graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal), OutputNames.ToList());
        ops = new TrainOp[ordered.Count];
        nodeInputs = new int[ordered.Count][];
        nodeOutputs = new int[ordered.Count][];
        for (int i = 0; i < ordered.Count; i++)
        {
            var n = ordered[i];
            ops[i] = Create(n);
            ops[i].Arena = arena;
            nodeInputs[i] = n.Input.Select(s => s.Length == 0 ? -1 : Id(s)).ToArray();
            nodeOutputs[i] = n.Output.Select(s => s.Length == 0 ? -1 : Id(s)).ToArray();
        }
        foreach (var o in OutputNames)
            if (!valueIndex.ContainsKey(o))
                throw new EngineException("TrainingGraphInvalid", EngineErrorKind.InvalidData, $"Graph output '{o}' is produced by no node.");
        outputIds = OutputNames.Select(Id).ToArray();

        constants = new Tensor?[valueNames.Count];
        foreach (var (id, v) in initValues) constants[id] = v;

        requiresGrad = new bool[valueNames.Count];
        foreach (var (id, p) in paramById) requiresGrad[id] = p.Trainable;
        if (options.InputGradients) foreach (int id in inputIds) requiresGrad[id] = true;
        for (int i = 0; i < ops.Length; i++)
        {
            if (!ops[i].Differentiable) continue;
            bool any = nodeInputs[i].Where((id, k) => id >= 0 && requiresGrad[id] && ops[i].InputDifferentiable(k)).Any();
            if (any) foreach (int o in nodeOutputs[i]) if (o >= 0) requiresGrad[o] = true;
        }
        Parameters = parameters;
        forwardTicks = new long[ops.Length];
        backwardTicks = new long[ops.Length];
        MarkReachable();
    }

    /// <summary>
    /// Whether a float tensor is an additive mask rather than a weight: it holds exactly two values, 0 and a large
    /// negative one (at most -1e4, or -infinity), both present. Exporters store causal attention masks this way
    /// (PyTorch buffers become initializers); training one would turn it into a learned attention bias.
    /// </summary>
    public static bool IsAdditiveMask(ReadOnlySpan<float> values)
    {
        if (values.Length < 4) return false;
        bool zero = false, negative = false;
        float other = float.NaN;
        foreach (float v in values)
        {
            if (v == 0f) { zero = true; continue; }
            if (!(v <= -1e4f)) return false;
            if (negative && v != other) return false;
            negative = true; other = v;
        }
        return zero && negative;
    }

    /// <summary>Marks which parameters a gradient can reach from the outputs.</summary>
    void MarkReachable()
    {
        var reach = new bool[valueNames.Count];
        foreach (int o in outputIds) reach[o] = true;
        for (int i = ops.Length - 1; i >= 0; i--)
        {
            if (!ops[i].Differentiable || !nodeOutputs[i].Any(o => o >= 0 && reach[o])) continue;
            for (int k = 0; k < nodeInputs[i].Length; k++)
                if (nodeInputs[i][k] >= 0 && ops[i].InputDifferentiable(k)) reach[nodeInputs[i][k]] = true;
        }
        foreach (var (id, p) in paramById)
        {
            p.ReceivesGradient = reach[id] && requiresGrad[id];
            if (!reach[id]) p.Trainable = false;   // running statistics, shape constants stored as float, unused tensors
        }
    }

    public static TrainingGraph Load(OnnxModel model, TrainingGraphOptions? options = null) => new(model, options ?? new TrainingGraphOptions());

    TrainOp Create(NodeProto n) => n.OpType switch
    {
        "MatMul" => new MatMulKernel(n),
        Fusions.FusedMatMulAdd => new MatMulKernel(n, bias: true),
        Fusions.FusedGelu => new UnaryOpKernel(n, UnaryKind.Gelu),
        "Gemm" => new GemmKernel(n),
        "Add" => new BinaryOpKernel(n, Broadcast.BinaryOp.Add),
        "Sub" => new BinaryOpKernel(n, Broadcast.BinaryOp.Sub),
        "Mul" => new BinaryOpKernel(n, Broadcast.BinaryOp.Mul),
        "Div" => new BinaryOpKernel(n, Broadcast.BinaryOp.Div),
        "Relu" => new UnaryOpKernel(n, UnaryKind.Relu),
        "LeakyRelu" => new UnaryOpKernel(n, UnaryKind.LeakyRelu),
        "Sigmoid" => new UnaryOpKernel(n, UnaryKind.Sigmoid),
        "Tanh" => new UnaryOpKernel(n, UnaryKind.Tanh),
        "Erf" => new UnaryOpKernel(n, UnaryKind.Erf),
        "Gelu" => new UnaryOpKernel(n, UnaryKind.Gelu),
        "Neg" => new UnaryOpKernel(n, UnaryKind.Neg),
        "Exp" => new UnaryOpKernel(n, UnaryKind.Exp),
        "Sqrt" => new UnaryOpKernel(n, UnaryKind.Sqrt),
        "Softmax" => new SoftmaxKernel(n, false, Opset),
        "LogSoftmax" => new SoftmaxKernel(n, true, Opset),
        "Conv" => new ConvKernel(n),
        "MaxPool" => new PoolKernel(n, true),
        "AveragePool" => new PoolKernel(n, false),
        "GlobalAveragePool" => new GlobalAveragePoolKernel(n),
        "BatchNormalization" => new BatchNormKernel(n),
        "LayerNormalization" => new LayerNormKernel(n),
        "Dropout" => new DropoutKernel(n),
        "Transpose" => new TransposeKernel(n),
        "Concat" => new ConcatKernel(n),
        "Flatten" or "Reshape" or "Identity" or "Squeeze" or "Unsqueeze" => new ReshapeLikeKernel(n, Opset),
        "Clip" => new ClipKernel(n, false, Opset),
        "HardSigmoid" => new ClipKernel(n, true, Opset),
        "Pow" => new PowKernel(n),
        "ReduceMean" => new ReduceKernel(n, true, Opset),
        "ReduceSum" => new ReduceKernel(n, false, Opset),
        "Slice" => new SliceKernel(n, Opset),
        "Gather" => new GatherKernel(n),
        "Where" => new WhereKernel(n),
        "Expand" => new ExpandKernel(n),
        "Trilu" => new TriluKernel(n),
        "ConstantOfShape" or "Equal" or "Less" or "LessOrEqual" or "Greater" or "GreaterOrEqual" or "Not" or "And" or "Or" or "Xor" => new LogicKernel(n),
        _ => new ShapeOpKernel(n),
    };

    /// <summary>
    /// Runs the graph. Training mode uses batch statistics (and updates running ones) and active dropout. The outputs
    /// (and every value of the pass) live in buffers that the next call reuses: read or copy them before calling again.
    /// </summary>
    public IReadOnlyList<Tensor> Forward(IReadOnlyDictionary<string, Tensor> inputs, bool training)
    {
        arena.ReturnAll();
        lastGrads = null;
        var v = (Tensor?[])constants.Clone();
        foreach (var name in InputNames)
        {
            if (!inputs.TryGetValue(name, out var t))
                throw new EngineException("TrainingInputMissing", EngineErrorKind.InvalidArgument, $"No value for graph input '{name}'.");
            v[valueIndex[name]] = t;
        }
        context.Training = training;
        for (int i = 0; i < ops.Length; i++)
        {
            var ins = new Tensor?[nodeInputs[i].Length];
            for (int k = 0; k < ins.Length; k++) ins[k] = nodeInputs[i][k] < 0 ? null : v[nodeInputs[i][k]];
            Tensor[] outs;
            long t0 = Stopwatch.GetTimestamp();
            try { outs = ops[i].Forward(ins, context); }
            catch (ArgumentException e)
            {
                throw new EngineException("TrainingShapeMismatch", EngineErrorKind.InvalidData, $"Node '{ops[i].Name}' ({ops[i].Node.OpType}): {e.Message}", e);
            }
            forwardTicks[i] += Stopwatch.GetTimestamp() - t0;
            for (int k = 0; k < nodeOutputs[i].Length && k < outs.Length; k++)
                if (nodeOutputs[i][k] >= 0) v[nodeOutputs[i][k]] = outs[k];
        }
        values = v;
        return outputIds.Select(id => v[id]!).ToList();
    }

    /// <summary>
    /// Back-propagates the given output gradients (by output name; outputs not given get none) through the last
    /// forward pass, leaving each parameter's gradient in <see cref="TrainingParameter.Grad"/> (zero when none reaches it).
    /// </summary>
    public void Backward(IReadOnlyDictionary<string, Tensor> outputGradients)
    {
        var v = values ?? throw new InvalidOperationException("Backward needs a forward pass first.");
        var grads = new Tensor?[valueNames.Count];
        foreach (var (name, g) in outputGradients)
        {
            int id = valueIndex.TryGetValue(name, out int x) && outputIds.Contains(x) ? x
                : throw new EngineException("TrainingOutputUnknown", EngineErrorKind.InvalidArgument, $"'{name}' is not a graph output.");
            if (g.Length != v[id]!.Length) throw new EngineException("TrainingShapeMismatch", EngineErrorKind.InvalidArgument, $"Gradient for '{name}' has {g.Length} values; the output has {v[id]!.Length}.");
            grads[id] = g;
        }
        for (int i = ops.Length - 1; i >= 0; i--)
        {
            var op = ops[i];
            if (!op.Differentiable) continue;
            int out0 = nodeOutputs[i][0];
            if (out0 < 0 || grads[out0] is not { } dy) continue;
            var inIds = nodeInputs[i];
            var need = new bool[inIds.Length];
            bool any = false;
            for (int k = 0; k < inIds.Length; k++) { need[k] = inIds[k] >= 0 && requiresGrad[inIds[k]] && op.InputDifferentiable(k); any |= need[k]; }
            if (!any) continue;
            var ins = new Tensor?[inIds.Length];
            for (int k = 0; k < ins.Length; k++) ins[k] = inIds[k] < 0 ? null : v[inIds[k]];
            var outs = nodeOutputs[i].Select(o => o < 0 ? Tensor.Zeros([0]) : v[o]!).ToArray();
            var dx = new Tensor?[inIds.Length];
            long t0 = Stopwatch.GetTimestamp();
            op.Backward(ins, outs, dy, need, dx);
            for (int k = 0; k < inIds.Length; k++)
            {
                if (!need[k] || dx[k] is not { } g) continue;
                int id = inIds[k];
                if (grads[id] is { } prior)
                {
                    // a value read by several nodes: its gradients add up (into a new buffer: either may share storage)
                    var sum = arena.Rent(prior.Length);
                    TensorPrimitives.Add(prior.Data, g.Data, sum);
                    grads[id] = Tensor.Float(prior.Shape, sum);
                    Release(grads, prior.Data);
                    Release(grads, g.Data);
                }
                else grads[id] = g;
            }
            if (!OutputNamesContain(out0))
            {
                grads[out0] = null;
                Release(grads, dy.Data);
            }
            backwardTicks[i] += Stopwatch.GetTimestamp() - t0;
        }
        foreach (var (id, p) in paramById)
        {
            if (grads[id] is { } g) g.Data.AsSpan().CopyTo(p.Grad);
            else Array.Clear(p.Grad);
        }
        lastGrads = grads;
    }

    Tensor?[]? lastGrads;
    bool OutputNamesContain(int id) => Array.IndexOf(outputIds, id) >= 0;

    /// <summary>Gives a gradient's buffer back to the arena once no gradient still held shares it (Reshape passes buffers through).</summary>
    void Release(Tensor?[] grads, float[] data)
    {
        if (!arena.Owns(data)) return;
        foreach (var g in grads) if (g is not null && ReferenceEquals(g.Data, data)) return;
        arena.Return(data);
    }

    /// <summary>Seconds spent per op type in forward and backward passes, slowest first (for profiling).</summary>
    public IReadOnlyList<OpTiming> TimingByOpType()
    {
        double f = Stopwatch.Frequency;
        return Enumerable.Range(0, ops.Length).GroupBy(i => ops[i].Node.OpType)
            .Select(g => new OpTiming(g.Key, g.Count(), g.Sum(i => forwardTicks[i]) / f, g.Sum(i => backwardTicks[i]) / f))
            .OrderByDescending(t => t.ForwardSeconds + t.BackwardSeconds).ToList();
    }

    public void ResetTiming()
    {
        Array.Clear(forwardTicks);
        Array.Clear(backwardTicks);
    }

    /// <summary>Bytes the graph keeps for activations and gradients between passes.</summary>
    public long WorkspaceBytes => arena.Bytes;

    /// <summary>Gradient of a graph input after <see cref="Backward"/> (needs <see cref="TrainingGraphOptions.InputGradients"/>).</summary>
    public Tensor? InputGradient(string name) => lastGrads is not null && valueIndex.TryGetValue(name, out int id) ? lastGrads[id] : null;

    /// <summary>Copies of the parameters' current values, by name (for keeping the best weights).</summary>
    public Dictionary<string, float[]> Snapshot() => Parameters.ToDictionary(p => p.Name, p => (float[])p.Value.Data.Clone(), StringComparer.Ordinal);

    public void Restore(IReadOnlyDictionary<string, float[]> snapshot)
    {
        foreach (var p in Parameters)
            if (snapshot.TryGetValue(p.Name, out var data)) data.AsSpan().CopyTo(p.Value.Data);
    }

    /// <summary>Replaces the float initializers of <paramref name="proto"/> with the current values (trained weights and updated running statistics).</summary>
    public int WriteBack(ModelProto proto)
    {
        if (PromotedConstants > 0) WeightConstants.Promote(proto);
        var byName = Parameters.ToDictionary(p => p.Name, StringComparer.Ordinal);
        int written = 0;
        var inits = proto.Graph.Initializer;
        for (int i = 0; i < inits.Count; i++)
        {
            if (!byName.TryGetValue(inits[i].Name, out var p) || (DT)inits[i].DataType != DT.Float) continue;
            var replacement = TensorData.FromFloat(inits[i].Name, inits[i].Dims.ToArray(), p.Value.Data);
            replacement.DocString = inits[i].DocString;
            inits[i] = replacement;
            written++;
        }
        return written;
    }
}
