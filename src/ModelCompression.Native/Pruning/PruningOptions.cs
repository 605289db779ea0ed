using System.Globalization;
using System.Text.RegularExpressions;
using ModelCompression.Native.Data;

namespace ModelCompression.Native.Pruning;

/// <summary>Where one threshold applies: each layer on its own, or one threshold across all layers.</summary>
public enum PruningScope { Layer, Global }

/// <summary>How a weight's (or a channel's) importance is scored.</summary>
public enum PruningCriterion
{
    /// <summary>|w| (unstructured, N:M) or the L1 norm of the channel's weights (structured).</summary>
    Magnitude,
    /// <summary>Uniform random scores from <see cref="PruningOptions.Seed"/>: a baseline, not a method.</summary>
    Random,
    /// <summary>|w| × L2 norm of the weight's input activation over calibration data (Wanda).</summary>
    Activation,
}

/// <summary>N:M semi-structured sparsity: at most N non-zeros in every group of M consecutive weights along the input dimension.</summary>
public readonly record struct SparsityPattern(int N, int M)
{
    public override string ToString() => $"{N}:{M}";

    /// <summary>Parses "2:4"; N must be at least 1 and below M.</summary>
    public static SparsityPattern Parse(string text)
    {
        var parts = (text ?? "").Split(':');
        if (parts.Length != 2 || !int.TryParse(parts[0].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int n)
            || !int.TryParse(parts[1].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out int m))
            throw new EngineException("PruningPatternInvalid", EngineErrorKind.InvalidArgument,
                $"Pattern '{text}' is not of the form N:M (for example 2:4).");
        var p = new SparsityPattern(n, m);
        p.Validate();
        return p;
    }

    public void Validate()
    {
        if (N < 1 || M < 2 || N >= M || M > 256)
            throw new EngineException("PruningPatternInvalid", EngineErrorKind.InvalidArgument,
                $"Pattern {N}:{M} is invalid: N must be at least 1 and smaller than M (M at most 256), for example 2:4.");
    }
}

/// <summary>What <see cref="ModelPruner"/> does. Options that do not apply to the chosen method are refused, never ignored.</summary>
public sealed record PruningOptions
{
    /// <summary>Fraction of weights (unstructured) or channels (structured) to remove, in [0, 1). Not used with <see cref="Pattern"/>.</summary>
    public double? Rate { get; init; }
    public PruningScope Scope { get; init; } = PruningScope.Layer;
    public PruningCriterion Criterion { get; init; } = PruningCriterion.Magnitude;
    public SparsityPattern? Pattern { get; init; }
    public bool Structured { get; init; }
    /// <summary>Required for <see cref="PruningCriterion.Activation"/>; refused otherwise.</summary>
    public DataSet? CalibrationData { get; init; }
    /// <summary>Calibration batch size (rows per ONNX Runtime run).</summary>
    public int CalibrationBatchSize { get; init; } = 32;
    /// <summary>Op types whose weights are pruned; empty means MatMul, Gemm and Conv.</summary>
    public IReadOnlyList<string> OpTypes { get; init; } = [];
    /// <summary>
    /// Node names (wildcards * and ?) whose own weights are not pruned. With structured pruning an excluded layer keeps
    /// its output channels, but still loses the input rows/channels that a pruned layer before it no longer produces.
    /// </summary>
    public IReadOnlyList<string> ExcludeNodes { get; init; } = [];
    /// <summary>Weights with fewer elements than this are skipped.</summary>
    public long MinElements { get; init; } = DefaultMinElements;
    /// <summary>Seed for <see cref="PruningCriterion.Random"/>; refused with other criteria.</summary>
    public int? Seed { get; init; }
    /// <summary>Symbolic input dimensions for the shape probe that structured pruning runs (default: batch 1, others 64).</summary>
    public long ProbeDimension { get; init; } = 64;
    /// <summary>The parts structured pruning removes (empty: every part that has a rate).</summary>
    public IReadOnlyList<PrunedPart> Targets { get; init; } = [];
    /// <summary>Per-part rates for structured pruning; each overrides <see cref="Rate"/> for its part.</summary>
    public double? HeadRate { get; init; }
    public double? HiddenRate { get; init; }
    public double? FfnRate { get; init; }
    /// <summary>
    /// Grouped-query attention: the fraction of key/value heads removed, each with the query heads it serves (the
    /// cache shrinks). Unlike the other parts, -Rate covers it only when <see cref="Targets"/> names it.
    /// </summary>
    public double? KeyValueHeadRate { get; init; }
    /// <summary>How many residual blocks to remove, those that change their input least on <see cref="CalibrationData"/>.</summary>
    public int? RemoveBlocks { get; init; }
    /// <summary>Names (wildcards * and ?) of residual blocks to remove.</summary>
    public IReadOnlyList<string> RemoveBlockNames { get; init; } = [];

    public const long DefaultMinElements = 1024;
    public static readonly IReadOnlyList<string> SupportedOpTypes = ["MatMul", "Gemm", "Conv"];

    /// <summary>The method this option set asks for, for reports and history.</summary>
    public string Method => Structured ? "Structured" : Pattern is { } p ? $"N:M {p}" : RemovesBlocks ? "Depth" : "Unstructured";

    /// <summary>Whether whole residual blocks are removed (-RemoveBlocks or -RemoveBlockName).</summary>
    public bool RemovesBlocks => RemoveBlocks is not null || RemoveBlockNames.Count > 0;

    /// <summary>The rate of one part of structured pruning: its own rate, else -Rate; 0 for parts -Target leaves out.</summary>
    public double RateFor(PrunedPart part)
    {
        if (!Structured || (Targets.Count > 0 && !Targets.Contains(part))) return 0;
        if (PartRate(part) is { } own) return own;
        // Whole key/value groups go only when asked: -Rate already removes query heads within them.
        return part == PrunedPart.KeyValueHeads && !Targets.Contains(part) ? 0 : Rate ?? 0;
    }

    double? PartRate(PrunedPart part) => part switch
    {
        PrunedPart.Heads => HeadRate, PrunedPart.Hidden => HiddenRate, PrunedPart.KeyValueHeads => KeyValueHeadRate, _ => FfnRate,
    };

    /// <summary>Checks ranges and refuses combinations where an option would be ignored.</summary>
    public void Validate()
    {
        if (Pattern is { } pattern)
        {
            pattern.Validate();
            if (Rate is not null) Conflict("-Rate cannot be combined with -Pattern: an N:M pattern fixes the rate at 1 - N/M.");
            if (Structured) Conflict("-Pattern (N:M) and -Structured are different methods; choose one.");
            if (Scope == PruningScope.Global) Conflict("-Scope Global does not apply to -Pattern: N:M keeps N of every M weights in each group.");
        }
        else
        {
            bool partRates = Enum.GetValues<PrunedPart>().Any(p => PartRate(p) is not null);
            if (Rate is null && !(Structured && partRates) && !(RemovesBlocks && !Structured))
                throw new EngineException("PruningRateRequired", EngineErrorKind.InvalidArgument,
                    Structured ? "Give -Rate (a fraction in [0, 1)) or a rate per part (-HeadRate, -KeyValueHeadRate, -HiddenRate, -FfnRate)." : "Give -Rate (a fraction in [0, 1)), -Pattern N:M, or blocks to remove (-RemoveBlocks, -RemoveBlockName).");
            CheckRate("Rate", Rate);
            CheckRate("HeadRate", HeadRate);
            CheckRate("HiddenRate", HiddenRate);
            CheckRate("FfnRate", FfnRate);
            CheckRate("KeyValueHeadRate", KeyValueHeadRate);
        }
        if (!Structured)
        {
            if (Targets.Count > 0) Conflict("-Target selects the parts of structured pruning; add -Structured.");
            foreach (var p in Enum.GetValues<PrunedPart>())
                if (PartRate(p) is not null) Conflict($"-{RateName(p)} is a rate of structured pruning; add -Structured.");
        }
        else
            foreach (var p in Enum.GetValues<PrunedPart>())
                if (PartRate(p) is not null && Targets.Count > 0 && !Targets.Contains(p))
                    Conflict($"-{RateName(p)} is given but -Target leaves {p} out.");
        if (RemovesBlocks)
        {
            if (RemoveBlocks is not null && RemoveBlockNames.Count > 0) Conflict("Give either -RemoveBlocks (a count chosen on calibration data) or -RemoveBlockName (blocks by name), not both.");
            if (RemoveBlocks is < 1)
                throw new EngineException("PruningRemoveBlocksInvalid", EngineErrorKind.InvalidArgument, $"-RemoveBlocks {RemoveBlocks} is not a number of blocks; give 1 or more.");
            if (!Structured && (Rate is not null || Pattern is not null))
                Conflict("Removing blocks combines with structured width pruning (-Structured -Rate) or stands alone; it does not combine with zeroing weights (-Rate without -Structured, -Pattern).");
            if (RemoveBlocks is not null && CalibrationData is null)
                throw new EngineException("PruningCalibrationDataRequired", EngineErrorKind.InvalidArgument,
                    "-RemoveBlocks picks the blocks that change their input least on -CalibrationData (a .npz, .npy or .csv file or folder); give it, or name the blocks with -RemoveBlockName.");
            if (!Structured && Rate is null)
            {
                if (Scope == PruningScope.Global) Conflict("-Scope Global ranks weights or channels; removing blocks alone has none to rank.");
                if (Criterion != PruningCriterion.Magnitude) Conflict("-Criterion scores weights or channels; removing blocks alone scores blocks by how little they change their input.");
            }
        }
        if (Seed is not null && Criterion != PruningCriterion.Random)
            Conflict("-Seed only applies to -Criterion Random.");
        if (CalibrationData is not null && Criterion != PruningCriterion.Activation && RemoveBlocks is null)
            Conflict("-CalibrationData only applies to -Criterion Activation and -RemoveBlocks.");
        if (Criterion == PruningCriterion.Activation && CalibrationData is null)
            throw new EngineException("PruningCalibrationDataRequired", EngineErrorKind.InvalidArgument,
                "-Criterion Activation scores weights by their input activations and needs -CalibrationData (a .npz, .npy or .csv file or folder).");
        if (MinElements < 0) throw new EngineException("PruningMinElementsInvalid", EngineErrorKind.InvalidArgument, "-MinElements cannot be negative.");
        if (CalibrationBatchSize < 1) throw new EngineException("PruningBatchSizeInvalid", EngineErrorKind.InvalidArgument, "The calibration batch size must be at least 1.");
        foreach (var op in OpTypes)
            if (!SupportedOpTypes.Contains(op, StringComparer.OrdinalIgnoreCase))
                throw new EngineException("PruningOpTypeUnsupported", EngineErrorKind.InvalidArgument,
                    $"Op type '{op}' cannot be pruned; supported: {string.Join(", ", SupportedOpTypes)}.");
    }

    static void CheckRate(string name, double? value)
    {
        if (value is { } rate && (double.IsNaN(rate) || rate < 0 || rate >= 1))
            throw new EngineException("PruningRateOutOfRange", EngineErrorKind.InvalidArgument,
                $"{(name == "Rate" ? "Rate" : "-" + name)} {rate.ToString(CultureInfo.InvariantCulture)} is outside [0, 1): it is the fraction of weights or channels removed.");
    }

    static string RateName(PrunedPart part) => part switch
    {
        PrunedPart.Heads => "HeadRate", PrunedPart.Hidden => "HiddenRate", PrunedPart.KeyValueHeads => "KeyValueHeadRate", _ => "FfnRate",
    };

    /// <summary>The op types to prune, with canonical spelling.</summary>
    internal IReadOnlySet<string> EffectiveOpTypes => (OpTypes.Count == 0 ? SupportedOpTypes
        : OpTypes.Select(o => SupportedOpTypes.First(s => string.Equals(s, o, StringComparison.OrdinalIgnoreCase)))).ToHashSet(StringComparer.Ordinal);

    internal bool IsExcluded(string nodeName)
    {
        foreach (var pattern in ExcludeNodes)
            if (Wildcard(pattern).IsMatch(nodeName)) return true;
        return false;
    }

    static Regex Wildcard(string pattern) =>
        new("^" + Regex.Escape(pattern).Replace("\\*", ".*", StringComparison.Ordinal).Replace("\\?", ".", StringComparison.Ordinal) + "$",
            RegexOptions.IgnoreCase | RegexOptions.CultureInvariant | RegexOptions.Singleline);

    /// <summary>The parameters as the history records them.</summary>
    internal IReadOnlyDictionary<string, string> ToParameters()
    {
        var p = new Dictionary<string, string>(StringComparer.Ordinal) { ["Method"] = Method, ["Criterion"] = Criterion.ToString() };
        if (Rate is { } r) p["Rate"] = r.ToString("R", CultureInfo.InvariantCulture);
        if (Pattern is { } pat) p["Pattern"] = pat.ToString();
        if (Pattern is null && (Rate is not null || Structured)) p["Scope"] = Scope.ToString();
        if (OpTypes.Count > 0) p["OpType"] = string.Join(",", OpTypes);
        if (ExcludeNodes.Count > 0) p["ExcludeNode"] = string.Join(",", ExcludeNodes);
        p["MinElements"] = MinElements.ToString(CultureInfo.InvariantCulture);
        if (Seed is { } s) p["Seed"] = s.ToString(CultureInfo.InvariantCulture);
        if (CalibrationData is { } d) p["CalibrationData"] = d.Source;
        if (Targets.Count > 0) p["Target"] = string.Join(",", Targets);
        foreach (var part in Enum.GetValues<PrunedPart>())
            if (PartRate(part) is { } pr) p[RateName(part)] = pr.ToString("R", CultureInfo.InvariantCulture);
        if (RemoveBlocks is { } rb) p["RemoveBlocks"] = rb.ToString(CultureInfo.InvariantCulture);
        if (RemoveBlockNames.Count > 0) p["RemoveBlockName"] = string.Join(",", RemoveBlockNames);
        return p;
    }

    static void Conflict(string message) => throw new EngineException("PruningOptionConflict", EngineErrorKind.InvalidArgument, message);
}
