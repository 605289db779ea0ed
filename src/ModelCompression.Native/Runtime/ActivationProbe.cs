using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Runtime;

/// <summary>A probed tensor of one batch: its value and the batch it came from (inputs, labels, fraction of the data done).</summary>
public readonly record struct ProbedTensor(string Name, NamedArray Value, InputBatch Batch);

/// <summary>
/// The one way the engine runs a model over data and looks at its inner tensors (calibration ranges, GPTQ's Hessians,
/// activation scores for pruning, block similarity, normalization refits). A copy of the model exposes the wanted
/// tensors as extra outputs and one ONNX Runtime session runs it batch by batch. One policy for all of them:
/// <list type="bullet">
/// <item>graph optimisation at Basic (constant folding and dead-node removal; no fusions, so every exposed tensor is
/// computed as the graph states it);</item>
/// <item>data bound and checked by <see cref="ModelInputs"/> before the first run;</item>
/// <item>cancellation checked per run and reaching into ONNX Runtime;</item>
/// <item>memory: a batch's tensors are fetched in slices whose activations stay within <see cref="MemoryBudget"/>
/// (sizes learned from the runs), each slice handed to the caller and dropped before the next, so a model whose
/// wanted activations do not fit in memory together is split here, not by each caller. Tensors a caller groups are
/// fetched in the same slice (a block's input and output).</item>
/// </list>
/// Graph inputs may be wanted too: they come from the batch itself.
/// </summary>
public sealed class ActivationProbe : IDisposable
{
    /// <summary>Bytes of fetched activations one run may hold (the first slice of a first batch is one group: sizes are unknown until seen).</summary>
    public static long MemoryBudget { get; set; } = 1L << 30;

    readonly ModelSession session;
    readonly HashSet<string> graphInputs;
    readonly Dictionary<string, long> bytesPerRow = new(StringComparer.Ordinal);

    public ActivationProbe(OnnxModel model, IEnumerable<string> tensors)
    {
        Model = model;
        graphInputs = InputSynthesizer.Inputs(model).Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var copy = model.Proto.Clone();
        var outputs = copy.Graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var known = copy.Graph.Node.SelectMany(n => n.Output).Concat(graphInputs).ToHashSet(StringComparer.Ordinal);
        var wanted = tensors.Distinct(StringComparer.Ordinal).ToList();
        foreach (var t in wanted)
        {
            if (!known.Contains(t))
                throw new EngineException("ProbeTensorUnknown", EngineErrorKind.InvalidArgument, $"Model '{model.Name}' computes no tensor '{t}'.") { Target = model.SourcePath };
            if (!graphInputs.Contains(t) && outputs.Add(t)) copy.Graph.Output.Add(new ValueInfoProto { Name = t });
        }
        Tensors = wanted;
        session = new ModelSession(new OnnxModel(copy, model.SourcePath, []), new SessionSettings { GraphOptimization = "Basic" });
    }

    public OnnxModel Model { get; }
    /// <summary>The tensors this probe exposes.</summary>
    public IReadOnlyList<string> Tensors { get; }

    /// <summary>
    /// Runs every batch of <paramref name="source"/> and hands each wanted tensor to <paramref name="observe"/>, batch
    /// after batch; <paramref name="groups"/> (default: every exposed tensor alone) are fetched whole, in order.
    /// </summary>
    public void Observe(InputSource source, Action<ProbedTensor> observe, IReadOnlyList<IReadOnlyList<string>>? groups = null,
        IProgress<double>? progress = null, CancellationToken cancel = default)
    {
        groups ??= Tensors.Select(t => (IReadOnlyList<string>)[t]).ToList();
        long rows = 0;
        foreach (var batch in ModelInputs.Batches(Model, source))
        {
            cancel.ThrowIfCancellationRequested();
            foreach (var slice in Slices(groups, batch.Inputs.Values.FirstOrDefault()?.Rows ?? 1))
            {
                var fetched = Fetch(batch.Inputs, slice, cancel);
                foreach (var name in slice.Distinct(StringComparer.Ordinal)) observe(new ProbedTensor(name, fetched[name], batch));
            }
            rows += batch.Inputs.Values.FirstOrDefault()?.Rows ?? 0;
            progress?.Report(batch.Fraction);
        }
        if (rows == 0)
            throw new EngineException("ProbeDataEmpty", EngineErrorKind.InvalidData,
                $"The data for model '{Model.Name}' has no rows{(source.Data is { } d ? $" ('{d.Source}')" : "")}.") { Target = source.Data?.Source };
    }

    /// <summary>The wanted tensors for one batch of inputs (already bound for this model).</summary>
    public IReadOnlyDictionary<string, NamedArray> Fetch(IReadOnlyDictionary<string, NamedArray> inputs, IReadOnlyCollection<string> tensors, CancellationToken cancel = default)
    {
        cancel.ThrowIfCancellationRequested();
        var result = new Dictionary<string, NamedArray>(StringComparer.Ordinal);
        var computed = new List<string>();
        foreach (var t in tensors.Distinct(StringComparer.Ordinal))
        {
            if (graphInputs.Contains(t)) result[t] = inputs[t];
            else computed.Add(t);
        }
        if (computed.Count > 0)
        {
            long rows = inputs.Values.FirstOrDefault()?.Rows ?? 1;
            foreach (var value in session.Run(inputs, computed, cancel))
            {
                bytesPerRow[value.Name] = Buffer.ByteLength(value.Data) / Math.Max(1, rows);
                result[value.Name] = value;
            }
        }
        return result;
    }

    /// <summary>
    /// Consecutive groups joined while their sizes fit the budget. A tensor not yet seen counts as large as the largest
    /// seen so far; before any was seen, the first group runs alone to learn one.
    /// </summary>
    IEnumerable<List<string>> Slices(IReadOnlyList<IReadOnlyList<string>> groups, long rows)
    {
        var slice = new List<string>();
        long bytes = 0;
        foreach (var group in groups)
        {
            long guess = bytesPerRow.Count == 0 ? -1 : bytesPerRow.Values.Max();
            long size = 0;
            foreach (var t in group)
            {
                if (graphInputs.Contains(t)) continue;
                long perRow = bytesPerRow.TryGetValue(t, out long b) ? b : guess;
                if (perRow < 0) { size = -1; break; }
                size += perRow * rows;
            }
            if (slice.Count > 0 && (size < 0 || bytes < 0 || bytes + size > MemoryBudget))
            {
                yield return slice;
                slice = [];
                bytes = 0;
            }
            slice.AddRange(group);
            bytes = size < 0 ? -1 : bytes + size;
        }
        if (slice.Count > 0) yield return slice;
    }

    public void Dispose() => session.Dispose();
}
