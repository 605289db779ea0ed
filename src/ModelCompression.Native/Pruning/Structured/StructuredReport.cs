using System.Globalization;
using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Pruning;

/// <summary>Reporting: one entry per group (pruned, kept, or skipped and why) and per residual block, metrics per part, and notes.</summary>
internal static class StructuredReport
{
    public sealed record Totals(long Parameters, long Flops);

    static bool IsTableOnly(ChannelGroup g) => g.Members.All(m => m.Kind == MemberKind.Table);

    public static ModelReport Write(PruningOptions options, List<ChannelGroup> groups, List<ReportEntry> skipped, List<ResidualBlock> blocks,
        List<ResidualBlock> removedBlocks, List<string> notes, Totals before, Totals after, ShapeProbe probe)
    {
        var report = new ModelReport { Stage = ModelPruner.StageName };
        foreach (var b in blocks)
            report.Entries.Add(new ReportEntry(b.Name, "Block", removedBlocks.Contains(b) ? "Removed" : "Kept", BlockRemoval.Describe(b)));
        long channelsBefore = 0, channelsAfter = 0;
        var perPart = Enum.GetValues<PrunedPart>().ToDictionary(p => p, _ => (Before: 0L, After: 0L));
        foreach (var g in groups)
        {
            var first = g.First;
            if (!g.Viable)
            {
                // A constant that happened to be read by Gather or Slice but carries no channels (a mask) is not a layer.
                if (!IsTableOnly(g)) report.Entries.Add(new ReportEntry(first.Name, first.Node.OpType, "Skipped", g.Failure!));
                continue;
            }
            int kept = g.Choices - g.RemovedChoices;
            channelsBefore += g.Choices;
            channelsAfter += kept;
            perPart[g.Part] = (perPart[g.Part].Before + g.Choices, perPart[g.Part].After + kept);
            string unit = ChannelScores.UnitWord(g.Part);
            string grouped = "";
            if (g.Part == PrunedPart.Heads)
            {
                int kv = g.KeyValueHeads, keptKv = kv - g.RemovedKeyValueHeads;
                perPart[PrunedPart.KeyValueHeads] = (perPart[PrunedPart.KeyValueHeads].Before + kv, perPart[PrunedPart.KeyValueHeads].After + keptKv);
                if (g.Buckets is not null) grouped = $" (grouped-query attention: {keptKv} of {kv} key/value heads, {(keptKv == 0 ? 0 : kept / keptKv)} query head{(keptKv > 0 && kept / keptKv == 1 ? "" : "s")} each)";
            }
            string joint = g.Members.Count == 1 ? "" : $"; pruned jointly with {string.Join(", ", g.Members.Skip(1).Select(m => m.Name).Distinct())} (coupled {unit}, one decision)";
            string path = g.Path.Count == 0 ? "" : $"; through {string.Join(", ", g.Path.Distinct())}";
            string sinks = g.Sinks.Count == 0 ? "" : $"; consumers sliced: {string.Join(", ", g.Sinks.Distinct())}";
            bool rated = options.RateFor(g.Part) > 0 || (g.Part == PrunedPart.Heads && options.RateFor(PrunedPart.KeyValueHeads) > 0);
            string part = rated ? "" : options.Targets.Count > 0 && !options.Targets.Contains(g.Part) ? $"; not pruned: -Target leaves {g.Part} out" : "; rate 0";
            string exact = g.RemovedCount > 0 && g.Approximations.Count > 0 ? $"; not exact for the kept channels: {string.Join("; ", g.Approximations)}" : "";
            report.Entries.Add(new ReportEntry(first.Name, first.Node.OpType, g.RemovedCount > 0 ? "Pruned" : "Kept",
                $"{g.Part}: kept {kept} of {g.Choices} {unit}{grouped}{part}{joint}{path}{sinks}{exact}"));
        }
        report.Entries.AddRange(skipped);

        var pruned = groups.Where(g => g.Viable && g.RemovedCount > 0).ToList();
        report.Metrics["PrunedLayers"] = pruned.Sum(g => g.Members.Count);
        report.Metrics["SkippedLayers"] = groups.Count(g => !g.Viable && !IsTableOnly(g)) + skipped.Count;
        report.Metrics["ChannelsBefore"] = channelsBefore;
        report.Metrics["ChannelsAfter"] = channelsAfter;
        foreach (var (p, (b, a)) in perPart)
            if (b > 0) { report.Metrics[p + "Before"] = b; report.Metrics[p + "After"] = a; }
        if (options.RemovesBlocks) { report.Metrics["BlocksBefore"] = blocks.Count; report.Metrics["BlocksRemoved"] = removedBlocks.Count; }
        report.Metrics["ParametersBefore"] = before.Parameters;
        report.Metrics["ParametersAfter"] = after.Parameters;
        report.Metrics["FlopsBefore"] = before.Flops;
        report.Metrics["FlopsAfter"] = after.Flops;

        string rates = options.Structured
            ? string.Join(", ", Enum.GetValues<PrunedPart>().Where(p => options.RateFor(p) > 0).Select(p => $"{p} {options.RateFor(p).ToString("0.###", CultureInfo.InvariantCulture)}"))
            : "";
        if (options.Structured)
            report.Notes.Add($"Structured pruning, criterion {options.Criterion}, rate {(rates.Length == 0 ? "0" : rates)}: {pruned.Sum(g => g.Members.Count)} layer(s) pruned, " +
                $"{channelsBefore - channelsAfter:N0} of {channelsBefore:N0} channels or heads removed; parameters {before.Parameters:N0} -> {after.Parameters:N0}; FLOPs {before.Flops:N0} -> {after.Flops:N0}.");
        if (removedBlocks.Count > 0)
            report.Notes.Add($"Depth: {removedBlocks.Count} of {blocks.Count} residual block(s) removed ({string.Join(", ", removedBlocks.Select(b => b.Name))})" +
                (options.RemoveBlocks is not null ? ", those whose output was closest to their input (cosine) on the calibration data." : ", by name.") +
                (options.Structured ? "" : $" Parameters {before.Parameters:N0} -> {after.Parameters:N0}; FLOPs {before.Flops:N0} -> {after.Flops:N0}."));
        report.Notes.Add($"FLOPs count {CostModel.Counted} at the probe inputs {probe.InputDescription}.");
        int jointly = pruned.Count(g => g.Members.Count > 1);
        if (jointly > 0) report.Notes.Add($"{jointly} group(s) of layers whose channels are tied (residual Add, gating Mul, attention) were pruned jointly with one decision per group.");
        report.Notes.AddRange(notes);
        var clusters = GroupPlanner.Clusters(pruned);
        int tied = clusters.Where(c => c.Count > 1).Sum(c => c.Count);
        if (tied > 0)
            report.Notes.Add($"{tied} layer(s) read weights shared with other layers (tied layers); each set got one decision, so the weights stay shared.");
        var approximate = pruned.SelectMany(g => g.Approximations).Distinct().ToList();
        if (approximate.Count > 0)
            report.Notes.Add($"Not exact for the kept channels ({approximate.Count} normalization(s) over pruned channels, e.g. {approximate[0]}): their statistics come from fewer channels; fine-tune or distil afterwards.");
        if (options.Scope == PruningScope.Global && options.Structured)
            report.Notes.Add("Global scope: each layer's scores are divided by their mean and one ranking per part (heads, hidden, FFN) over all layers removes the lowest; layers lose different shares.");
        int coupled = groups.Count(g => !g.Viable && !IsTableOnly(g));
        if (coupled > 0) report.Notes.Add($"{coupled} layer(s) left whole: their channels are coupled to other tensors or reach ops the rewrite does not follow (see the Skipped entries).");
        return report;
    }
}
