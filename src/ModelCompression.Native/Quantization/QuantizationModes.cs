using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Quantization;

/// <summary>Everything one quantization run works with: the model as calibrated, the copy being rewritten, options, report, progress.</summary>
internal sealed record QuantizationRun(OnnxModel Source, ModelProto Model, QuantizationOptions Options, QuantizationReport Report,
    IProgress<QuantizationProgress>? Progress, CancellationToken Cancel);

/// <summary>One quantization mode: the operator types it touches and the rewrite. Registered once in <see cref="QuantizationModes"/>.</summary>
internal interface IQuantizationMode
{
    QuantizationMode Mode { get; }
    IReadOnlyList<string> DefaultOps { get; }
    IReadOnlyList<string> SupportedOps { get; }

    /// <summary>The model the mode calibrates on and rewrites (static quantization optimizes it first).</summary>
    OnnxModel Prepare(OnnxModel model, QuantizationOptions options, IProgress<QuantizationProgress>? progress, CancellationToken cancel) => model;

    /// <summary>Rewrites <see cref="QuantizationRun.Model"/>; returns the bytes of the weights it replaced and of what replaced them.</summary>
    (long Before, long After) Run(QuantizationRun run);
}

/// <summary>The quantization modes, one line each; the cmdlet's -OpType completion reads <see cref="OpTypes"/>.</summary>
public static class QuantizationModes
{
    static readonly IReadOnlyDictionary<QuantizationMode, IQuantizationMode> All = new IQuantizationMode[]
    {
        new DynamicQuantizer(), new StaticQuantizer(), new WeightOnlyQuantizer(), new Float16Mode(),
    }.ToDictionary(m => m.Mode);

    internal static IQuantizationMode For(QuantizationMode mode) => All[mode];

    /// <summary>Every operator type some mode can quantize.</summary>
    public static IReadOnlyList<string> OpTypes { get; } = All.Values.SelectMany(m => m.SupportedOps).Distinct(StringComparer.Ordinal).ToArray();

    /// <summary>The operator types <paramref name="mode"/> can quantize.</summary>
    public static IReadOnlyList<string> SupportedOps(QuantizationMode mode) => All[mode].SupportedOps;
}

/// <summary>Progress that reports on the caller's thread, in order (<see cref="Progress{T}"/> posts to the thread pool).</summary>
internal sealed class ActionProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
