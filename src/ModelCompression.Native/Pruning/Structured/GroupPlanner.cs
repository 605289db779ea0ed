using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Planning: the dependency groups of coupled channels. Every source (a layer's output channels, an embedding table's
/// columns, an attention operator's heads) starts a group that is followed through the graph; a group whose channels
/// split into heads is followed again with heads as units; groups that meet at an elementwise op or an attention
/// product are merged and followed together; finally units that share a position are tied into classes and each
/// group is assigned its part (heads, hidden, FFN).
/// </summary>
internal static class GroupPlanner
{
    public static List<ChannelGroup> Plan(PlanContext context, PruningOptions options, List<ReportEntry> skipped, IProgress<double>? progress, CancellationToken cancel)
    {
        var members = Members(context.Index, options, skipped);
        var groups = new List<ChannelGroup>();
        for (int i = 0; i < members.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            groups.Add(FollowMember(members[i], context));
            progress?.Report((i + 1.0) / members.Count);
        }
        groups = MergeCoupled(groups, context, cancel);
        foreach (var g in groups.Where(g => g.Viable))
        {
            g.Tie();
            g.Part = g.Members.Any(m => m.Block > 1 || m.Kind == MemberKind.Attention) ? PrunedPart.Heads
                : g.Residual || g.Members.Any(m => m.Kind == MemberKind.Table) ? PrunedPart.Hidden
                : PrunedPart.Ffn;
        }
        return groups;
    }

    /// <summary>The sources: MatMul/Gemm/Conv layers the options select and, unless -OpType narrows the choice, embedding tables and attention operators.</summary>
    static List<Member> Members(GraphIndex index, PruningOptions options, List<ReportEntry> skipped)
    {
        var result = new List<Member>();
        var targets = WeightTargets.Find(index, options, skipped);
        foreach (var target in targets)
            foreach (var node in target.Nodes)
                result.Add(new Member { Kind = MemberKind.Layer, Node = node, Target = target, Columns = ChannelWalk.Identity(target.Outputs) });
        if (options.OpTypes.Count > 0) return result;

        var weights = targets.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var t in index.Graph.Initializer)
        {
            if (weights.Contains(t.Name) || t.Dims.Count < 2 || !WeightTargets.IsFloat(t.DataType) || TensorData.ElementCount(t) < options.MinElements) continue;
            var reader = index.ConsumersOf(t.Name).FirstOrDefault(c => ChannelRules.For(c.Node)?.ReadsTable(c.Node, c.Input) == true).Node;
            if (reader is null) continue;
            if (options.IsExcluded(reader.Name)) { skipped.Add(new(reader.Name, reader.OpType, "Skipped", "excluded by -ExcludeNode")); continue; }
            result.Add(new Member { Kind = MemberKind.Table, Node = reader, Constant = t.Name, Tensor = t, Columns = ChannelWalk.Identity((int)t.Dims[^1]) });
        }
        // Other sources: operators whose own weights hold units (attention operators and their heads).
        foreach (var node in index.Graph.Node)
        {
            if (ChannelRules.For(node) is not { } rule) continue;
            var source = rule.Source(node, index, out string? why);
            if (source is null && why is null) continue;
            if (options.IsExcluded(node.Name)) { skipped.Add(new(node.Name, node.OpType, "Skipped", "excluded by -ExcludeNode")); continue; }
            if (source is null) skipped.Add(new(node.Name, node.OpType, "Skipped", why!));
            else result.Add(source);
        }
        return result;
    }

    static ChannelGroup FollowMember(Member member, PlanContext context)
    {
        var g = new ChannelGroup([member]);
        ChannelWalk.Follow(g, context);
        if (g.Failure is null || g.SplitBlock is not int block || member.Kind != MemberKind.Layer || member.Block != 1 || block <= 1 || member.Target!.Outputs % block != 0)
            return g;
        // The channels split into heads: follow again with whole heads as units.
        var heads = new ChannelGroup([member.WithBlock(block)]);
        ChannelWalk.Follow(heads, context);
        if (heads.Failure is null || heads.CoupledWith is not null) return heads;
        g.Failure += $"; as heads of {block} channels: {heads.Failure}";
        return g;
    }

    /// <summary>
    /// Groups that failed because their channels meet another group's channels (residual Add, gating Mul, attention
    /// product) are merged with that group and followed again together, until nothing more merges.
    /// </summary>
    static List<ChannelGroup> MergeCoupled(List<ChannelGroup> groups, PlanContext context, CancellationToken cancel)
    {
        while (true)
        {
            cancel.ThrowIfCancellationRequested();
            bool merged = false;
            foreach (var g in groups)
            {
                if (g.CoupledWith is not { } tensor) continue;
                var h = groups.FirstOrDefault(o => !ReferenceEquals(o, g) && o.Tracks.ContainsKey(tensor));
                if (h is null) continue;
                var joint = new ChannelGroup([.. g.Members, .. h.Members]);
                ChannelWalk.Follow(joint, context);
                if (joint.Failure is not null && joint.CoupledWith is null)
                {
                    // Merged, they still cannot be rewritten: g stays whole. h keeps its own walk: where it met g's
                    // channels they broadcast along its own (a rotary table along the heads), or it failed or
                    // coupled there itself.
                    g.CoupledWith = null;
                    g.Failure += $"; pruned jointly with '{h.First.Name}' it still stops: {joint.Failure}";
                    if (h.Failure is not null && h.CoupledWith is null) h.Failure += $"; coupled with '{g.First.Name}', jointly they stop: {joint.Failure}";
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

    /// <summary>Groups whose members read the same weights (tied layers, repeated blocks exported with shared weights) form one cluster and get one decision.</summary>
    public static List<List<ChannelGroup>> Clusters(IEnumerable<ChannelGroup> viable) =>
        viable.GroupBy(g => string.Join("|", g.Members.Select(m => m.Key).Order(StringComparer.Ordinal)) + "#" + g.Classes + ":" + string.Join(",", g.ClassOf), StringComparer.Ordinal)
            .Select(x => x.ToList()).ToList();
}
