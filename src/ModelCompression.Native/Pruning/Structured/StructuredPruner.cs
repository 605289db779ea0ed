using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Structured pruning makes the model physically smaller: whole residual blocks (depth), and whole channels, heads and
/// hidden-size channels (width). The model is probed in ONNX Runtime for its shapes (at two input sizes, to tell fixed
/// sizes from run-time ones); depth comes first; then the shape arithmetic is folded (<see cref="ShapeFolding"/>), the
/// dependency groups are planned (<see cref="GroupPlanner"/>, one rule per operator family in <see cref="ChannelRules"/>),
/// decided (<see cref="ChannelScores"/>), rewritten (<see cref="GraphRewriter"/>), run again in ONNX Runtime at both
/// sizes with the output shapes checked, and reported (<see cref="StructuredReport"/>). With nothing to remove the
/// graph is returned as it came.
/// </summary>
internal static class StructuredPruner
{
    public static OnnxModel Prune(OnnxModel model, PruningOptions options, IProgress<double>? progress, CancellationToken cancel)
    {
        var probe = ShapeProbe.Run(model, options.ProbeDimension, cancel);
        var (alternate, alternateDimension) = Alternate(model, options.ProbeDimension, cancel);
        progress?.Report(0.1);

        List<ResidualBlock> blocks = [], removedBlocks = [];
        if (options.RemovesBlocks)
        {
            blocks = BlockRemoval.Find(model.Proto.Graph, probe, DecoderContract.Of(model)?.Cache ?? []);
            if (options.RemoveBlocks is not null && blocks.Count > 0)
                BlockRemoval.Score(model, blocks, options.CalibrationData!, options.CalibrationBatchSize, cancel);
            removedBlocks = BlockRemoval.Select(blocks, options, model.Name);
        }
        progress?.Report(0.2);

        return model.Derive(ModelPruner.StageName, options.ToParameters(), proto =>
        {
            var graph = proto.Graph;
            var pristine = graph.Clone();
            var before = new StructuredReport.Totals(CostModel.Parameters(graph), CostModel.Flops(graph, probe));
            if (removedBlocks.Count > 0) BlockRemoval.Remove(graph, removedBlocks, blocks);

            var skipped = new List<ReportEntry>();
            var notes = new List<string>();
            var groups = options.Structured ? Width(model, proto, options, probe, alternate, removedBlocks.Count > 0, skipped, notes, progress, cancel) : [];
            if (groups.All(g => g.RemovedCount == 0) && removedBlocks.Count == 0)
            {
                // Nothing removed: the model comes back as it was, not merely equivalent.
                proto.Graph = pristine;
                graph = pristine;
            }
            if (proto.IrVersion < 4)
            {
                // Before IR 4 every initializer must also be a graph input.
                var inputs = graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
                foreach (var t in graph.Initializer)
                    if (!inputs.Contains(t.Name)) graph.Input.Add(GraphBuilder.Value(t.Name, (DT)t.DataType, t.Dims.Cast<object>().ToArray()));
            }
            progress?.Report(0.9);
            var after = Validate(model, proto, options.ProbeDimension, probe, alternate, alternateDimension, cancel);
            progress?.Report(1.0);
            var report = StructuredReport.Write(options, groups, skipped, blocks, removedBlocks, notes, before,
                new StructuredReport.Totals(CostModel.Parameters(graph), CostModel.Flops(graph, after)), probe);
            ReportCache(model, proto, report);
            return report;
        });
    }


    /// <summary>Width: folds the shape arithmetic, plans, decides and rewrites the groups; returns every group planned.</summary>
    static List<ChannelGroup> Width(OnnxModel model, ModelProto proto, PruningOptions options, ShapeProbe probe, ShapeProbe? alternate, bool blocksRemoved,
        List<ReportEntry> skipped, List<string> notes, IProgress<double>? progress, CancellationToken cancel)
    {
        var graph = proto.Graph;
        int folded = alternate is null ? 0 : ShapeFolding.Fold(graph, probe, alternate);
        var index = new GraphIndex(graph, inputInitializersAreConstant: true);
        var order = new Dictionary<NodeProto, int>(ReferenceEqualityComparer.Instance);
        for (int i = 0; i < graph.Node.Count; i++) order[graph.Node[i]] = i;
        var cache = DecoderContract.Of(model)?.Cache ?? [];
        var context = new PlanContext
        {
            Index = index, Probe = probe, Alternate = alternate, Opset = Opset(proto), Order = order,
            CacheInputs = cache.Select(c => c.Input).ToHashSet(StringComparer.Ordinal), CacheOutputs = cache.Select(c => c.Output).ToHashSet(StringComparer.Ordinal),
        };
        var groups = GroupPlanner.Plan(context, options, skipped, ModelPruner.Scaled(progress, 0.2, 0.6), cancel);
        if (groups.Count == 0 && !blocksRemoved) throw ModelPruner.NothingToPrune(model, options, index);
        if (!groups.Any(g => g.Viable) && !blocksRemoved)
        {
            // Layers first (skipped ones, then the ones that stopped); tables (an embedding that met nothing prunable) last.
            var reasons = skipped.Select(e => $"{e.Target}: {e.Detail}").Concat(groups.OrderBy(g => g.Members.All(m => m.Kind == MemberKind.Table)).Select(g => $"{g.First.Name}: {g.Failure}")).ToList();
            throw new EngineException("PruningNoPrunableChannels", EngineErrorKind.InvalidOperation,
                $"Model '{model.Name}' has no layer whose channels can be removed: {string.Join("; ", reasons.Take(6))}" + (reasons.Count > 6 ? $"; and {reasons.Count - 6} more." : ".")) { Target = model.SourcePath };
        }
        var asked = Enum.GetValues<PrunedPart>().Where(p => options.RateFor(p) > 0).ToList();
        if (asked.Count > 0 && !blocksRemoved && !groups.Any(g => g.Viable && asked.Any(p => Serves(g, p))))
        {
            var found = groups.Where(g => g.Viable).Select(g => g.Part).Distinct().ToList();
            throw new EngineException("PruningNoPrunableChannels", EngineErrorKind.InvalidOperation,
                $"Model '{model.Name}' has nothing of {string.Join(", ", asked)} that can be removed" +
                (found.Count > 0 ? $"; it has {string.Join(", ", found)} (see -Target)." : ".")) { Target = model.SourcePath };
        }
        foreach (var part in asked.Where(p => !groups.Any(g => g.Viable && Serves(g, p))))
            notes.Add($"The model has no {part} that can be removed.");

        Dictionary<string, double[]>? activations = null;
        if (options.Criterion == PruningCriterion.Activation)
            activations = ActivationStats.ChannelNorms(new OnnxModel(proto.Clone(), model.SourcePath, []), ChannelScores.ActivationInputs(groups.Where(g => g.Viable), index),
                options.CalibrationData!, options.CalibrationBatchSize, ModelPruner.Scaled(progress, 0.6, 0.8), cancel);
        ChannelScores.Decide(groups, options, activations, index);
        var pruned = groups.Where(g => g.Viable && g.RemovedCount > 0).ToList();
        if (pruned.Count == 0) return groups;

        var unpruned = options.CalibrationData is not null ? new OnnxModel(proto.Clone(), model.SourcePath, []) : null;
        var norms = NormRefit.Prepare(index, pruned);
        notes.AddRange(GraphRewriter.Apply(graph, index, pruned));
        int refits = unpruned is null ? 0 : NormRefit.Run(proto, index, norms, unpruned, options.CalibrationData!, options.CalibrationBatchSize, cancel);
        if (refits > 0)
            notes.Add($"{refits} normalization(s) over pruned channels got their scale and bias refitted on the calibration data (least squares, one after the other, the original outputs as targets).");
        if (folded > 0) notes.Add($"{folded} shape value(s) computed at run time but fixed for the model (sizes read back with Shape, head sizes, reshape targets) became constants so they could be rewritten.");
        return groups;
    }

    /// <summary>Whether a group holds what a part's rate removes (key/value heads are in the heads groups).</summary>
    static bool Serves(ChannelGroup g, PrunedPart part) => g.Part == (part == PrunedPart.KeyValueHeads ? PrunedPart.Heads : part);

    /// <summary>
    /// A second probe at batch 3 and other symbolic sizes (half, else double: convolutional models want multiples of
    /// their stride, language models fit their position table), or none when the model runs at one size only; then
    /// every probed size counts as fixed and shape values are not folded. Batch 3 with half the size keeps products
    /// of sizes apart too (batch 2 at half size would give batch x sequence the same value as the first probe).
    /// </summary>
    static (ShapeProbe? Probe, long Dimension) Alternate(OnnxModel model, long dimension, CancellationToken cancel)
    {
        foreach (long d in new[] { Math.Max(1, dimension / 2), dimension * 2 })
            try { return (ShapeProbe.Run(model, d, cancel, batch: AlternateBatch), d); }
            catch (EngineException) { }
        return (null, 0);
    }

    const long AlternateBatch = 3;

    static long Opset(ModelProto proto) => proto.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 1;

    /// <summary>The rewritten model must load and run at both probe sizes with the same output shapes, or nothing is returned.</summary>
    static ShapeProbe Validate(OnnxModel model, ModelProto proto, long dimension, ShapeProbe probe, ShapeProbe? alternate, long alternateDimension, CancellationToken cancel)
    {
        var rewritten = new OnnxModel(proto, model.SourcePath, []);
        ShapeProbe after;
        ShapeProbe? afterAlternate = null;
        try
        {
            after = ShapeProbe.Run(rewritten, dimension, cancel);
            if (alternate is not null) afterAlternate = ShapeProbe.Run(rewritten, alternateDimension, cancel, batch: AlternateBatch);
        }
        catch (EngineException e)
        {
            throw new EngineException("PruningRewriteInvalid", EngineErrorKind.InvalidOperation,
                $"Structured pruning produced a model that ONNX Runtime rejects (a defect in the rewrite; please report it): {e.Message}", e) { Target = model.SourcePath };
        }
        Check(after, probe);
        if (afterAlternate is not null) Check(afterAlternate, alternate!);
        return after;

        void Check(ShapeProbe result, ShapeProbe expected)
        {
            // Outputs keep their shapes, but for fixed sizes the rewrite declared anew (a cache's heads); depth
            // pruning may have removed a block's cache outputs.
            foreach (var output in proto.Graph.Output)
            {
                if (!expected.OutputShapes.TryGetValue(output.Name, out var shape)) continue;
                var want = Declared(shape, model.Proto.Graph.Output.First(o => o.Name == output.Name), output);
                if (!result.OutputShapes.TryGetValue(output.Name, out var s) || !s.SequenceEqual(want))
                    throw new EngineException("PruningRewriteInvalid", EngineErrorKind.InvalidOperation,
                        $"Structured pruning changed the shape of output '{output.Name}' (a defect in the rewrite; please report it).") { Target = model.SourcePath };
            }
        }
    }

    /// <summary>A probed shape with the fixed sizes that the rewrite declared differently put in.</summary>
    static long[] Declared(long[] probed, ValueInfoProto before, ValueInfoProto after)
    {
        var shape = (long[])probed.Clone();
        var (b, a) = (before.Type?.TensorType?.Shape?.Dim, after.Type?.TensorType?.Shape?.Dim);
        for (int i = 0; b is not null && a is not null && i < shape.Length && i < b.Count && i < a.Count; i++)
            if (b[i].HasDimValue && a[i].HasDimValue && b[i].DimValue != a[i].DimValue) shape[i] = a[i].DimValue;
        return shape;
    }

    /// <summary>A decoder-with-past model's cache after pruning: bytes per token of context before and after, in the report.</summary>
    static void ReportCache(OnnxModel model, ModelProto proto, ModelReport report)
    {
        if (DecoderContract.Of(model) is not { HasCache: true } before) return;
        var after = DecoderContract.Of(new OnnxModel(proto, model.SourcePath, []))!;
        report.Metrics["CacheBytesPerTokenBefore"] = before.CacheBytesPerToken;
        report.Metrics["CacheBytesPerTokenAfter"] = after.CacheBytesPerToken;
        string heads = string.Join(", ", after.Cache.Where(c => c.Kind == CacheKind.Key).Select(c => c.Heads).Distinct());
        report.Notes.Add($"Key/value cache: {before.CacheBytesPerToken:N0} -> {after.CacheBytesPerToken:N0} bytes per token of context " +
            $"({before.CacheLayers} -> {after.CacheLayers} layers, key/value heads {string.Join(", ", before.Cache.Select(c => c.Heads).Distinct())} -> {heads}); " +
            (before.CacheBytesPerToken == after.CacheBytesPerToken ? "the cache contract is unchanged."
                : "the model's cache inputs and outputs (past and present) now declare this smaller cache, and a runtime allocates it by them (a GenAI config must say so too)."));
    }
}
