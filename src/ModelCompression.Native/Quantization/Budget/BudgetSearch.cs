using System.Diagnostics;
using System.Globalization;

namespace ModelCompression.Native.Quantization;

/// <summary>One choice of a unit: its label, its bytes, and the size the search minimises (bytes, or bytes plus one per float node for static).</summary>
internal sealed record BudgetChoice(string Label, long Bytes, double Size);

/// <summary>A layer (or node) the search sets: its choices, the float one last.</summary>
internal sealed record BudgetUnit(string Name, string OpType, IReadOnlyList<BudgetChoice> Choices)
{
    public int Float => Choices.Count - 1;
}

/// <summary>A model whose units each take one of their choices, evaluated without building a new model for each.</summary>
internal interface IBudgetCandidates
{
    IReadOnlyList<BudgetUnit> Units { get; }
    BudgetEvaluator Evaluator { get; }
    /// <summary>The figure of a configuration (a choice index per unit) on the sensitivity rows.</summary>
    double Sensitivity(int[] config);
    /// <summary>The figure of a configuration on all validation rows, as the result will compute.</summary>
    double Verify(int[] config);
}

/// <summary>A whole configuration that was verified: its bytes and figure.</summary>
internal sealed record BudgetCandidate(int[] Config, long Bytes, double Figure, bool Met);

/// <summary>What the search found: a choice per unit, each unit's cost alone at each choice, and the configurations tried.</summary>
internal sealed record BudgetResult(int[] Config, double[][] Cost, IReadOnlyList<BudgetCandidate> Tried, BudgetCandidate Chosen, int Evaluations, double Seconds);

/// <summary>
/// The smallest model within an accuracy budget (-MaxPerplexityRise, -MinCosine, -MaxAccuracyDrop), for weight-only
/// layers and static nodes alike:
/// <list type="number">
/// <item>Sensitivity: each unit alone at each of its choices, everything else float, measured on the first rows of the
/// validation data in one ONNX Runtime session: sum over units of (choices - 1) evaluations, linear in the units.</item>
/// <item>Choice: costs are taken as additive; each unit's choices on their lower convex hull of (cost, size), and the
/// steps of all units taken greedily by size saved per cost added while the total stays within the budget (the
/// Lagrangian solution of the multiple-choice knapsack).</item>
/// <item>Verification on all validation rows. Sums of single-unit costs misjudge the whole (errors interact, and costs
/// measured on a few rows are noisy: those below the noise seen count as the noise), so the budget given to the
/// additive model is rescaled by the measured-to-predicted ratio, then bisected between what verified and what did not,
/// and the choice remade, at most <see cref="Rounds"/> times, keeping the smallest configuration that met the budget.</item>
/// <item>Uniform settings: each precision every unit offers, set in every unit, verified smallest first while it could
/// still beat the best found, so the result is never larger than a uniform setting that meets the budget.</item>
/// <item>Repair, when none met it: the most sensitive unit still quantized is promoted one step, until the budget is met.</item>
/// </list>
/// The figure is measured on validation data the search chose against, so it is optimistic for other data: the test-set
/// figure is for Compare-Model to take.
/// </summary>
internal static class BudgetSearch
{
    public const int Rounds = 6;

    public static BudgetResult Search(IBudgetCandidates c, QualityBudget budget, IProgress<QuantizationProgress>? progress, CancellationToken cancel)
    {
        var clock = Stopwatch.StartNew();
        var units = c.Units;
        int total = units.Sum(u => u.Float), done = 0;
        var cost = new double[units.Count][];
        var allFloat = units.Select(u => u.Float).ToArray();
        for (int u = 0; u < units.Count; u++)
        {
            cost[u] = new double[units[u].Choices.Count];
            for (int choice = 0; choice < units[u].Float; choice++)
            {
                cancel.ThrowIfCancellationRequested();
                var config = (int[])allFloat.Clone();
                config[u] = choice;
                cost[u][choice] = budget.Cost(c.Sensitivity(config));
                progress?.Report(new QuantizationProgress($"Measuring sensitivity ({units[u].Name} at {units[u].Choices[choice].Label})", (double)++done / Math.Max(1, total)));
            }
        }
        double limit = budget.CostLimit;
        var cheapest = Enumerable.Range(0, units.Count).SelectMany(u => Enumerable.Range(0, units[u].Float).Select(k => (u, k))).DefaultIfEmpty((u: -1, k: -1)).MinBy(p => p.u < 0 ? 0 : cost[p.u][p.k]);
        if (cheapest.u < 0 || cost[cheapest.u][cheapest.k] > limit)
            throw Unreachable(budget, cheapest.u < 0 ? "there is nothing to quantize" :
                $"the least sensitive choice, {units[cheapest.u].Name} alone at {units[cheapest.u].Choices[cheapest.k].Label}, already costs {Describe(budget, cost[cheapest.u][cheapest.k])}");
        Floor(cost, units);
        var tried = new List<BudgetCandidate>();
        var hulls = units.Select((unit, u) => Hull(unit, cost[u])).ToList();
        BudgetCandidate? best = null, last = null;
        double target = limit;
        double? passed = null, failed = null; // the largest budget given to the additive model that verified, the smallest that did not
        for (int step = 0; step < 4 * Rounds && tried.Count < Rounds; step++)
        {
            var config = Solve(units, hulls, cost, target);
            if (config.SequenceEqual(allFloat)) break;
            last = tried.FirstOrDefault(t => t.Config.SequenceEqual(config)) ?? Verify(c, budget, units, config, tried, progress);
            if (last.Met && (best is null || last.Bytes < best.Bytes)) best = last;
            double predicted = Predicted(cost, config), measured = budget.Cost(last.Figure);
            if (last.Met && measured >= 0.9 * limit) break;
            // The measured-to-predicted ratio rescales the budget (at most doubling it) while one side is unknown; then
            // bisection between what verified and what did not.
            double rescaled = measured <= 0 || predicted <= 0 ? target * 2 : limit * predicted / measured;
            if (last.Met) { passed = target; target = failed is { } f ? (target + f) / 2 : Math.Clamp(rescaled, target * 1.25, target * 2); }
            else { failed = target; target = passed is { } p ? (target + p) / 2 : Math.Min(rescaled, target * 0.75); }
            if (passed is { } lo && failed is { } hi && hi - lo < 1e-3 * limit) break;
        }
        // Every precision all units offer, set everywhere, smallest first: single-layer costs measured on a few rows can
        // mislead the additive model, but the result is never larger than a uniform setting that meets the budget.
        foreach (var uniform in Uniform(units).OrderBy(config => Bytes(units, config)))
        {
            cancel.ThrowIfCancellationRequested();
            if (best is not null && Bytes(units, uniform) >= best.Bytes) break;
            var candidate = tried.FirstOrDefault(t => t.Config.SequenceEqual(uniform)) ?? Verify(c, budget, units, uniform, tried, progress);
            if (candidate.Met) best = candidate;
        }
        best ??= Repair(c, budget, units, hulls, cost, last?.Config ?? Solve(units, hulls, cost, limit), tried, progress, cancel);
        return new BudgetResult(best.Config, cost, tried, best, c.Evaluator.Evaluations, clock.Elapsed.TotalSeconds);
    }

    /// <summary>One configuration per quantized choice that every unit offers (by label), that choice in every unit.</summary>
    static IEnumerable<int[]> Uniform(IReadOnlyList<BudgetUnit> units)
    {
        var labels = units[0].Choices.Take(units[0].Float).Select(ch => ch.Label)
            .Where(label => units.All(u => u.Choices.Take(u.Float).Any(ch => ch.Label == label)));
        foreach (var label in labels)
            yield return units.Select(u => u.Choices.Take(u.Float).Select((ch, k) => (ch, k)).First(x => x.ch.Label == label).k).ToArray();
    }

    static long Bytes(IReadOnlyList<BudgetUnit> units, int[] config) => units.Select((u, i) => u.Choices[config[i]].Bytes).Sum();

    static BudgetCandidate Verify(IBudgetCandidates c, QualityBudget budget, IReadOnlyList<BudgetUnit> units, int[] config, List<BudgetCandidate> tried, IProgress<QuantizationProgress>? progress)
    {
        progress?.Report(new QuantizationProgress($"Verifying a candidate on the validation data ({tried.Count + 1})", 1));
        double figure = c.Verify(config);
        var candidate = new BudgetCandidate(config, Bytes(units, config), figure, budget.Met(figure));
        tried.Add(candidate);
        return candidate;
    }

    /// <summary>Promotes the most sensitive quantized unit one hull step at a time until the configuration meets the budget.</summary>
    static BudgetCandidate Repair(IBudgetCandidates c, QualityBudget budget, IReadOnlyList<BudgetUnit> units, List<List<int>> hulls, double[][] cost,
        int[] start, List<BudgetCandidate> tried, IProgress<QuantizationProgress>? progress, CancellationToken cancel)
    {
        var config = (int[])start.Clone();
        while (true)
        {
            cancel.ThrowIfCancellationRequested();
            var promotable = Enumerable.Range(0, units.Count).Where(u => config[u] != units[u].Float).ToList();
            if (promotable.Count == 0) break;
            int worst = promotable.MaxBy(u => cost[u][config[u]]);
            var hull = hulls[worst];
            int at = hull.IndexOf(config[worst]);
            config[worst] = at > 0 ? hull[at - 1] : units[worst].Float;
            if (config.All((choice, u) => choice == units[u].Float)) break;
            var candidate = Verify(c, budget, units, config, tried, progress);
            if (candidate.Met) return candidate;
        }
        throw Unreachable(budget, $"no configuration with a quantized layer met it on the validation data ({tried.Count} tried, the closest {Describe(budget, tried.Min(t => budget.Cost(t.Figure)))})");
    }

    static bool All(this int[] config, Func<int, int, bool> predicate)
    {
        for (int i = 0; i < config.Length; i++) if (!predicate(config[i], i)) return false;
        return true;
    }

    static double Predicted(double[][] cost, int[] config) => config.Select((choice, u) => cost[u][choice]).Sum();

    /// <summary>
    /// Single-unit figures carry noise (a few rows decide them, and a quantized layer can even look helpful): a cost below
    /// the noise seen, the root mean square of the negative costs (true costs are not negative), counts as that noise,
    /// so the additive model does not take dozens of noisy near-zero steps as free.
    /// </summary>
    static void Floor(double[][] cost, IReadOnlyList<BudgetUnit> units)
    {
        var negative = Enumerable.Range(0, units.Count).SelectMany(u => Enumerable.Range(0, units[u].Float).Select(k => cost[u][k])).Where(v => v < 0).ToList();
        double noise = negative.Count == 0 ? 0 : Math.Sqrt(negative.Average(v => v * v));
        for (int u = 0; u < units.Count; u++)
            for (int k = 0; k < units[u].Float; k++) cost[u][k] = Math.Max(cost[u][k], noise);
    }

    /// <summary>A unit's choices that can be optimal for some budget: Pareto-optimal in (cost, size), with size saved per cost added decreasing.</summary>
    internal static List<int> Hull(BudgetUnit unit, double[] cost)
    {
        var order = Enumerable.Range(0, unit.Choices.Count).OrderBy(k => cost[k]).ThenBy(k => unit.Choices[k].Size);
        var pareto = new List<int>();
        double smallest = double.PositiveInfinity;
        foreach (int k in order)
            if (unit.Choices[k].Size < smallest) { pareto.Add(k); smallest = unit.Choices[k].Size; }
        var hull = new List<int>();
        foreach (int k in pareto)
        {
            while (hull.Count >= 2 && Efficiency(unit, cost, hull[^2], hull[^1]) <= Efficiency(unit, cost, hull[^1], k)) hull.RemoveAt(hull.Count - 1);
            hull.Add(k);
        }
        return hull;
    }

    static double Efficiency(BudgetUnit unit, double[] cost, int from, int to)
    {
        double saved = unit.Choices[from].Size - unit.Choices[to].Size, added = cost[to] - cost[from];
        return added <= 0 ? double.PositiveInfinity : saved / added;
    }

    /// <summary>The greedy solution: hull steps by efficiency while the summed cost stays within <paramref name="limit"/>.</summary>
    internal static int[] Solve(IReadOnlyList<BudgetUnit> units, List<List<int>> hulls, double[][] cost, double limit)
    {
        var position = new int[units.Count];
        double total = Enumerable.Range(0, units.Count).Sum(u => cost[u][hulls[u][0]]);
        var steps = Enumerable.Range(0, units.Count).SelectMany(u => Enumerable.Range(1, hulls[u].Count - 1).Select(j => (u, j, e: Efficiency(units[u], cost[u], hulls[u][j - 1], hulls[u][j]))))
            .OrderByDescending(s => s.e).ThenBy(s => s.u).ThenBy(s => s.j);
        var blocked = new HashSet<int>();
        foreach (var (u, j, _) in steps)
        {
            if (blocked.Contains(u) || position[u] != j - 1) continue;
            double added = cost[u][hulls[u][j]] - cost[u][hulls[u][j - 1]];
            if (total + added > limit) { blocked.Add(u); continue; }
            total += added;
            position[u] = j;
        }
        return Enumerable.Range(0, units.Count).Select(u => hulls[u][position[u]]).ToArray();
    }

    internal static string Describe(QualityBudget budget, double cost) => budget.Metric switch
    {
        BudgetMetric.PerplexityRise => string.Create(CultureInfo.InvariantCulture, $"+{cost * 100:F3} % perplexity"),
        BudgetMetric.Cosine => string.Create(CultureInfo.InvariantCulture, $"cosine {1 - cost:F5}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{cost * 100:F2} points of accuracy"),
    };

    static EngineException Unreachable(QualityBudget budget, string why) =>
        new("QuantizationBudgetUnreachable", EngineErrorKind.InvalidOperation,
            $"{budget} cannot be met with any layer quantized: {why}. Nothing was written; raise the budget, or quantize without one.");

    /// <summary>Writes the search into the report: the figure, the evaluations, and every verified candidate with the Pareto front marked.</summary>
    public static void Report(QuantizationReport report, QualityBudget budget, BudgetResult r, BudgetEvaluator e)
    {
        var m = report.Report.Metrics;
        m["BudgetLimit"] = budget.Value;
        m["ValidationFigure"] = r.Chosen.Figure;
        m["ValidationRows"] = e.Rows;
        m["SensitivityRows"] = e.SensitivityRowCount;
        m["BudgetEvaluations"] = r.Evaluations;
        m["BudgetSeconds"] = r.Seconds;
        int sensitivity = r.Cost.Sum(c => c.Length - 1);
        foreach (var (t, i) in r.Tried.Select((t, i) => (t, i)))
        {
            bool front = !r.Tried.Any(o => o != t && o.Bytes <= t.Bytes && budget.Cost(o.Figure) <= budget.Cost(t.Figure) && (o.Bytes < t.Bytes || budget.Cost(o.Figure) < budget.Cost(t.Figure)));
            report.Report.Entries.Add(new Onnx.ReportEntry($"candidate {i + 1}", "Model", QuantizationReport.Candidate,
                $"{t.Bytes:N0} bytes of weights, {budget.Format(t.Figure)} on the validation data: {(t.Met ? "meets" : "misses")} {budget}{(front ? "; on the Pareto front seen" : "")}{(ReferenceEquals(t, r.Chosen) ? "; chosen" : "")}")
            { Bytes = t.Bytes });
        }
        report.Note(string.Create(CultureInfo.InvariantCulture,
            $"{budget}: {budget.Format(r.Chosen.Figure)} on {e.Rows} validation row(s), found with {r.Evaluations} model evaluations ({sensitivity} single-layer sensitivities on {e.SensitivityRowCount} row(s), {r.Tried.Count} whole candidates verified) in {r.Seconds:F1} s.")
            + " The figure was measured on the data the search chose against, so it is optimistic: measure the result on test data with Compare-Model.");
    }
}
