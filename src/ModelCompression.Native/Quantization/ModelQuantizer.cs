using System.Globalization;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>Progress of a quantization: a phase name and the fraction done.</summary>
public readonly record struct QuantizationProgress(string Phase, double Fraction);

/// <summary>
/// Quantizes a model (Invoke-ModelQuantization): validates the options, refuses already-quantized models unless
/// forced, runs the mode's rewrite through <see cref="OnnxModel.Derive"/> and reports what changed.
/// </summary>
public static class ModelQuantizer
{
    public const string StageName = "Quantize";

    /// <summary>Operators that show a model is already quantized (or compressed to low-bit weights).</summary>
    public static readonly IReadOnlySet<string> QuantizedOps = new HashSet<string>(StringComparer.Ordinal)
    {
        "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul",
        "MatMulNBits", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm", "QAttention", "QLinearAdd", "QLinearMul", "GatherBlockQuantized",
    };

    public static OnnxModel Quantize(OnnxModel model, QuantizationOptions options, IProgress<QuantizationProgress>? progress = null, CancellationToken cancel = default)
    {
        options.Validate();
        var mode = QuantizationModes.For(options.Mode);
        if (!options.Force && AlreadyQuantized(model, options.Mode) is { } why)
            throw new EngineException("ModelAlreadyQuantized", EngineErrorKind.InvalidOperation,
                $"Model '{model.Name}' is already quantized ({why}). Use -Force to quantize it again.") { Target = model.SourcePath };

        var source = mode.Prepare(model, options, progress, cancel);
        var result = source.Derive(StageName, Parameters(options), proto =>
        {
            var report = new QuantizationReport($"{StageName} ({options.Mode})");
            long before = model.SerializedSize;
            var (wBefore, wAfter) = mode.Run(new QuantizationRun(source, proto, options, report, progress, cancel));
            if (report.Count == 0)
                throw new EngineException("QuantizationNothingToQuantize", EngineErrorKind.InvalidOperation,
                    $"Model '{model.Name}' has no node that -Mode {options.Mode} can quantize{NothingReason(report, options, mode)}.") { Target = model.SourcePath };
            if (!proto.OpsetImport.Any(op => op.Domain is "" or "ai.onnx")) proto.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 13 });
            report.Finish(before, proto.CalculateSize(), wBefore, wAfter);
            return report.Report;
        });
        progress?.Report(new QuantizationProgress("Done", 1));
        return result;
    }

    /// <summary>Why a model counts as already quantized for <paramref name="mode"/>, or null.</summary>
    public static string? AlreadyQuantized(OnnxModel model, QuantizationMode mode)
    {
        var graph = model.Proto.Graph;
        // Weight-only quantization leaves block-quantized operators (a model builder's MatMulNBits) as they are and quantizes the rest.
        var op = graph.Node.FirstOrDefault(n => QuantizedOps.Contains(n.OpType) && !(mode == QuantizationMode.WeightOnly && n.OpType is "MatMulNBits" or "GatherBlockQuantized"));
        if (op is not null) return $"it contains {op.OpType} node '{op.Name}'";
        if (mode == QuantizationMode.Float16)
        {
            var half = ModelIO.AllTensors(graph).FirstOrDefault(t => t.DataType == (int)DT.Float16 && TensorData.ElementCount(t) > 1);
            if (half is not null) return $"it already stores float16 weights ('{half.Name}')";
        }
        return null;
    }

    static string NothingReason(QuantizationReport report, QuantizationOptions options, IQuantizationMode mode)
    {
        var skipped = report.Report.Entries.Where(e => e.Action == QuantizationReport.Skipped).Take(3).ToList();
        if (skipped.Count > 0) return ": " + string.Join("; ", skipped.Select(e => $"{e.OpType} '{e.Target}': {e.Detail}"));
        IReadOnlyList<string> types = options.OpTypes ?? mode.DefaultOps;
        return types.Count == 0 ? " (no float32 tensor to convert)" : $" (it has no {string.Join(", ", types)} node with a constant float32 weight)";
    }

    static Dictionary<string, string> Parameters(QuantizationOptions o)
    {
        var p = new Dictionary<string, string>(StringComparer.Ordinal) { ["Mode"] = o.Mode.ToString() };
        void Add(string k, object? v) { if (v is not null) p[k] = Convert.ToString(v, CultureInfo.InvariantCulture)!; }
        Add("WeightType", o.WeightType); Add("Symmetric", o.Symmetric); Add("PerChannel", o.PerChannel);
        if (o.ReduceRange) p["ReduceRange"] = "True";
        if (o.OpTypes is not null) p["OpType"] = string.Join(",", o.OpTypes);
        if (o.ExcludeNodes.Count > 0) p["ExcludeNode"] = string.Join(",", o.ExcludeNodes);
        Add("Bits", o.Bits); Add("BlockSize", o.BlockSize); Add("Format", o.Format); Add("AccuracyLevel", o.AccuracyLevel);
        Add("Algorithm", o.Algorithm?.Name); Add("HeadBits", o.HeadBits);
        if (((o.Algorithm as AwqAlgorithm)?.Codes ?? o.Algorithm) is GptqAlgorithm gptq) { Add("Damping", gptq.Settings.DampingPercent); Add("ActOrder", gptq.Settings.ActOrder); }
        if (o.MixedPrecision == true) p["MixedPrecision"] = "True";
        if (o.LayerPrecision is { Count: > 0 } rules) p["LayerPrecision"] = string.Join(";", rules.Select(r => $"{r.Pattern}={r.Precision}"));
        if (o.Budget is { } budget) p[budget.ParameterName] = budget.Value.ToString(CultureInfo.InvariantCulture);
        if (o.ValidationData is not null) p["ValidationRows"] = o.ValidationData.Rows.ToString(CultureInfo.InvariantCulture);
        Add("KeepIOTypes", o.KeepIOTypes); Add("StorageOnly", o.StorageOnly);
        if (o.Float16BlockList is not null) p["Float16BlockList"] = string.Join(",", o.Float16BlockList);
        Add("CalibrationMethod", o.CalibrationMethod); Add("Percentile", o.Percentile); Add("ActivationType", o.ActivationType);
        Add("SkipOptimization", o.SkipOptimization); Add("CalibrationBatchSize", o.CalibrationBatchSize);
        if (o.CalibrationData is not null) p["CalibrationRows"] = o.CalibrationData.Rows.ToString(CultureInfo.InvariantCulture);
        if (o.Force) p["Force"] = "True";
        return p;
    }
}

/// <summary>Helpers shared by the modes.</summary>
internal static class QuantizationPlan
{
    /// <summary>The operator types a mode will touch: the user's list (checked against what the mode supports) or the defaults.</summary>
    public static HashSet<string> OpTypes(QuantizationOptions o, IReadOnlyList<string> defaults, IReadOnlyList<string> supported)
    {
        if (o.OpTypes is null) return defaults.ToHashSet(StringComparer.Ordinal);
        var result = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in o.OpTypes)
        {
            var match = supported.FirstOrDefault(s => string.Equals(s, t, StringComparison.OrdinalIgnoreCase));
            if (match is null)
                throw new EngineException("QuantizationOpTypeUnsupported", EngineErrorKind.InvalidArgument,
                    $"-Mode {o.Mode} cannot quantize operator type '{t}'{(o.Mode == QuantizationMode.Dynamic && t.StartsWith("Conv", StringComparison.OrdinalIgnoreCase) ? " (Conv is quantized by -Mode Static)" : "")}. Supported: {string.Join(", ", supported)}.");
            result.Add(match);
        }
        return result;
    }
}
