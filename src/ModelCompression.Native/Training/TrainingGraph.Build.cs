using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Training;

/// <summary>Loading: from a model to the plan that <see cref="Forward"/> and <see cref="Backward"/> run.</summary>
public sealed partial class TrainingGraph
{
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
        RefuseUnsupportedOps(model, graph);

        var (parameters, initValues) = LoadInitializers(model, graph, options.Freeze);
        var initNames = graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        InputNames = graph.Input.Where(i => !initNames.Contains(i.Name)).Select(i => i.Name).ToList();
        inputIds = InputNames.Select(Id).ToArray();
        OutputNames = graph.Output.Select(o => o.Name).ToList();

        var ordered = DependencyOrder(graph.Node, initNames.Concat(InputNames));
        ordered = Fusions.Apply(ordered, graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal), OutputNames.ToList());
        ops = new TrainOp[ordered.Count];
        nodeInputs = new int[ordered.Count][];
        nodeOutputs = new int[ordered.Count][];
        for (int i = 0; i < ordered.Count; i++)
        {
            var n = ordered[i];
            ops[i] = TrainOps.Create(n, Opset);
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
        requiresGrad = RequiresGradient(options.InputGradients);
        Parameters = parameters;
        forwardTicks = new long[ops.Length];
        backwardTicks = new long[ops.Length];
        MarkReachable();
    }

    /// <summary>The id of a value by name, given on first sight.</summary>
    int Id(string name)
    {
        if (!valueIndex.TryGetValue(name, out int id)) { id = valueNames.Count; valueNames.Add(name); valueIndex[name] = id; }
        return id;
    }

    static void RefuseUnsupportedOps(OnnxModel model, GraphProto graph)
    {
        var unsupported = graph.Node.Where(n => !TrainOps.Supports(n)).Select(TrainOps.QualifiedName).Distinct().Order(StringComparer.Ordinal).ToList();
        if (unsupported.Count > 0)
            throw new EngineException("TrainingOpUnsupported", EngineErrorKind.NotImplemented,
                $"Model '{model.Name}' has ops the training engine cannot differentiate: {string.Join(", ", unsupported)}. Supported: {string.Join(", ", TrainOps.Supported.Order(StringComparer.Ordinal))}.") { Target = model.SourcePath };
    }

    /// <summary>Every initializer's value; the float ones become parameters (trainable unless frozen or an additive mask).</summary>
    (List<TrainingParameter> Parameters, Dictionary<int, Tensor> Values) LoadInitializers(OnnxModel model, GraphProto graph, IReadOnlyCollection<string> frozen)
    {
        var freeze = new HashSet<string>(frozen, StringComparer.Ordinal);
        var unknownFrozen = freeze.Where(f => !graph.Initializer.Any(t => t.Name == f)).ToList();
        if (unknownFrozen.Count > 0)
            throw new EngineException("FreezeTensorNotFound", EngineErrorKind.InvalidArgument,
                $"Model '{model.Name}' has no initializer named {string.Join(", ", unknownFrozen.Select(n => "'" + n + "'"))} to freeze.");
        var parameters = new List<TrainingParameter>();
        var values = new Dictionary<int, Tensor>();
        foreach (var t in graph.Initializer)
        {
            int id = Id(t.Name);
            var value = ShapeOpKernel.FromProto(t);
            values[id] = value;
            if ((DT)t.DataType != DT.Float) continue;
            bool mask = IsAdditiveMask(value.Data);
            var p = new TrainingParameter(t.Name, value, !freeze.Contains(t.Name) && !mask) { IsMask = mask };
            parameters.Add(p);
            paramById[id] = p;
        }
        MarkRotaryTables(parameters);
        return (parameters, values);
    }

    /// <summary>Finds the cos and sin tables of rotary position embeddings among the parameters and keeps them constant.</summary>
    static void MarkRotaryTables(List<TrainingParameter> parameters)
    {
        static bool FirstRowIs(TrainingParameter p, float v) =>
            p.Value.Rank == 2 && p.Value.Shape[0] > 1 && p.Value.Data.AsSpan(0, p.Value.Shape[1]).IndexOfAnyExcept(v) < 0;
        foreach (var cos in parameters.Where(p => FirstRowIs(p, 1f)).ToList())
            foreach (var sin in parameters.Where(p => p != cos && p.Value.Shape.SequenceEqual(cos.Value.Shape) && FirstRowIs(p, 0f)))
            {
                if (!IsRotaryPair(cos.Value.Data, sin.Value.Data)) continue;
                cos.IsRotaryTable = sin.IsRotaryTable = true;
                cos.Trainable = sin.Trainable = false;
            }
    }

    /// <summary>
    /// Whether two float tables of one shape [positions, width] are the cos and sin of rotary position embeddings: the
    /// first row (position 0) all 1 and all 0, and cos² + sin² = 1 everywhere. Exporters store these caches as
    /// initializers (PyTorch buffers); they are rotations by position, not weights: training them would make them no
    /// rotations at all, and only at the positions the training windows reach.
    /// </summary>
    public static bool IsRotaryPair(ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        if (cos.Length != sin.Length || cos.Length < 2 || cos[0] != 1f || sin[0] != 0f) return false;
        for (int i = 0; i < cos.Length; i++)
            if (!(Math.Abs((double)cos[i] * cos[i] + (double)sin[i] * sin[i] - 1) <= 1e-4)) return false;
        return true;
    }

    /// <summary>Nodes in dependency order (exporters already sort them; sort anyway so a shuffled graph still trains).</summary>
    static List<NodeProto> DependencyOrder(IEnumerable<NodeProto> nodes, IEnumerable<string> given)
    {
        var available = new HashSet<string>(given.Append(""), StringComparer.Ordinal);
        var pending = nodes.ToList();
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
        return ordered;
    }

    /// <summary>Which values need a gradient: trainable parameters (and inputs, when asked), and what a differentiable op computes from them.</summary>
    bool[] RequiresGradient(bool inputs)
    {
        var requires = new bool[valueNames.Count];
        foreach (var (id, p) in paramById) requires[id] = p.Trainable;
        if (inputs) foreach (int id in inputIds) requires[id] = true;
        for (int i = 0; i < ops.Length; i++)
        {
            if (!ops[i].Differentiable) continue;
            bool any = nodeInputs[i].Where((id, k) => id >= 0 && requires[id] && ops[i].InputDifferentiable(k)).Any();
            if (any) foreach (int o in nodeOutputs[i]) if (o >= 0) requires[o] = true;
        }
        return requires;
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
}
