using System.Globalization;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Pruning;

/// <summary>A residual block: the graph between <see cref="Input"/> and <see cref="Output"/> (same shape), removable as a whole.</summary>
internal sealed record ResidualBlock(string Name, string Input, string Output, int Nodes)
{
    /// <summary>The key/value cache the block keeps (a decoder-with-past model): removed with it, inputs and outputs.</summary>
    public IReadOnlyList<CacheEntry> Cache { get; init; } = [];

    /// <summary>Mean cosine between the block's input and output vectors on calibration data (1: the block changes nothing).</summary>
    public double? Cosine { get; set; }
}

/// <summary>
/// Depth pruning. A residual sub-block is an Add whose one input (the skip) is an ancestor of the other (the branch)
/// and whose branch reads nothing computed outside it but the skip (shape arithmetic and side inputs such as masks
/// aside); consecutive sub-blocks under one node-name scope (PyTorch's "/blocks.3/...", "/encoder/layer.3/...") form a
/// block, with a normalization that follows the last Add in the scope (post-LN). Removing a block makes its output its
/// input. Blocks are chosen by name, or by how little they change their input on calibration data (mean cosine between
/// the input and output vector at every position, as ShortGPT's block influence).
/// </summary>
internal static class BlockRemoval
{
    public static List<ResidualBlock> Find(GraphProto graph, ShapeProbe probe, IReadOnlyList<CacheEntry> cache)
    {
        var cacheOutputs = cache.ToDictionary(c => c.Output, StringComparer.Ordinal);
        var index = new GraphIndex(graph, inputInitializersAreConstant: true);
        var shapeOnly = ShapeFolding.ShapeOnly(index);
        var order = new Dictionary<NodeProto, int>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < graph.Node.Count; i++) order[graph.Node[i]] = i;
        bool IsData(string t) => t.Length > 0 && !shapeOnly.Contains(t) && index.Constant(t) is null;

        var subs = new List<(string Skip, string Out, HashSet<NodeProto> Region, string Scope, NodeProto Add)>();
        foreach (var add in graph.Node)
        {
            if (add.OpType != "Add" || add.Domain.Length != 0 || add.Input.Count != 2 || !IsData(add.Input[0]) || !IsData(add.Input[1])) continue;
            var s0 = probe.Shape(add.Input[0]);
            if (s0 is null || probe.Shape(add.Input[1]) is not { } s1 || !s0.AsSpan().SequenceEqual(s1) || probe.Shape(add.Output[0]) is not { } so || !so.AsSpan().SequenceEqual(s0)) continue;
            string skip, branch;
            if (Upstream(index, add.Input[1], IsData).Contains(add.Input[0])) (skip, branch) = (add.Input[0], add.Input[1]);
            else if (Upstream(index, add.Input[0], IsData).Contains(add.Input[1])) (skip, branch) = (add.Input[1], add.Input[0]);
            else continue;
            var region = Between(index, skip, branch, IsData);
            region.Add(add);
            string scope = Scope(region);
            string output = add.Output[0];
            // A normalization right after the last Add, in the same scope, belongs to the block (post-LN).
            while (scope.Length > 0 && index.ConsumersOf(output) is [var (next, _)] && next.Domain.Length == 0 && next.Name.StartsWith(scope + "/", StringComparison.Ordinal)
                && next.Input.Count(IsData) == 1 && next.OpType != "Add" && next.Output.Count(o => o.Length > 0) == 1
                && probe.Shape(next.Output[0]) is { } ns && ns.AsSpan().SequenceEqual(so))
            {
                region.Add(next);
                output = next.Output[0];
            }
            subs.Add((skip, output, region, scope, add));
        }

        var blocks = new List<(string In, string Out, HashSet<NodeProto> Region, string Scope, NodeProto Add)>();
        foreach (var sub in subs.OrderBy(s => order[s.Add]))
        {
            if (blocks.Count > 0 && blocks[^1] is var last && last.Scope.Length > 0 && last.Scope == sub.Scope && last.Out == sub.Skip)
            {
                last.Region.UnionWith(sub.Region);
                blocks[^1] = (last.In, sub.Out, last.Region, last.Scope, last.Add);
            }
            else blocks.Add((sub.Skip, sub.Out, new HashSet<NodeProto>(sub.Region, ReferenceEqualityComparer.Instance), sub.Scope, sub.Add));
        }

        var result = new List<ResidualBlock>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var b in blocks)
        {
            // Shape arithmetic that only the block reads (head sizes from the block's own tensors) belongs to it.
            for (bool grown = true; grown;)
            {
                grown = false;
                foreach (var n in graph.Node)
                    if (!b.Region.Contains(n) && n.Output.All(o => o.Length == 0 || shapeOnly.Contains(o)) && n.Output.Any(o => o.Length > 0)
                        && n.Output.All(o => !index.GraphOutputs.Contains(o) && index.ConsumersOf(o).All(c => b.Region.Contains(c.Node))))
                        grown |= b.Region.Add(n);
            }
            // Removable only when nothing outside reads what the block computes inside (its cache outputs go with it).
            bool contained = b.Region.All(n => n.Output.All(o => o.Length == 0 || o == b.Out
                || ((!index.GraphOutputs.Contains(o) || cacheOutputs.ContainsKey(o)) && !index.SubgraphReferences.Contains(o) && index.ConsumersOf(o).All(c => b.Region.Contains(c.Node)))));
            if (!contained) continue;
            string name = b.Scope.Length > 0 ? b.Scope.TrimStart('/') : ChannelWalk.Label(b.Add);
            for (int i = 2; !names.Add(name); i++) name = $"{name}#{i}";
            var own = b.Region.SelectMany(n => n.Output).Where(cacheOutputs.ContainsKey).Select(o => cacheOutputs[o]).ToList();
            result.Add(new ResidualBlock(name, b.In, b.Out, b.Region.Count) { Cache = own });
        }
        return result;
    }

    /// <summary>Every data tensor <paramref name="tensor"/> is computed from, itself included.</summary>
    static HashSet<string> Upstream(GraphIndex index, string tensor, Func<string, bool> isData)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal) { tensor };
        var stack = new Stack<string>([tensor]);
        while (stack.Count > 0)
            if (index.Producer.TryGetValue(stack.Pop(), out var node))
                foreach (var i in node.Input)
                    if (isData(i) && seen.Add(i)) stack.Push(i);
        return seen;
    }

    /// <summary>The nodes on data paths from <paramref name="from"/> to <paramref name="to"/>.</summary>
    static HashSet<NodeProto> Between(GraphIndex index, string from, string to, Func<string, bool> isData)
    {
        var up = Upstream(index, to, isData);
        var region = new HashSet<NodeProto>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<string>([from]);
        var seen = new HashSet<string>(StringComparer.Ordinal) { from };
        while (stack.Count > 0)
            foreach (var (node, _) in index.ConsumersOf(stack.Pop()))
                foreach (var o in node.Output)
                    if (up.Contains(o))
                    {
                        region.Add(node);
                        if (seen.Add(o)) stack.Push(o);
                    }
        return region;
    }

    /// <summary>The longest node-name scope ("/blocks.3") that every named node of the region shares.</summary>
    static string Scope(IEnumerable<NodeProto> region)
    {
        string[]? common = null;
        foreach (var n in region)
        {
            if (n.Name.Length == 0 || !n.Name.Contains('/')) continue;
            var parts = n.Name.Split('/')[..^1];
            if (common is null) { common = parts; continue; }
            int k = 0;
            while (k < common.Length && k < parts.Length && common[k] == parts[k]) k++;
            common = common[..k];
        }
        return common is null || common.Length == 0 || common.All(p => p.Length == 0) ? "" : string.Join("/", common);
    }

    /// <summary>Mean cosine between each block's input and output vectors (the last axis) over the calibration data.</summary>
    public static void Score(OnnxModel model, IReadOnlyList<ResidualBlock> blocks, DataSet data, int batchSize, CancellationToken cancel)
    {
        var sums = new double[blocks.Count];
        var vectors = new long[blocks.Count];
        // A block is scored once its input and output of a batch have both been seen; a tensor is dropped once every
        // block that reads it is scored, so a batch holds few tensors however many blocks there are.
        var pending = new Dictionary<string, NamedArray>(StringComparer.Ordinal);
        var done = new bool[blocks.Count];
        var readers = blocks.SelectMany((b, i) => new[] { (b.Input, i), (b.Output, i) }).ToLookup(x => x.Item1, x => x.i, StringComparer.Ordinal);
        using var probe = new ActivationProbe(model, blocks.SelectMany(b => new[] { b.Input, b.Output }));
        var groups = blocks.Select(b => (IReadOnlyList<string>)[b.Input, b.Output]).ToList();
        InputBatch? current = null;
        probe.Observe(new InputSource { Data = data, BatchSize = batchSize }, t =>
        {
            if (!ReferenceEquals(t.Batch, current)) { pending.Clear(); Array.Clear(done); current = t.Batch; }
            pending[t.Name] = t.Value;
            foreach (int b in readers[t.Name].Distinct())
            {
                if (done[b] || !pending.TryGetValue(blocks[b].Input, out var input) || !pending.TryGetValue(blocks[b].Output, out var output)) continue;
                vectors[b] += AddCosines(input.AsFloat(), output.AsFloat(), (int)output.Shape[^1], ref sums[b]);
                done[b] = true;
                foreach (var name in new[] { blocks[b].Input, blocks[b].Output })
                    if (readers[name].All(r => done[r])) pending.Remove(name);
            }
        }, groups, cancel: cancel);
        if (vectors.Any(v => v == 0))
            throw new EngineException("PruningCalibrationDataEmpty", EngineErrorKind.InvalidData, $"Calibration data '{data.Source}' has no rows.") { Target = data.Source };
        for (int b = 0; b < blocks.Count; b++) blocks[b].Cosine = sums[b] / vectors[b];
    }

    /// <summary>Adds the cosine of every vector (last axis) of x with the same vector of y to <paramref name="sum"/>; returns how many.</summary>
    static long AddCosines(float[] x, float[] y, int width, ref double sum)
    {
        long count = x.Length / width;
        for (long v = 0; v < count; v++)
        {
            double dot = 0, nx = 0, ny = 0;
            for (long i = v * width; i < (v + 1) * width; i++) { dot += x[i] * (double)y[i]; nx += x[i] * (double)x[i]; ny += y[i] * (double)y[i]; }
            sum += nx == 0 || ny == 0 ? (nx == ny ? 1 : 0) : dot / Math.Sqrt(nx * ny);
        }
        return count;
    }

    /// <summary>The blocks the options ask to remove: by name (every pattern must match), or the ones with the highest cosine.</summary>
    public static List<ResidualBlock> Select(IReadOnlyList<ResidualBlock> blocks, PruningOptions options, string model)
    {
        string available = blocks.Count == 0 ? "none" : string.Join(", ", blocks.Select(b => b.Name));
        if (blocks.Count == 0)
            throw new EngineException("PruningNoBlocks", EngineErrorKind.InvalidOperation,
                $"Model '{model}' has no residual block that can be removed (an Add of a tensor and a branch computed from it, with nothing outside reading the branch).");
        List<ResidualBlock> chosen;
        if (options.RemoveBlockNames.Count > 0)
        {
            foreach (var pattern in options.RemoveBlockNames)
                if (!blocks.Any(b => GraphIndex.MatchesAny(b.Name, [pattern])))
                    throw new EngineException("PruningBlockNotFound", EngineErrorKind.ObjectNotFound, $"No residual block of model '{model}' is named '{pattern}'; its blocks: {available}.");
            chosen = blocks.Where(b => GraphIndex.MatchesAny(b.Name, options.RemoveBlockNames)).ToList();
        }
        else
        {
            int n = options.RemoveBlocks!.Value;
            if (n >= blocks.Count)
                throw new EngineException("PruningTooManyBlocks", EngineErrorKind.InvalidArgument,
                    $"-RemoveBlocks {n} would remove every one of the {blocks.Count} residual blocks of model '{model}' ({available}); give fewer.");
            chosen = blocks.OrderByDescending(b => b.Cosine).Take(n).ToList();
        }
        if (chosen.Count >= blocks.Count)
            throw new EngineException("PruningTooManyBlocks", EngineErrorKind.InvalidArgument, $"The names given match every residual block of model '{model}' ({available}); at least one must stay.");
        return chosen;
    }

    /// <summary>Removes the blocks: what read a block's output reads its input instead (later blocks first, so removals chain).</summary>
    public static void Remove(GraphProto graph, IReadOnlyList<ResidualBlock> blocks, IReadOnlyList<ResidualBlock> order)
    {
        foreach (var b in order.Where(blocks.Contains).Reverse())
        {
            var index = new GraphIndex(graph, inputInitializersAreConstant: true);
            if (index.GraphOutputs.Contains(b.Output))
            {
                var producer = index.Producer[b.Output];
                for (int i = 0; i < producer.Output.Count; i++)
                    if (producer.Output[i] == b.Output) producer.Output[i] = GraphRewriter.Unique(index, b.Output + ".removed");
                graph.Node.Insert(Position(graph, producer) + 1,
                    new NodeProto { OpType = "Identity", Name = GraphRewriter.Unique(index, b.Name + ".skip"), Input = { b.Input }, Output = { b.Output } });
            }
            foreach (var node in graph.Node)
                for (int i = 0; i < node.Input.Count; i++)
                    if (node.Input[i] == b.Output && !(node.OpType == "Identity" && node.Input[0] == b.Input)) node.Input[i] = b.Input;
            // The block's cache leaves the model's contract: its present outputs, then its past inputs.
            var outputs = b.Cache.Select(c => c.Output).ToHashSet(StringComparer.Ordinal);
            for (int i = graph.Output.Count - 1; i >= 0; i--) if (outputs.Contains(graph.Output[i].Name)) graph.Output.RemoveAt(i);
        }
        GraphRewriter.RemoveDead(graph);
        var inputs = blocks.SelectMany(b => b.Cache).Select(c => c.Input).ToHashSet(StringComparer.Ordinal);
        var read = graph.Node.SelectMany(n => n.Input).ToHashSet(StringComparer.Ordinal);
        for (int i = graph.Input.Count - 1; i >= 0; i--)
            if (inputs.Contains(graph.Input[i].Name) && !read.Contains(graph.Input[i].Name)) graph.Input.RemoveAt(i);
    }

    static int Position(GraphProto graph, NodeProto node)
    {
        for (int i = 0; i < graph.Node.Count; i++) if (ReferenceEquals(graph.Node[i], node)) return i;
        return graph.Node.Count - 1;
    }

    public static string Describe(ResidualBlock b) => (b.Cosine is { } c
        ? $"cosine between its input and output {c.ToString("0.0000", CultureInfo.InvariantCulture)} on calibration data; {b.Nodes} nodes"
        : $"{b.Nodes} nodes") + (b.Cache.Count == 0 ? "" : $"; its cache: {string.Join(", ", b.Cache.Select(e => e.Input))} -> {string.Join(", ", b.Cache.Select(e => e.Output))}");
}
