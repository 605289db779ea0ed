using System.Globalization;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Deciding heads: whole key/value groups first (-KeyValueHeadRate: a key/value head with every query head it serves,
/// so the cache shrinks), then query heads within the groups that stay (-HeadRate), the same number from every group
/// so the repeat factor stays whole. Without grouping (one key/value head per query head) both rates remove heads.
/// A group's score is the sum of its classes' scores.
/// </summary>
internal sealed partial class ChannelScores
{
    /// <summary>Choices removed together (a key/value group with its query heads, or one query head), in pools that each lose the same number.</summary>
    sealed record Pool(List<int[]> Choices);

    void DecideHeads(List<List<ChannelGroup>> clusters)
    {
        if (clusters.Count == 0) return;
        var scores = clusters.ToDictionary(c => c, ClusterScores);
        foreach (var (rate, groups) in new[] { (options.RateFor(PrunedPart.KeyValueHeads), true), (options.RateFor(PrunedPart.Heads), false) })
        {
            if (rate <= 0) continue;
            var pools = clusters.ToDictionary(c => c, c => Pools(c[0], groups));
            var counts = options.Scope == PruningScope.Global ? GlobalCounts(clusters, pools, scores, rate) : null;
            foreach (var cluster in clusters)
            {
                var score = scores[cluster];
                var own = pools[cluster];
                foreach (var pool in own)
                {
                    int n = pool.Choices.Count;
                    int remove = counts is null ? n - (int)Math.Round(n * (1 - rate), MidpointRounding.AwayFromZero)
                        : (int)Math.Round((double)counts[cluster] / own.Count, MidpointRounding.AwayFromZero);
                    if (remove >= n) throw WouldEmptyHeads(cluster[0], rate, groups);
                    foreach (var choice in pool.Choices.OrderBy(c => c.Sum(x => score[x])).ThenBy(c => c[0]).Take(remove))
                        foreach (var g in cluster) foreach (int c in choice) g.Removed[c] = true;
                }
            }
        }
    }

    /// <summary>The pools of a heads group: its key/value groups (as one pool), or the query heads of each group that stays; ungrouped, its heads.</summary>
    static List<Pool> Pools(ChannelGroup g, bool groups)
    {
        if (g.Buckets is not { } buckets)
            return [new Pool(Enumerable.Range(0, g.Classes).Where(c => !g.Removed[c]).Select(c => new[] { c }).ToList())];
        var staying = buckets.Where(b => !b.KeyValue.All(c => g.Removed[c])).ToList();
        return groups ? [new Pool(staying.Select(b => b.Query.Concat(b.KeyValue).ToArray()).ToList())]
            : staying.Select(b => new Pool(b.Query.Select(c => new[] { c }).ToList())).ToList();
    }

    /// <summary>-Scope Global: one ranking of every choice of every layer (scores relative to their layer's mean); how many each layer loses.</summary>
    Dictionary<List<ChannelGroup>, int> GlobalCounts(List<List<ChannelGroup>> clusters, Dictionary<List<ChannelGroup>, List<Pool>> pools,
        Dictionary<List<ChannelGroup>, double[]> scores, double rate)
    {
        var all = new List<(List<ChannelGroup> Cluster, double Score)>();
        foreach (var cluster in clusters)
        {
            var choices = pools[cluster].SelectMany(p => p.Choices).Select(c => c.Sum(x => scores[cluster][x])).ToList();
            double mean = choices.Count == 0 ? 0 : choices.Average();
            all.AddRange(choices.Select(s => (cluster, options.Criterion == PruningCriterion.Random || mean <= 0 ? s : s / mean)));
        }
        int count = (int)Math.Round(rate * all.Count, MidpointRounding.AwayFromZero);
        var taken = all.OrderBy(x => x.Score).Take(count).ToLookup(x => x.Cluster);
        return clusters.ToDictionary(c => c, c => taken[c].Count());
    }

    static EngineException WouldEmptyHeads(ChannelGroup g, double rate, bool groups) => new("PruningWouldEmptyLayer", EngineErrorKind.InvalidArgument,
        $"Rate {rate.ToString("0.###", CultureInfo.InvariantCulture)} would remove all {(groups ? "key/value heads" : g.Buckets is null ? "heads" : "query heads of a key/value group")} of layer '{g.First.Name}'; " +
        "lower the rate or exclude the layer with -ExcludeNode.");
}
