using ModelCompression.Native.Kernels;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// How -Mode WeightOnly picks each block's codes: one typed options record per algorithm (the shape of ONNX Runtime's
/// weight-only quantizer configs), each in its own file under Algorithms/ and registered once in
/// <see cref="WeightOnlyAlgorithms"/>. Null in <see cref="QuantizationOptions.Algorithm"/> means round to nearest.
/// </summary>
public abstract record WeightOnlyAlgorithm
{
    /// <summary>The name the cmdlet takes (RTN, HQQ, GPTQ, AWQ; AWQ+GPTQ for a combination).</summary>
    public abstract string Name { get; }

    /// <summary>Whether the algorithm cannot run without the layers' input statistics (calibration data).</summary>
    public virtual bool NeedsCalibrationData => false;

    /// <summary>Quantizes weight[K, N] (row-major); <paramref name="layer"/> carries the layer's input statistics when there are some.</summary>
    internal abstract BlockQuantized Quantize(float[] weight, WeightOnlyLayerSettings layer, CancellationToken cancel);

    /// <summary>
    /// Per-input-channel scales s for the layers that read one input (weights become diag(s) W, the input X diag(1/s),
    /// folded into what produces it), chosen before codes; null: none (the default). AWQ is the algorithm that has them.
    /// </summary>
    internal virtual float[]? InputScales(InputGroup group, CancellationToken cancel) => null;

    /// <summary>This algorithm followed by <paramref name="codes"/>, which then chooses the codes (AWQ then GPTQ).</summary>
    internal virtual WeightOnlyAlgorithm Then(WeightOnlyAlgorithm codes) =>
        throw new EngineException("QuantizationAlgorithmCombinationInvalid", EngineErrorKind.InvalidArgument,
            $"-Algorithm {Name} chooses the codes itself and cannot be followed by {codes.Name}; only a scaling algorithm (AWQ) comes first.");
}

/// <summary>What an algorithm needs to know about one layer's weight.</summary>
internal sealed record WeightOnlyLayerSettings(int K, int N, int Bits, int BlockSize, bool Symmetric, bool HalfScales, string What, LayerStatistics? Statistics)
{
    public float[]? Hessian => Statistics?.Hessian;
}

/// <summary>The layers that read one input, as an input-scaling algorithm sees them: their weights, precisions and the input's statistics.</summary>
internal sealed record InputGroup(string Input, LayerStatistics Statistics, IReadOnlyList<(float[] Weight, WeightOnlyLayerSettings Layer)> Members);

/// <summary>An algorithm in the table: its name, what it does, the cmdlet settings it reads, and how to make it.</summary>
public sealed record WeightOnlyAlgorithmInfo(string Name, string Summary, IReadOnlyList<string> Settings, bool ScalesInputs,
    Func<AlgorithmSettings, WeightOnlyAlgorithm> Make);

/// <summary>Algorithm settings as given (by the cmdlet's parameter names); each algorithm reads its own.</summary>
public sealed class AlgorithmSettings(IReadOnlyDictionary<string, object>? values)
{
    readonly IReadOnlyDictionary<string, object> values = values ?? new Dictionary<string, object>();

    public IEnumerable<string> Names => values.Keys;
    public double? Double(string name) => values.TryGetValue(name, out var v) ? Convert.ToDouble(v, System.Globalization.CultureInfo.InvariantCulture) : null;
    public bool? Switch(string name) => values.TryGetValue(name, out var v) ? Convert.ToBoolean(v, System.Globalization.CultureInfo.InvariantCulture) : null;
}

/// <summary>
/// The weight-only algorithms: one line each. The cmdlet's -Algorithm validation and completion read <see cref="Names"/>;
/// a new algorithm is a new file in Algorithms/ and a line here.
/// </summary>
public static class WeightOnlyAlgorithms
{
    public static readonly IReadOnlyList<WeightOnlyAlgorithmInfo> All =
    [
        new("RTN", "round to nearest: each block's range from its minimum and maximum", [], false, _ => new RoundToNearestAlgorithm()),
        new("HQQ", "half-quadratic: each block's scale and zero point fitted to its own weights, no data", [], false, _ => new HqqAlgorithm()),
        new("GPTQ", "error compensation with the inverse of the layer's input second moments (needs -CalibrationData)", GptqAlgorithm.SettingNames, false, GptqAlgorithm.From),
        new("AWQ", "activation-aware per-input-channel scales and clipping, searched on calibration activations (needs -CalibrationData)", [], true, _ => new AwqAlgorithm()),
    ];

    /// <summary>Every algorithm's name, in table order.</summary>
    public static IReadOnlyList<string> Names { get; } = All.Select(a => a.Name).ToArray();

    public static WeightOnlyAlgorithmInfo? Find(string name) => All.FirstOrDefault(a => string.Equals(a.Name, name, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// The algorithm for <paramref name="names"/>: one name, or a scaling algorithm followed by the one that chooses codes
    /// ("AWQ", "GPTQ"). Settings that none of them reads are refused.
    /// </summary>
    public static WeightOnlyAlgorithm? Create(IReadOnlyList<string>? names, IReadOnlyDictionary<string, object>? settings = null)
    {
        var given = new AlgorithmSettings(settings);
        var infos = (names ?? []).Select(n => Find(n) ?? throw new EngineException("QuantizationAlgorithmUnknown", EngineErrorKind.InvalidArgument,
            $"-Algorithm must be one of {string.Join(", ", Names)} (got '{n}').")).ToList();
        var unread = given.Names.Where(s => !infos.Any(i => i.Settings.Contains(s, StringComparer.OrdinalIgnoreCase))).ToList();
        if (unread.Count > 0)
        {
            var owners = unread.Select(s => All.FirstOrDefault(a => a.Settings.Contains(s, StringComparer.OrdinalIgnoreCase))?.Name).OfType<string>().Distinct();
            throw new EngineException("QuantizationParameterNotApplicable", EngineErrorKind.InvalidArgument,
                $"{string.Join(", ", unread.Select(s => "-" + s))} {(unread.Count == 1 ? "applies" : "apply")} to -Algorithm {string.Join(" or ", owners)} only" +
                $"{(infos.Count == 0 ? "" : $", not to {string.Join(", ", infos.Select(i => i.Name))}")}; remove {(unread.Count == 1 ? "it" : "them")}.");
        }
        if (infos.Count == 0) return null;
        if (infos.Count > 2 || infos.Count == 2 && (!infos[0].ScalesInputs || infos[1].ScalesInputs))
            throw new EngineException("QuantizationAlgorithmCombinationInvalid", EngineErrorKind.InvalidArgument,
                $"-Algorithm takes one algorithm, or a scaling algorithm ({string.Join(", ", All.Where(a => a.ScalesInputs).Select(a => a.Name))}) followed by one that chooses codes " +
                $"({string.Join(", ", All.Where(a => !a.ScalesInputs).Select(a => a.Name))}); got {string.Join(", ", infos.Select(i => i.Name))}.");
        var algorithm = infos[^1].Make(given);
        return infos.Count == 2 ? infos[0].Make(given).Then(algorithm) : algorithm;
    }
}
