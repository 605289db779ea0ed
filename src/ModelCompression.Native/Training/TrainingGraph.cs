using System.Diagnostics;
using System.Numerics.Tensors;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Training;

/// <summary>
/// An ONNX graph made trainable: reverse-mode differentiation over its nodes, in the graph's topological order.
/// Every float initializer is a parameter (trainable unless frozen); <see cref="Forward"/> runs the graph and keeps
/// the values, <see cref="Backward"/> takes gradients of the outputs and leaves each parameter's gradient in
/// <see cref="TrainingParameter.Grad"/>; <see cref="WriteBack"/> puts the current values into a model proto.
/// </summary>
public sealed partial class TrainingGraph
{
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
    public static IReadOnlyCollection<string> SupportedOps => TrainOps.Supported;

    public static TrainingGraph Load(OnnxModel model, TrainingGraphOptions? options = null) => new(model, options ?? new TrainingGraphOptions());

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
