using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Runtime;

/// <summary>
/// The probe for a model too large for one session: the graph is cut, in node order, into segments whose weights stay
/// within <see cref="SegmentBytes"/> (and whose wanted tensors within the caller's budget), and the segments run one
/// after another over all the data, each in its own session under the probe's policy, with the tensors that cross a
/// cut kept for every batch in between. Only one segment's weights are ever loaded, and the model runs once in total.
/// After each segment the caller gets the wanted tensors it has seen completely, so it can use and drop what it
/// gathered for them before the next segment runs.
/// </summary>
public sealed partial class ActivationProbe
{
    /// <summary>Weight bytes of one segment.</summary>
    public static long SegmentBytes { get; set; } = 128L << 20;

    /// <summary>Whether <paramref name="model"/>'s weights are more than two segments' worth (below that one session runs it).</summary>
    public static bool NeedsSegments(OnnxModel model) => model.Initializers.Sum(TensorData.StorageBytes) > 2 * SegmentBytes;

    /// <summary>
    /// Runs the model over <paramref name="source"/> segment by segment, handing every wanted tensor of every batch to
    /// <paramref name="observe"/>; yields, after each segment, the wanted tensors it produced. <paramref name="cost"/>
    /// (bytes a caller keeps per wanted tensor) with <paramref name="budget"/> cuts segments earlier.
    /// </summary>
    public static IEnumerable<IReadOnlyList<string>> ObserveInSegments(OnnxModel model, IReadOnlyList<string> tensors, InputSource source, Action<ProbedTensor> observe,
        Func<string, long>? cost = null, long budget = long.MaxValue, IProgress<double>? progress = null, CancellationToken cancel = default)
    {
        var graph = model.Proto.Graph;
        var graphInputs = InputSynthesizer.Inputs(model).Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var wanted = Known(model, tensors, graphInputs).ToHashSet(StringComparer.Ordinal);
        var segments = Cut(model, wanted, cost ?? (_ => 0), budget);
        var lastUse = LastUse(graph);
        var kept = new List<Dictionary<string, NamedArray>>();
        var initializerNames = graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        // Wanted graph inputs come from the batches themselves, before the first segment.
        var fromData = tensors.Where(graphInputs.Contains).ToList();
        for (int s = 0; s < segments.Count; s++)
        {
            var (start, end) = segments[s];
            var produced = Enumerable.Range(start, end - start).SelectMany(i => graph.Node[i].Output).Where(o => o.Length > 0).ToHashSet(StringComparer.Ordinal);
            var outputs = produced.Where(p => wanted.Contains(p) || lastUse.TryGetValue(p, out int last) && last >= end).Order(StringComparer.Ordinal).ToList();
            var nodes = Needed(graph, start, end, outputs);
            var reads = nodes.SelectMany(Reads).Where(r => !produced.Contains(r)).ToHashSet(StringComparer.Ordinal);
            var seen = produced.Where(wanted.Contains).Concat(s == 0 ? fromData : []).ToList();
            int batchIndex = 0;
            // The session goes before the caller uses what this segment showed: one segment's weights at a time.
            // A segment whose values nothing wants (the head's logits, say) does not run.
            using (var session = outputs.Count == 0 ? null : OpenSegment(model, start, nodes, reads, outputs, graphInputs, kept.FirstOrDefault()))
            foreach (var batch in ModelInputs.Batches(model, source))
            {
                cancel.ThrowIfCancellationRequested();
                if (kept.Count <= batchIndex) kept.Add(new Dictionary<string, NamedArray>(StringComparer.Ordinal));
                var carried = kept[batchIndex++];
                var inputs = reads.Where(r => !initializerNames.Contains(r))
                    .ToDictionary(r => r, r => carried.TryGetValue(r, out var v) ? v : batch.Inputs[r], StringComparer.Ordinal);
                if (s == 0) foreach (var t in fromData) observe(new ProbedTensor(t, batch.Inputs[t], batch));
                var results = session?.Run(inputs, outputs, cancel) ?? [];
                for (int i = 0; i < outputs.Count; i++)
                {
                    if (wanted.Contains(outputs[i])) observe(new ProbedTensor(outputs[i], results[i], batch));
                    if (lastUse.TryGetValue(outputs[i], out int last) && last >= end) carried[outputs[i]] = results[i];
                }
                foreach (var name in carried.Keys.Where(k => !lastUse.TryGetValue(k, out int last) || last < end).ToList()) carried.Remove(name);
                progress?.Report((s + batch.Fraction) / segments.Count);
            }
            if (batchIndex == 0) throw DataEmpty(model, source);
            yield return seen;
        }
    }

    /// <summary>Consecutive node ranges within the weight and wanted-tensor budgets (a node that alone exceeds them is a segment).</summary>
    static List<(int Start, int End)> Cut(OnnxModel model, HashSet<string> wanted, Func<string, long> cost, long budget)
    {
        var graph = model.Proto.Graph;
        var initializers = graph.Initializer.ToDictionary(t => t.Name, TensorData.StorageBytes, StringComparer.Ordinal);
        var segments = new List<(int, int)>();
        var counted = new HashSet<string>(StringComparer.Ordinal);
        int start = 0;
        long weights = 0, kept = 0;
        for (int i = 0; i < graph.Node.Count; i++)
        {
            var node = graph.Node[i];
            long w = node.Input.Where(n => initializers.ContainsKey(n) && !counted.Contains(n)).Distinct().Sum(n => initializers[n]);
            long c = node.Output.Where(wanted.Contains).Sum(cost);
            if (i > start && (weights + w > SegmentBytes || kept + c > budget))
            {
                segments.Add((start, i));
                start = i;
                weights = kept = 0;
                counted.Clear();
            }
            foreach (var n in node.Input) if (initializers.ContainsKey(n)) counted.Add(n);
            weights += w;
            kept += c;
        }
        segments.Add((start, graph.Node.Count));
        return segments;
    }

    /// <summary>The last node that reads each value (the graph's own outputs are not the probe's business).</summary>
    static Dictionary<string, int> LastUse(GraphProto graph)
    {
        var last = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < graph.Node.Count; i++)
            foreach (var r in Reads(graph.Node[i])) last[r] = i;
        return last;
    }

    /// <summary>The nodes of [start, end) that <paramref name="outputs"/> depend on, in graph order.</summary>
    static List<NodeProto> Needed(GraphProto graph, int start, int end, IReadOnlyList<string> outputs)
    {
        var needed = outputs.ToHashSet(StringComparer.Ordinal);
        var nodes = new List<NodeProto>();
        for (int i = end - 1; i >= start; i--)
        {
            var node = graph.Node[i];
            if (!node.Output.Any(needed.Contains)) continue;
            nodes.Add(node);
            foreach (var r in Reads(node)) needed.Add(r);
        }
        nodes.Reverse();
        return nodes;
    }

    /// <summary>The values a node reads, those its subgraphs read from outside included.</summary>
    static IEnumerable<string> Reads(NodeProto node)
    {
        foreach (var i in node.Input) if (i.Length > 0) yield return i;
        foreach (var a in node.Attribute)
            foreach (var g in a.G is null ? a.Graphs : a.Graphs.Append(a.G))
                foreach (var n in g.Node)
                    foreach (var r in Reads(n)) yield return r;
    }

    /// <summary>A session over the nodes a segment needs: inputs are what they read from before the segment, outputs what later segments read and what is wanted.</summary>
    static ModelSession OpenSegment(OnnxModel model, int start, List<NodeProto> nodes, HashSet<string> reads, List<string> outputs, HashSet<string> graphInputs, Dictionary<string, NamedArray>? carried)
    {
        var graph = model.Proto.Graph;
        var sub = new GraphProto { Name = $"{graph.Name}_segment_{start}" };
        sub.Node.AddRange(nodes);
        var initializers = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var declared = graph.Input.ToDictionary(v => v.Name, StringComparer.Ordinal);
        foreach (var r in reads.Order(StringComparer.Ordinal))
        {
            if (initializers.TryGetValue(r, out var t)) { sub.Initializer.Add(t); continue; }
            if (declared.TryGetValue(r, out var input) && graphInputs.Contains(r)) { sub.Input.Add(input); continue; }
            var value = carried?.GetValueOrDefault(r) ?? throw new EngineException("ProbeSegmentInvalid", EngineErrorKind.InvalidData,
                $"Model '{model.Name}': segment starting at node {start} reads '{r}', which no earlier segment produced.");
            sub.Input.Add(GraphBuilder.Value(r, ModelInputs.ElementType(value), [.. value.Shape.Select((_, d) => (object)$"{r}_dim{d}")]));
        }
        foreach (var o in outputs) sub.Output.Add(new ValueInfoProto { Name = o });
        var proto = new ModelProto { IrVersion = model.Proto.IrVersion, Graph = sub, ProducerName = model.Proto.ProducerName };
        proto.OpsetImport.AddRange(model.Proto.OpsetImport);
        return Open(new OnnxModel(proto, model.SourcePath, []));
    }
}
