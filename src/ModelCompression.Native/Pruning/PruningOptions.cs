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

    public const long DefaultMinElements = 1024;
    public static readonly IReadOnlyList<string> SupportedOpTypes = ["MatMul", "Gemm", "Conv"];

    /// <summary>The method this option set asks for, for reports and history.</summary>
    public string Method => Structured ? "Structured" : Pattern is { } p ? $"N:M {p}" : "Unstructured";

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
            if (Rate is not { } rate) throw new EngineException("PruningRateRequired", EngineErrorKind.InvalidArgument, "Give -Rate (a fraction in [0, 1)) or -Pattern N:M.");
            if (double.IsNaN(rate) || rate < 0 || rate >= 1)
                throw new EngineException("PruningRateOutOfRange", EngineErrorKind.InvalidArgument,
                    $"Rate {rate.ToString(CultureInfo.InvariantCulture)} is outside [0, 1): it is the fraction of weights or channels removed.");
        }
        if (Seed is not null && Criterion != PruningCriterion.Random)
            Conflict("-Seed only applies to -Criterion Random.");
        if (CalibrationData is not null && Criterion != PruningCriterion.Activation)
            Conflict("-CalibrationData only applies to -Criterion Activation.");
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
        if (Pattern is null) p["Scope"] = Scope.ToString();
        if (OpTypes.Count > 0) p["OpType"] = string.Join(",", OpTypes);
        if (ExcludeNodes.Count > 0) p["ExcludeNode"] = string.Join(",", ExcludeNodes);
        p["MinElements"] = MinElements.ToString(CultureInfo.InvariantCulture);
        if (Seed is { } s) p["Seed"] = s.ToString(CultureInfo.InvariantCulture);
        if (CalibrationData is { } d) p["CalibrationData"] = d.Source;
        return p;
    }

    static void Conflict(string message) => throw new EngineException("PruningOptionConflict", EngineErrorKind.InvalidArgument, message);
}
