using System.Globalization;
using System.Runtime.InteropServices;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Structured pruning: removes whole output channels (neurons) of MatMul/Gemm/Conv layers and rewrites the graph so
/// the model is physically smaller. From each layer's output the channels are followed forward, in graph order,
/// through ops that keep them apart (elementwise ops and activations, BatchNormalization, pools, Resize, Pad, Transpose,
/// Squeeze/Unsqueeze, Flatten/Reshape as channel blocks, Concat as offsets, depthwise Conv) to the layers that consume
/// them (MatMul/Gemm rows, Conv/ConvTranspose input channels). Every constant on the way is sliced. A layer whose
/// channels meet another computed tensor (residual Add, squeeze-excite gates), a model output, or an op the rewrite does
/// not follow is left alone, and the report says where and why.
/// </summary>
internal static class StructuredPruner
{
    sealed record Track(int Axis, int Rank, int Length, int[][] Pos);
    sealed record ConstEdit(NodeProto Node, int Input, int Axis, int[][] Pos);
    sealed record ShapeEdit(NodeProto Node, int Entry, int PerChannel);

    sealed class Group
    {
        /// <summary>The layers whose output channels this group removes together (one, or several tied by a residual or gate).</summary>
        public required List<(NodeProto Node, WeightTarget Target)> Members { get; init; }
        public NodeProto Producer => Members[0].Node;
        public int Channels { get; set; }
        /// <summary>The computed tensor the channels met when the group failed as coupled.</summary>
        public string? CoupledWith { get; set; }
        public List<float[]?> BatchNormScales { get; } = [];
        public List<ConstEdit> Edits { get; } = [];
        public List<NodeProto> Depthwise { get; } = [];
        public List<ShapeEdit> ShapeEdits { get; } = [];
        public HashSet<string> Tensors { get; } = new(StringComparer.Ordinal);
        public List<string> Path { get; } = [];
        public List<string> Sinks { get; } = [];
        public string? Failure { get; set; }
        public int[] Removed { get; set; } = [];
    }

    static readonly HashSet<string> Unary = new(StringComparer.Ordinal)
    {
        "Relu", "Sigmoid", "Tanh", "Erf", "Gelu", "LeakyRelu", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu", "Softplus", "Softsign",
        "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Identity", "Dropout", "Cast",
        "Mish", "ThresholdedRelu", "Clip", "IsNaN", "IsInf", "Not",
    };
    static readonly HashSet<string> Elementwise = new(StringComparer.Ordinal)
    {
        "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where", "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod",
    };
    static readonly HashSet<string> Pools = new(StringComparer.Ordinal)
    {
        "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool",
    };

    public static OnnxModel Prune(OnnxModel model, PruningOptions options, IProgress<double>? progress, CancellationToken cancel)
    {
        var probe = ShapeProbe.Run(model, options.ProbeDimension, cancel);
        progress?.Report(0.1);
        var originalIndex = new GraphIndex(model.Proto.Graph, inputInitializersAreConstant: true);
        var originalTargets = WeightTargets.Find(originalIndex, options, []);
        if (originalTargets.Count == 0) throw ModelPruner.NothingToPrune(model, options, originalIndex);
        Dictionary<string, double[]>? activations = null;
        if (options.Criterion == PruningCriterion.Activation)
            activations = ActivationStats.ChannelNorms(model, originalTargets.SelectMany(t => t.ActivationInputs()).Distinct().ToList(),
                options.CalibrationData!, options.CalibrationBatchSize, ModelPruner.Scaled(progress, 0.1, 0.4), cancel);
        double rate = options.Rate!.Value;

        return model.Derive(ModelPruner.StageName, options.ToParameters(), proto =>
        {
            var graph = proto.Graph;
            var index = new GraphIndex(graph, inputInitializersAreConstant: true);
            var report = new ModelReport { Stage = ModelPruner.StageName };
            var skipped = new List<ReportEntry>();
            var targets = WeightTargets.Find(index, options, skipped);
            long parametersBefore = CostModel.Parameters(graph);
            long flopsBefore = CostModel.Flops(graph, probe);
            var nodeOrder = new Dictionary<NodeProto, int>(ReferenceEqualityComparer.Instance);
            for (int i = 0; i < graph.Node.Count; i++) nodeOrder[graph.Node[i]] = i;

            // Plan: follow every candidate layer's channels; decide which to remove.
            var groups = new List<Group>();
            int done = 0, total = targets.Sum(t => t.Nodes.Count);
            foreach (var target in targets)
                foreach (var producer in target.Nodes)
                {
                    cancel.ThrowIfCancellationRequested();
                    var group = new Group { Members = [(producer, target)] };
                    Follow(group, index, probe, nodeOrder);
                    groups.Add(group);
                    progress?.Report(0.4 + 0.3 * ++done / Math.Max(1, total));
                }
            groups = MergeCoupled(groups, index, probe, nodeOrder, cancel);
            var clusters = Clusters(groups.Where(g => g.Failure is null));
            if (options.Scope == PruningScope.Global)
                DecideGlobal(clusters, options, rate, activations);
            else
                foreach (var cluster in clusters) Decide(cluster, options, rate, activations);
            progress?.Report(0.8);

            var pruned = groups.Where(g => g.Failure is null && g.Removed.Length > 0).ToList();
            if (!groups.Any(g => g.Failure is null))
            {
                var reasons = groups.Take(6).Select(g => $"{g.Producer.Name}: {g.Failure}");
                throw new EngineException("PruningNoPrunableChannels", EngineErrorKind.InvalidOperation,
                    $"Model '{model.Name}' has no layer whose channels can be removed: {string.Join("; ", reasons)}" + (groups.Count > 6 ? $"; and {groups.Count - 6} more." : ".")) { Target = model.SourcePath };
            }
            var splitNotes = Apply(graph, index, pruned);
            if (proto.IrVersion < 4)
            {
                // Before IR 4 every initializer must also be a graph input.
                var inputs = graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
                foreach (var t in graph.Initializer)
                    if (!inputs.Contains(t.Name)) graph.Input.Add(GraphBuilder.Value(t.Name, (DT)t.DataType, t.Dims.Cast<object>().ToArray()));
            }

            // The rewritten model must load and run, with the same output shapes, or nothing is returned.
            var rewritten = new OnnxModel(proto, model.SourcePath, []);
            ShapeProbe after;
            try { after = ShapeProbe.Run(rewritten, options.ProbeDimension, cancel); }
            catch (EngineException e)
            {
                throw new EngineException("PruningRewriteInvalid", EngineErrorKind.InvalidOperation,
                    $"Structured pruning produced a model that ONNX Runtime rejects (a defect in the rewrite; please report it): {e.Message}", e) { Target = model.SourcePath };
            }
            foreach (var (name, shape) in probe.OutputShapes)
                if (!after.OutputShapes.TryGetValue(name, out var s) || !s.SequenceEqual(shape))
                    throw new EngineException("PruningRewriteInvalid", EngineErrorKind.InvalidOperation,
                        $"Structured pruning changed the shape of output '{name}' (a defect in the rewrite; please report it).") { Target = model.SourcePath };
            progress?.Report(1.0);

            long channelsBefore = 0, channelsAfter = 0;
            foreach (var g in groups)
            {
                if (g.Failure is not null)
                {
                    report.Entries.Add(new ReportEntry(g.Producer.Name, g.Producer.OpType, "Skipped", g.Failure));
                    continue;
                }
                int kept = g.Channels - g.Removed.Length;
                channelsBefore += g.Channels; channelsAfter += kept;
                string path = g.Path.Count == 0 ? "" : $"; through {string.Join(", ", g.Path.Distinct())}";
                string joint = g.Members.Count == 1 ? "" : $"; pruned jointly with {string.Join(", ", g.Members.Skip(1).Select(m => m.Node.Name))} (coupled channels, one decision)";
                report.Entries.Add(new ReportEntry(g.Producer.Name, g.Producer.OpType, g.Removed.Length > 0 ? "Pruned" : "Kept",
                    $"kept {kept} of {g.Channels} channels{joint}{path}; consumers sliced: {string.Join(", ", g.Sinks.Distinct())}"));
            }
            report.Entries.AddRange(skipped);
            long parametersAfter = CostModel.Parameters(graph);
            long flopsAfter = CostModel.Flops(graph, after);
            report.Metrics["PrunedLayers"] = pruned.Sum(g => g.Members.Count);
            report.Metrics["SkippedLayers"] = groups.Count(g => g.Failure is not null) + skipped.Count;
            report.Metrics["ChannelsBefore"] = channelsBefore;
            report.Metrics["ChannelsAfter"] = channelsAfter;
            report.Metrics["ParametersBefore"] = parametersBefore;
            report.Metrics["ParametersAfter"] = parametersAfter;
            report.Metrics["FlopsBefore"] = flopsBefore;
            report.Metrics["FlopsAfter"] = flopsAfter;
            report.Notes.Add($"Structured pruning, criterion {options.Criterion}, rate {rate.ToString("0.###", CultureInfo.InvariantCulture)}: " +
                $"{pruned.Sum(g => g.Members.Count)} layer(s) pruned, {channelsBefore - channelsAfter:N0} of {channelsBefore:N0} channels removed; " +
                $"parameters {parametersBefore:N0} -> {parametersAfter:N0}; FLOPs {flopsBefore:N0} -> {flopsAfter:N0}.");
            report.Notes.Add($"FLOPs count MatMul, Gemm, Conv and ConvTranspose (2 per multiply-add) at the probe inputs {probe.InputDescription}.");
            int jointly = pruned.Count(g => g.Members.Count > 1);
            if (jointly > 0) report.Notes.Add($"{jointly} group(s) of layers whose channels are tied (residual Add, gating Mul) were pruned jointly with one decision per group.");
            report.Notes.AddRange(splitNotes);
            int tied = clusters.Where(c => c.Count > 1 && c[0].Removed.Length > 0).Sum(c => c.Count);
            if (tied > 0)
                report.Notes.Add($"{tied} layer(s) read weights shared with other layers (tied layers); each set got one decision, so the weights stay shared.");
            if (options.Scope == PruningScope.Global)
                report.Notes.Add("Global scope: each layer's channel scores are divided by their mean and one ranking over all layers removes the lowest; layers lose different shares.");
            int coupled = groups.Count(g => g.Failure is not null);
            if (coupled > 0) report.Notes.Add($"{coupled} layer(s) left whole: their channels are coupled to other tensors or reach ops the rewrite does not follow (see the Skipped entries).");
            return report;
        });
    }

    // ---------------------------------------------------------------- planning

    /// <summary>
    /// Groups that failed because their channels meet another layer's channels at an elementwise op (residual Add,
    /// gating Mul) are merged with that layer's group and followed again together, until nothing more merges.
    /// </summary>
    static List<Group> MergeCoupled(List<Group> groups, GraphIndex index, ShapeProbe probe, Dictionary<NodeProto, int> order, CancellationToken cancel)
    {
        for (int round = 0; round < 64; round++)
        {
            cancel.ThrowIfCancellationRequested();
            bool merged = false;
            foreach (var g in groups)
            {
                if (g.CoupledWith is not { } tensor) continue;
                var h = groups.FirstOrDefault(o => !ReferenceEquals(o, g) && o.Tensors.Contains(tensor));
                if (h is null || h.Channels != g.Channels || h.Channels == 0) continue;
                var joint = new Group { Members = [.. g.Members, .. h.Members] };
                Follow(joint, index, probe, order);
                if (joint.Failure is not null && joint.CoupledWith is null)
                {
                    // Merged, they still cannot be rewritten: say why on both.
                    g.CoupledWith = null; h.CoupledWith = null;
                    g.Failure += $"; pruned jointly with '{h.Producer.Name}' it still stops: {joint.Failure}";
                    h.Failure = $"coupled with '{g.Producer.Name}'; jointly they stop: {joint.Failure}";
                    continue;
                }
                groups = [.. groups.Where(o => !ReferenceEquals(o, g) && !ReferenceEquals(o, h)), joint];
                merged = true;
                break;
            }
            if (!merged) break;
        }
        foreach (var g in groups) g.CoupledWith = null;
        return groups;
    }

    static void Follow(Group g, GraphIndex index, ShapeProbe probe, Dictionary<NodeProto, int> order)
    {
        var tracked = new Dictionary<string, Track>(StringComparer.Ordinal);
        foreach (var (p, t) in g.Members)
        {
            if (!Start(g, p, t, index, probe, tracked)) return;
            if (g.Channels != 0 && g.Channels != t.Outputs) { g.Failure = "coupled layers have different channel counts"; return; }
            g.Channels = t.Outputs;
        }
        int first = g.Members.Min(m => order[m.Node]);
        try { Walk(g, first, index, probe, tracked); }
        finally { foreach (var name in tracked.Keys) g.Tensors.Add(name); }
    }

    /// <summary>Edits for the layer's own weight and bias, and its output's channel track.</summary>
    static bool Start(Group g, NodeProto p, WeightTarget t, GraphIndex index, ShapeProbe probe, Dictionary<string, Track> tracked)
    {
        string output = p.Output[0];
        var outShape = probe.Shape(output);
        if (outShape is null) { g.Failure = "its output shape is unknown"; return false; }
        if (p.Output.Skip(1).Any(o => o.Length > 0)) { g.Failure = "it has more than one output"; return false; }
        int rank = outShape.Length;
        int axis;
        switch (p.OpType)
        {
            case "MatMul":
                axis = rank - 1;
                g.Edits.Add(new ConstEdit(p, 1, 1, Identity(t.Outputs)));
                break;
            case "Gemm":
                axis = 1;
                g.Edits.Add(new ConstEdit(p, 1, GraphIndex.IntAttr(p, "transB", 0) != 0 ? 0 : 1, Identity(t.Outputs)));
                if (p.Input.Count > 2 && p.Input[2].Length > 0)
                {
                    var c = index.Constant(p.Input[2]);
                    if (c is null) { g.Failure = "its bias is computed, not a constant"; return false; }
                    if (c.Dims.Count == 2 && c.Dims[0] != 1) { g.Failure = "its bias is a full matrix"; return false; }
                    if (c.Dims.Count > 0 && c.Dims[^1] == t.Outputs) g.Edits.Add(new ConstEdit(p, 2, c.Dims.Count - 1, Identity(t.Outputs)));
                    else if (c.Dims.Count > 0 && c.Dims[^1] != 1) { g.Failure = "its bias does not broadcast per output"; return false; }
                }
                break;
            default:
                axis = 1;
                if (t.Groups != 1)
                {
                    g.Failure = t.Groups == t.Outputs && t.Inputs == t.KernelSize
                        ? "depthwise convolution: its channels are the channels of the layer before it and are pruned with that layer"
                        : $"grouped convolution (group {t.Groups}): its output channels are tied to their groups";
                    return false;
                }
                g.Edits.Add(new ConstEdit(p, 1, 0, Identity(t.Outputs)));
                if (p.Input.Count > 2 && p.Input[2].Length > 0)
                {
                    if (index.Constant(p.Input[2]) is null) { g.Failure = "its bias is computed, not a constant"; return false; }
                    g.Edits.Add(new ConstEdit(p, 2, 0, Identity(t.Outputs)));
                }
                break;
        }
        if (index.GraphOutputs.Contains(output)) { g.Failure = "its output is a model output (model outputs keep their shapes)"; return false; }
        if (index.SubgraphReferences.Contains(output)) { g.Failure = "its output is read inside a subgraph (If/Loop/Scan), which the rewrite does not follow"; return false; }
        tracked[output] = new Track(axis, rank, t.Outputs, Identity(t.Outputs));
        // BatchNormalization right after the layer scales each channel: it belongs in the channel's importance.
        var direct = index.ConsumersOf(output);
        g.BatchNormScales.Add(direct.Count == 1 && direct[0].Node.OpType == "BatchNormalization" ? BatchNormScale(direct[0].Node, index, t.Outputs) : null);
        return true;
    }

    static void Walk(Group g, int first, GraphIndex index, ShapeProbe probe, Dictionary<string, Track> tracked)
    {
        for (int n = first + 1; n < index.Graph.Node.Count && g.Failure is null; n++)
        {
            var node = index.Graph.Node[n];
            var inputs = new List<(int Index, Track Track)>();
            for (int i = 0; i < node.Input.Count; i++)
                if (tracked.TryGetValue(node.Input[i], out var tr)) inputs.Add((i, tr));
            if (inputs.Count == 0) continue;
            var result = Step(g, node, inputs, index, probe, tracked);
            if (g.Failure is not null) return;
            if (result is { } r)
            {
                foreach (var o in node.Output.Skip(1))
                    if (o.Length > 0 && index.ConsumersOf(o).Count > 0 || index.GraphOutputs.Contains(o)) { g.Failure = $"{node.OpType} node '{node.Name}' uses its second output"; return; }
                string outName = node.Output[0];
                if (index.GraphOutputs.Contains(outName)) { g.Failure = $"its channels reach model output '{outName}' (model outputs keep their shapes)"; return; }
                if (index.SubgraphReferences.Contains(outName)) { g.Failure = $"its channels reach '{outName}', which a subgraph (If/Loop/Scan) reads"; return; }
                tracked[outName] = r;
                g.Path.Add(node.OpType);
            }
        }
    }

    /// <summary>Follows the channels through one node; returns the output's track, or null when the node consumes them (a sink).</summary>
    static Track? Step(Group g, NodeProto node, List<(int Index, Track Track)> inputs, GraphIndex index, ShapeProbe probe, Dictionary<string, Track> tracked)
    {
        string op = node.OpType;
        var first = inputs[0].Track;
        int OutRank() => probe.Shape(node.Output[0])?.Length ?? -1;
        Track? Fail(string why) { g.Failure = why; return null; }
        if (node.Domain.Length != 0 && node.Domain != "ai.onnx") return Fail($"its channels reach {node.Domain}.{op} node '{node.Name}', which the rewrite does not follow");

        if (Unary.Contains(op))
        {
            if (inputs.Count != 1 || inputs[0].Index != 0) return Fail($"{op} node '{node.Name}' reads the channels as a parameter");
            for (int i = 1; i < node.Input.Count; i++)
                if (node.Input[i].Length > 0 && index.Constant(node.Input[i]) is null) return Fail($"{op} node '{node.Name}' has a computed parameter");
            return first;
        }
        if (Elementwise.Contains(op))
        {
            int outRank = OutRank();
            if (outRank < 0) return Fail($"the shape of '{node.Output[0]}' is unknown");
            int fromEnd = first.Rank - first.Axis;
            foreach (var (_, tr) in inputs)
                if (tr.Rank - tr.Axis != fromEnd || tr.Length != first.Length || !SamePositions(tr.Pos, first.Pos))
                    return Fail($"{op} node '{node.Name}' combines the channels with differently laid out ones");
            for (int i = 0; i < node.Input.Count; i++)
            {
                string name = node.Input[i];
                if (name.Length == 0 || tracked.ContainsKey(name)) continue;
                var c = index.Constant(name);
                long[]? shape = c?.Dims.ToArray() ?? probe.Shape(name);
                if (shape is null) return Fail($"the shape of '{name}' is unknown");
                int a = shape.Length - fromEnd;
                if (a < 0 || shape[a] == 1) continue;
                if (shape[a] != first.Length) return Fail($"{op} node '{node.Name}' broadcasts '{name}' oddly against the channels");
                if (c is null)
                {
                    string source = index.Producer.TryGetValue(name, out var pn) ? $"{pn.OpType} '{pn.Name}'" : "a model input";
                    g.CoupledWith = name;
                    return Fail($"coupled: {op} node '{node.Name}' joins the channels with '{name}' from {source} (residual or gate; left whole)");
                }
                if (ElementTypes.ByteCount(c.DataType, 1) <= 0) return Fail($"constant '{name}' has a packed element type");
                g.Edits.Add(new ConstEdit(node, i, a, first.Pos));
            }
            return first with { Axis = outRank - fromEnd, Rank = outRank };
        }
        if (op == "Concat")
        {
            int rank0 = first.Rank;
            long ca = GraphIndex.IntAttr(node, "axis", 0);
            if (ca < 0) ca += rank0;
            if (ca != first.Axis) return Fail($"Concat node '{node.Name}' joins along another axis");
            if (inputs.Any(x => x.Track.Axis != first.Axis || x.Track.Rank != rank0)) return Fail($"Concat node '{node.Name}' joins differently laid out channels");
            int offset = 0;
            int[][]? pos = null;
            for (int i = 0; i < node.Input.Count; i++)
            {
                var s = probe.Shape(node.Input[i]);
                if (s is null) return Fail($"the shape of '{node.Input[i]}' is unknown");
                if (tracked.TryGetValue(node.Input[i], out var tr))
                {
                    int off = offset;
                    pos = pos is null ? tr.Pos.Select(ps => ps.Select(v => v + off).ToArray()).ToArray()
                        : pos.Zip(tr.Pos, (a, b) => a.Concat(b.Select(v => v + off)).ToArray()).ToArray();
                }
                offset += (int)s[first.Axis];
            }
            return first with { Length = offset, Pos = pos! };
        }
        if (inputs.Count != 1 || inputs[0].Index != 0)
            return Fail($"{op} node '{node.Name}' reads the channels through input {inputs[0].Index}, which the rewrite does not follow");
        int axis = first.Axis, rank = first.Rank;
        var inShape = probe.Shape(node.Input[0]);
        switch (op)
        {
            case "BatchNormalization":
            case "InstanceNormalization":
                if (axis != 1) return Fail($"{op} node '{node.Name}' normalizes another axis");
                for (int i = 1; i < node.Input.Count; i++)
                {
                    if (index.Constant(node.Input[i]) is null) return Fail($"{op} node '{node.Name}' has computed parameters");
                    g.Edits.Add(new ConstEdit(node, i, 0, first.Pos));
                }
                return first;
            case var _ when Pools.Contains(op):
                return axis == 1 ? first : Fail($"{op} node '{node.Name}' pools over the channel axis");
            case "Resize" or "Upsample":
                {
                    if (axis != 1) return Fail($"{op} node '{node.Name}' resizes the channel axis");
                    if (node.Input.Count > 3 && node.Input[3].Length > 0) return Fail($"{op} node '{node.Name}' is given output sizes");
                    int scalesInput = op == "Upsample" ? 1 : 2;
                    if (node.Input.Count > scalesInput && node.Input[scalesInput].Length > 0)
                    {
                        var s = index.Constant(node.Input[scalesInput]);
                        if (s is null) return Fail($"{op} node '{node.Name}' has computed scales");
                        var v = TensorData.ToFloat(s);
                        if (v.Length > axis && v[axis] != 1f) return Fail($"{op} node '{node.Name}' scales the channel axis");
                    }
                    return first;
                }
            case "Pad":
                {
                    long[]? pads = GraphIndex.IntsAttr(node, "pads");
                    if (pads is null && node.Input.Count > 1 && index.Constant(node.Input[1]) is { } pc) pads = TensorData.ToInt64(pc);
                    if (node.Input.Count > 3 && node.Input[3].Length > 0) return Fail($"Pad node '{node.Name}' pads selected axes");
                    if (pads is null || pads.Length != 2 * rank) return Fail($"Pad node '{node.Name}' has computed pads");
                    return pads[axis] == 0 && pads[axis + rank] == 0 ? first : Fail($"Pad node '{node.Name}' pads the channel axis");
                }
            case "Transpose":
                {
                    var perm = GraphIndex.IntsAttr(node, "perm") ?? Enumerable.Range(0, rank).Reverse().Select(i => (long)i).ToArray();
                    int to = Array.IndexOf(perm, (long)axis);
                    return to < 0 ? Fail($"Transpose node '{node.Name}' has an odd perm") : first with { Axis = to };
                }
            case "Unsqueeze":
                {
                    var axes = AxesOf(node, index);
                    int outRank = OutRank();
                    if (axes is null || outRank < 0) return Fail($"Unsqueeze node '{node.Name}' has computed axes");
                    int cur = axis;
                    foreach (long ax in axes.Select(a => a < 0 ? a + outRank : a).Order()) if (ax <= cur) cur++;
                    return first with { Axis = cur, Rank = outRank };
                }
            case "Squeeze":
                {
                    var axes = AxesOf(node, index);
                    if (axes is null)
                    {
                        if (inShape is null) return Fail($"Squeeze node '{node.Name}' has unknown axes");
                        axes = Enumerable.Range(0, rank).Where(i => inShape[i] == 1).Select(i => (long)i).ToArray();
                    }
                    var norm = axes.Select(a => a < 0 ? a + rank : a).ToArray();
                    if (norm.Contains(axis)) return Fail($"Squeeze node '{node.Name}' removes the channel axis");
                    return first with { Axis = axis - norm.Count(a => a < axis), Rank = rank - norm.Length };
                }
            case "Flatten":
                {
                    long f = GraphIndex.IntAttr(node, "axis", 1);
                    if (f < 0) f += rank;
                    if (inShape is null) return Fail($"the shape of '{node.Input[0]}' is unknown");
                    if (axis < f) return Fail($"Flatten node '{node.Name}' merges the channels into the leading axis");
                    return Blocks(first, inShape, (int)f, 1, 2);
                }
            case "Reshape":
                {
                    var outShape = probe.Shape(node.Output[0]);
                    var shapeConst = index.Constant(node.Input[1]);
                    if (inShape is null || outShape is null) return Fail($"the shapes around Reshape node '{node.Name}' are unknown");
                    if (shapeConst is null) return Fail($"Reshape node '{node.Name}' computes its target shape at run time");
                    var target = TensorData.ToInt64(shapeConst);
                    int k = rank - axis;
                    if (outShape.Length >= k && outShape.AsSpan(outShape.Length - k).SequenceEqual(inShape.AsSpan(axis)))
                    {
                        int q = outShape.Length - k;
                        if (target[q] > 0) g.ShapeEdits.Add(new ShapeEdit(node, q, first.Pos[0].Length));
                        return first with { Axis = q, Rank = outShape.Length };
                    }
                    int m = outShape.Length - 1;
                    if (m <= axis && inShape.AsSpan(0, m).SequenceEqual(outShape.AsSpan(0, m)) && outShape[m] == CostModel.Product(inShape.AsSpan(m)))
                    {
                        var r = Blocks(first, inShape, m, m, m + 1);
                        if (target[m] > 0) g.ShapeEdits.Add(new ShapeEdit(node, m, r.Pos[0].Length));
                        return r;
                    }
                    return Fail($"Reshape node '{node.Name}' splits or regroups the channel axis (for example into attention heads)");
                }
            case "Conv":
                {
                    if (axis != 1) return Fail($"Conv node '{node.Name}' reads another axis");
                    var w = index.Constant(node.Input[1]);
                    if (w is null) return Fail($"Conv node '{node.Name}' has a computed weight");
                    long group = GraphIndex.IntAttr(node, "group", 1);
                    if (group == 1)
                    {
                        g.Edits.Add(new ConstEdit(node, 1, 1, first.Pos));
                        g.Sinks.Add(node.Name);
                        return null;
                    }
                    if (group == first.Length && w.Dims[0] == group && w.Dims[1] == 1 && first.Pos.All(ps => ps.Length == 1))
                    {
                        g.Edits.Add(new ConstEdit(node, 1, 0, first.Pos));
                        if (node.Input.Count > 2 && node.Input[2].Length > 0)
                        {
                            if (index.Constant(node.Input[2]) is null) return Fail($"Conv node '{node.Name}' has a computed bias");
                            g.Edits.Add(new ConstEdit(node, 2, 0, first.Pos));
                        }
                        g.Depthwise.Add(node);
                        return first;
                    }
                    return Fail($"grouped Conv node '{node.Name}' (group {group}) ties channels together");
                }
            case "ConvTranspose":
                {
                    if (axis != 1 || GraphIndex.IntAttr(node, "group", 1) != 1) return Fail($"ConvTranspose node '{node.Name}' is grouped");
                    if (index.Constant(node.Input[1]) is null) return Fail($"ConvTranspose node '{node.Name}' has a computed weight");
                    g.Edits.Add(new ConstEdit(node, 1, 0, first.Pos));
                    g.Sinks.Add(node.Name);
                    return null;
                }
            case "MatMul":
                {
                    var w = index.Constant(node.Input[1]);
                    if (w is null || w.Dims.Count != 2) return Fail($"MatMul node '{node.Name}' multiplies the channels with a computed tensor");
                    if (axis != rank - 1) return Fail($"MatMul node '{node.Name}' reads the channels along a non-reduced axis");
                    g.Edits.Add(new ConstEdit(node, 1, 0, first.Pos));
                    g.Sinks.Add(node.Name);
                    return null;
                }
            case "Gemm":
                {
                    var w = index.Constant(node.Input[1]);
                    if (w is null) return Fail($"Gemm node '{node.Name}' has a computed weight");
                    if (GraphIndex.IntAttr(node, "transA", 0) != 0 || axis != 1) return Fail($"Gemm node '{node.Name}' reads the channels transposed");
                    g.Edits.Add(new ConstEdit(node, 1, GraphIndex.IntAttr(node, "transB", 0) != 0 ? 1 : 0, first.Pos));
                    g.Sinks.Add(node.Name);
                    return null;
                }
            case "Shape":
                {
                    foreach (var (consumer, input) in index.ConsumersOf(node.Output[0]))
                    {
                        if (consumer.OpType != "Gather" || input != 0) return Fail($"Shape node '{node.Name}' feeds the channel count into computations");
                        var idx = index.Constant(consumer.Input[1]);
                        if (idx is null || TensorData.ElementCount(idx) != 1) return Fail($"Shape node '{node.Name}' feeds the channel count into computations");
                        long v = TensorData.ToInt64(idx)[0];
                        if (v < 0) v += rank;
                        if (v == axis) return Fail($"Shape node '{node.Name}' reads the channel count");
                    }
                    if (index.GraphOutputs.Contains(node.Output[0])) return Fail($"Shape node '{node.Name}' is a model output");
                    return null;
                }
            default:
                return Fail($"its channels reach {op} node '{node.Name}', which the rewrite does not follow");
        }
    }

    /// <summary>Channel positions after merging axes [from, rank) into one (Flatten, Reshape): each channel becomes a block.</summary>
    static Track Blocks(Track t, long[] inShape, int from, int newAxis, int newRank)
    {
        long outer = CostModel.Product(inShape.AsSpan(from, t.Axis - from));
        long inner = CostModel.Product(inShape.AsSpan(t.Axis + 1));
        long length = outer * t.Length * inner;
        var pos = new int[t.Pos.Length][];
        for (int c = 0; c < pos.Length; c++)
        {
            var list = new List<int>();
            for (long o = 0; o < outer; o++)
                foreach (int p in t.Pos[c])
                    for (long i = 0; i < inner; i++) list.Add(checked((int)(o * t.Length * inner + p * inner + i)));
            pos[c] = [.. list];
        }
        return new Track(newAxis, newRank, checked((int)length), pos);
    }

    static long[]? AxesOf(NodeProto node, GraphIndex index)
    {
        var attr = GraphIndex.IntsAttr(node, "axes");
        if (attr is not null) return attr;
        if (node.Input.Count > 1 && node.Input[1].Length > 0)
            return index.Constant(node.Input[1]) is { } c ? TensorData.ToInt64(c) : null;
        return null;
    }

    static bool SamePositions(int[][] a, int[][] b)
    {
        if (ReferenceEquals(a, b)) return true;
        if (a.Length != b.Length) return false;
        for (int i = 0; i < a.Length; i++) if (!a[i].AsSpan().SequenceEqual(b[i])) return false;
        return true;
    }

    static int[][] Identity(int n)
    {
        var r = new int[n][];
        for (int i = 0; i < n; i++) r[i] = [i];
        return r;
    }

    static float[]? BatchNormScale(NodeProto bn, GraphIndex index, int channels)
    {
        if (bn.Input.Count < 5) return null;
        var scale = index.Constant(bn.Input[1]);
        var variance = index.Constant(bn.Input[4]);
        if (scale is null || variance is null) return null;
        float eps = bn.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F ?? 1e-5f;
        var s = TensorData.ToFloat(scale);
        var v = TensorData.ToFloat(variance);
        if (s.Length != channels || v.Length != channels) return null;
        return s.Select((x, i) => MathF.Abs(x) / MathF.Sqrt(v[i] + eps)).ToArray();
    }

    /// <summary>Scores the layer's channels and picks the ones to remove.</summary>
    /// <summary>
    /// Layers that read the same weight tensor (tied layers, as PyTorch exports repeated blocks) form one cluster and
    /// get one decision, so their weights stay shared after pruning.
    /// </summary>
    static List<List<Group>> Clusters(IEnumerable<Group> viable) =>
        viable.GroupBy(g => string.Join("|", g.Members.Select(m => m.Target.Name).Order(StringComparer.Ordinal)), StringComparer.Ordinal)
            .Select(x => x.ToList()).ToList();

    static double[] ClusterScores(List<Group> cluster, PruningOptions options, Dictionary<string, double[]>? activations)
    {
        if (cluster.Count == 1) return Scores(cluster[0], options, activations);
        var total = new double[cluster[0].Channels];
        foreach (var g in cluster)
        {
            var s = Scores(g, options, activations);
            double mean = s.Average();
            for (int c = 0; c < total.Length; c++) total[c] += mean > 0 ? s[c] / mean : s[c];
        }
        return total;
    }

    static void Decide(List<Group> cluster, PruningOptions options, double rate, Dictionary<string, double[]>? activations)
    {
        var g = cluster[0];
        int channels = g.Channels;
        int keep = (int)Math.Round(channels * (1 - rate), MidpointRounding.AwayFromZero);
        if (keep < 1) throw WouldEmpty(g, rate);
        var score = ClusterScores(cluster, options, activations);
        var orderBy = Enumerable.Range(0, channels).OrderBy(c => score[c]).ThenBy(c => c).ToArray();
        int[] removed = [.. orderBy.Take(channels - keep).Order()];
        foreach (var member in cluster) member.Removed = removed;
    }

    static EngineException WouldEmpty(Group g, double rate) => new("PruningWouldEmptyLayer", EngineErrorKind.InvalidArgument,
        $"Rate {rate.ToString("0.###", CultureInfo.InvariantCulture)} would remove all {g.Channels} channels of layer '{g.Producer.Name}'; lower the rate or exclude the layer with -ExcludeNode.");

    /// <summary>
    /// Global scope: every layer's channel scores divided by their mean (so layers of different scale compare), one
    /// ranking over all channels of all layers, the lowest fraction <paramref name="rate"/> removed.
    /// </summary>
    static void DecideGlobal(List<List<Group>> clusters, PruningOptions options, double rate, Dictionary<string, double[]>? activations)
    {
        var all = new List<(List<Group> Cluster, int Channel, double Score)>();
        foreach (var cluster in clusters)
        {
            var score = ClusterScores(cluster, options, activations);
            double mean = score.Average();
            for (int c = 0; c < score.Length; c++)
                all.Add((cluster, c, options.Criterion == PruningCriterion.Random || mean <= 0 ? score[c] : score[c] / mean));
        }
        int count = (int)Math.Round(rate * all.Count, MidpointRounding.AwayFromZero);
        var removed = all.OrderBy(x => x.Score).Take(count).ToLookup(x => x.Cluster, x => x.Channel);
        foreach (var cluster in clusters)
        {
            int[] r = [.. removed[cluster].Order()];
            if (r.Length >= cluster[0].Channels) throw WouldEmpty(cluster[0], rate);
            foreach (var g in cluster) g.Removed = r;
        }
    }

    static double[] Scores(Group g, PruningOptions options, Dictionary<string, double[]>? activations)
    {
        int channels = g.Channels;
        var score = new double[channels];
        if (options.Criterion == PruningCriterion.Random)
        {
            var rng = RandomScores.For(options.Seed, g.Producer.Name, channels);
            for (int c = 0; c < channels; c++) score[c] = rng.NextDouble();
        }
        else
            for (int m = 0; m < g.Members.Count; m++)
            {
                var (producer, t) = g.Members[m];
                var values = MemoryMarshal.Cast<byte, float>(TensorData.RawBytes(t.Tensor).Span);
                double[]? norms = options.Criterion == PruningCriterion.Activation ? activations![producer.Input[0]] : null;
                var own = new double[channels];
                for (int o = 0; o < channels; o++)
                {
                    double s = 0;
                    for (int i = 0; i < t.Inputs; i++)
                    {
                        double w = Math.Abs(values[t.FlatIndex(o, i)]);
                        s += norms is null ? w : w * norms[t.ActivationChannel(o, i)];
                    }
                    own[o] = g.BatchNormScales[m] is { } bn ? s * bn[o] : s;
                }
                // Tied layers: each layer's scores relative to its own mean, summed, so no layer dominates by scale.
                double mean = own.Average();
                for (int o = 0; o < channels; o++) score[o] += g.Members.Count == 1 || mean == 0 ? own[o] : own[o] / mean;
            }
        return score;
    }

    // ---------------------------------------------------------------- rewriting

    /// <summary>Rewrites the graph; returns notes about constants that had to be split.</summary>
    static List<string> Apply(GraphProto graph, GraphIndex index, List<Group> groups)
    {
        var notes = new List<string>();
        // Removed positions per (node, input) and axis, in the original coordinates; edits from several layers compose.
        var removals = new Dictionary<(NodeProto Node, int Input), SortedDictionary<int, SortedSet<int>>>(new NodeInputComparer());
        var groupDelta = new Dictionary<NodeProto, int>(ReferenceEqualityComparer.Instance);
        var shapeDelta = new Dictionary<(NodeProto Node, int Entry), long>(new NodeInputComparer());
        var changedTensors = new HashSet<string>(StringComparer.Ordinal);
        foreach (var g in groups)
        {
            foreach (var e in g.Edits)
            {
                if (!removals.TryGetValue((e.Node, e.Input), out var byAxis)) removals[(e.Node, e.Input)] = byAxis = [];
                if (!byAxis.TryGetValue(e.Axis, out var set)) byAxis[e.Axis] = set = [];
                foreach (int c in g.Removed) foreach (int p in e.Pos[c]) set.Add(p);
            }
            foreach (var d in g.Depthwise) groupDelta[d] = groupDelta.GetValueOrDefault(d) + g.Removed.Length;
            foreach (var s in g.ShapeEdits) shapeDelta[(s.Node, s.Entry)] = shapeDelta.GetValueOrDefault((s.Node, s.Entry)) + (long)g.Removed.Length * s.PerChannel;
            changedTensors.UnionWith(g.Tensors);
        }

        // Each constant source is sliced once per distinct edit; a source whose every use gets the same edit is replaced in place.
        var uses = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
            foreach (var input in node.Input)
                if (SourceKey(index, input) is { } key && !IsIdentityOfConstant(index, node)) uses[key] = uses.GetValueOrDefault(key) + 1;
        var bySource = removals.GroupBy(kv => SourceKey(index, kv.Key.Node.Input[kv.Key.Input])
            ?? throw new InvalidOperationException("edited input is not a constant")).ToList();
        var initializerIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < graph.Initializer.Count; i++) initializerIndex[graph.Initializer[i].Name] = i;
        foreach (var source in bySource)
        {
            var original = index.Constant(source.First().Key.Node.Input[source.First().Key.Input])!;
            var signatures = source.GroupBy(kv => Signature(kv.Value)).ToList();
            bool inPlace = signatures.Count == 1 && source.Count() == uses.GetValueOrDefault(source.Key) && index.Initializers.ContainsKey(source.Key);
            int k = 0;
            if (signatures.Count > 1)
                notes.Add($"Constant '{(original.Name.Length > 0 ? original.Name : source.Key)}' is shared by {source.Count()} node inputs that lose different channels; it was split into {signatures.Count} sliced copies.");
            foreach (var sig in signatures)
            {
                var sliced = Slice(original, sig.First().Value);
                if (inPlace)
                {
                    sliced.Name = original.Name;
                    graph.Initializer[initializerIndex[original.Name]] = sliced;
                    changedTensors.Add(original.Name);
                    UpdateInputInfo(graph, sliced);
                    break;
                }
                string name = Unique(index, graph, $"{(original.Name.Length > 0 ? original.Name : source.Key)}.pruned{k++}");
                sliced.Name = name;
                graph.Initializer.Add(sliced);
                index.Initializers[name] = sliced;
                foreach (var kv in sig) kv.Key.Node.Input[kv.Key.Input] = name;
            }
        }
        foreach (var (node, delta) in groupDelta)
            GraphIndex.SetIntAttr(node, "group", GraphIndex.IntAttr(node, "group", 1) - delta);
        foreach (var reshape in shapeDelta.GroupBy(kv => kv.Key.Node, ReferenceEqualityComparer.Instance))
        {
            var node = (NodeProto)reshape.Key!;
            var shape = TensorData.ToInt64(index.Constant(node.Input[1])!);
            foreach (var kv in reshape) shape[kv.Key.Entry] -= kv.Value;
            string name = Unique(index, graph, (node.Name.Length > 0 ? node.Name : node.Output[0]) + ".pruned_shape");
            graph.Initializer.Add(TensorData.FromInt64(name, [shape.Length], shape));
            index.Initializers[name] = graph.Initializer[^1];
            node.Input[1] = name;
        }

        // Shapes recorded for changed tensors are stale; drop them (ONNX Runtime infers them again).
        for (int i = graph.ValueInfo.Count - 1; i >= 0; i--)
            if (changedTensors.Contains(graph.ValueInfo[i].Name)) graph.ValueInfo.RemoveAt(i);
        RemoveDead(graph);
        return notes;
    }

    static bool IsIdentityOfConstant(GraphIndex index, NodeProto node) =>
        node.OpType == "Identity" && node.Domain.Length == 0 && index.Constant(node.Input[0]) is not null;

    /// <summary>The constant a name stands for: its initializer's name, or the Constant node's output.</summary>
    static string? SourceKey(GraphIndex index, string name)
    {
        if (index.InitializerName(name) is { } init) return index.GraphInputs.Contains(init) ? null : init;
        for (int hops = 0; hops < 16 && index.Producer.TryGetValue(name, out var node); hops++)
        {
            if (node.OpType == "Constant") return "constant:" + node.Output[0];
            if (node.OpType != "Identity") return null;
            name = node.Input[0];
        }
        return null;
    }

    static string Signature(SortedDictionary<int, SortedSet<int>> byAxis) =>
        string.Join(";", byAxis.Select(kv => kv.Key + ":" + string.Join(",", kv.Value)));

    static string Unique(GraphIndex index, GraphProto graph, string name)
    {
        string candidate = name;
        for (int i = 1; index.Initializers.ContainsKey(candidate) || index.Producer.ContainsKey(candidate); i++) candidate = $"{name}{i}";
        return candidate;
    }

    /// <summary>A copy of the tensor without the given positions along the given axes (any fixed-size element type).</summary>
    internal static TensorProto Slice(TensorProto t, IReadOnlyDictionary<int, SortedSet<int>> removed)
    {
        int size = (int)ElementTypes.ByteCount(t.DataType, 1);
        if (size <= 0) throw new EngineException("PruningTensorTypeUnsupported", EngineErrorKind.NotImplemented, $"Tensor '{t.Name}' has a packed element type that cannot be sliced.");
        var dims = t.Dims.ToArray();
        int rank = dims.Length;
        var keep = new int[rank][];
        for (int a = 0; a < rank; a++)
            keep[a] = removed.TryGetValue(a, out var set) ? Enumerable.Range(0, (int)dims[a]).Where(i => !set.Contains(i)).ToArray() : Enumerable.Range(0, (int)dims[a]).ToArray();
        var newDims = keep.Select(k => (long)k.Length).ToArray();
        var strides = new long[rank];
        long stride = 1;
        for (int a = rank - 1; a >= 0; a--) { strides[a] = stride; stride *= dims[a]; }
        var src = TensorData.RawBytes(t).Span;
        long count = CostModel.Product(newDims);
        var dst = new byte[count * size];
        if (count > 0)
        {
            // Innermost axis copied as runs when it is kept whole.
            int last = rank - 1;
            bool wholeRow = rank > 0 && keep[last].Length == dims[last];
            var idx = new int[rank];
            long written = 0;
            while (written < count)
            {
                long offset = 0;
                for (int a = 0; a < (wholeRow ? last : rank); a++) offset += keep[a][idx[a]] * strides[a];
                if (wholeRow)
                {
                    int bytes = (int)dims[last] * size;
                    src.Slice((int)(offset * size), bytes).CopyTo(dst.AsSpan((int)(written * size)));
                    written += dims[last];
                    for (int a = last - 1; a >= 0; a--) { if (++idx[a] < keep[a].Length) break; idx[a] = 0; }
                }
                else
                {
                    src.Slice((int)(offset * size), size).CopyTo(dst.AsSpan((int)(written * size)));
                    written++;
                    for (int a = last; a >= 0; a--) { if (++idx[a] < keep[a].Length) break; idx[a] = 0; }
                }
            }
        }
        var result = TensorData.FromRaw(t.Name, (DT)t.DataType, newDims, dst);
        if (t.HasDocString) result.DocString = t.DocString;
        return result;
    }

    static void UpdateInputInfo(GraphProto graph, TensorProto t)
    {
        foreach (var input in graph.Input)
            if (input.Name == t.Name && input.Type?.TensorType?.Shape is { } shape && shape.Dim.Count == t.Dims.Count)
                for (int i = 0; i < t.Dims.Count; i++) shape.Dim[i] = new TensorShapeProto.Types.Dimension { DimValue = t.Dims[i] };
    }

    /// <summary>Drops Identity/Constant nodes and initializers nothing reads any more.</summary>
    static void RemoveDead(GraphProto graph)
    {
        bool changed = true;
        while (changed)
        {
            changed = false;
            var used = new HashSet<string>(StringComparer.Ordinal);
            foreach (var n in graph.Node) foreach (var i in n.Input) used.Add(i);
            foreach (var o in graph.Output) used.Add(o.Name);
            for (int i = graph.Node.Count - 1; i >= 0; i--)
            {
                var n = graph.Node[i];
                if (n.OpType is "Identity" or "Constant" && n.Domain.Length == 0 && n.Output.All(o => !used.Contains(o)))
                {
                    graph.Node.RemoveAt(i);
                    changed = true;
                }
            }
            if (!changed)
            {
                // Unused initializers go, with the graph-input entry that older models list them under.
                var dead = new HashSet<string>(StringComparer.Ordinal);
                for (int i = graph.Initializer.Count - 1; i >= 0; i--)
                    if (!used.Contains(graph.Initializer[i].Name)) { dead.Add(graph.Initializer[i].Name); graph.Initializer.RemoveAt(i); }
                for (int i = graph.Input.Count - 1; i >= 0; i--)
                    if (dead.Contains(graph.Input[i].Name)) graph.Input.RemoveAt(i);
            }
        }
    }

    sealed class NodeInputComparer : IEqualityComparer<(NodeProto Node, int Input)>
    {
        public bool Equals((NodeProto Node, int Input) x, (NodeProto Node, int Input) y) => ReferenceEquals(x.Node, y.Node) && x.Input == y.Input;
        public int GetHashCode((NodeProto Node, int Input) obj) => HashCode.Combine(System.Runtime.CompilerServices.RuntimeHelpers.GetHashCode(obj.Node), obj.Input);
    }
}
