using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Runtime;

/// <summary>How to open an ONNX Runtime session.</summary>
public sealed record SessionSettings
{
    public string Provider { get; init; } = "CPU";
    public int IntraOpThreads { get; init; }
    public int InterOpThreads { get; init; }
    /// <summary>Basic, Extended, All or None; null keeps ONNX Runtime's default (All).</summary>
    public string? GraphOptimization { get; init; }
    /// <summary>
    /// Whether idle intra- and inter-op threads spin waiting for work (ONNX Runtime's default). Sessions that take turns
    /// (an A/B measurement) turn it off: each session's idle pool would otherwise spin on the cores the other needs.
    /// </summary>
    public bool AllowSpinning { get; init; } = true;

    internal SessionOptions Create()
    {
        var o = OrtObjects.SessionOptions();
        if (IntraOpThreads > 0) o.IntraOpNumThreads = IntraOpThreads;
        if (InterOpThreads > 0) o.InterOpNumThreads = InterOpThreads;
        if (GraphOptimization is not null) o.GraphOptimizationLevel = OptimizationLevel(GraphOptimization);
        if (!AllowSpinning)
        {
            o.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
            o.AddSessionConfigEntry("session.inter_op.allow_spinning", "0");
        }
        ExecutionProviders.Append(o, Provider);
        return o;
    }

    public static GraphOptimizationLevel OptimizationLevel(string level) => level.ToLowerInvariant() switch
    {
        "none" or "disabled" => GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic" => GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended" => GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all" => GraphOptimizationLevel.ORT_ENABLE_ALL,
        _ => throw new EngineException("GraphOptimizationLevelInvalid", EngineErrorKind.InvalidArgument, $"Unknown graph optimization level '{level}'; use None, Basic, Extended or All."),
    };
}

/// <summary>Execution providers: which exist in this ONNX Runtime build, and turning a name into session options.</summary>
public static class ExecutionProviders
{
    public static IReadOnlyList<string> Available() => OrtObjects.Environment.GetAvailableProviders()
        .Select(p => p.EndsWith("ExecutionProvider", StringComparison.Ordinal) ? p[..^"ExecutionProvider".Length] : p).ToList();

    internal static void Append(SessionOptions options, string provider)
    {
        var available = Available();
        string? match = available.FirstOrDefault(p => string.Equals(p, provider, StringComparison.OrdinalIgnoreCase));
        if (match is null)
            throw new EngineException("ExecutionProviderUnavailable", EngineErrorKind.NotImplemented,
                $"Execution provider '{provider}' is not available in this ONNX Runtime build. Available here: {string.Join(", ", available)}.");
        if (match == "CPU") return;
        try { options.AppendExecutionProvider(match + "ExecutionProvider", new Dictionary<string, string>()); }
        catch (OnnxRuntimeException e)
        {
            throw new EngineException("ExecutionProviderFailed", EngineErrorKind.InvalidOperation, $"Execution provider '{match}' could not be started: {e.Message}", e);
        }
    }
}

/// <summary>
/// An ONNX Runtime session over an <see cref="OnnxModel"/>, with inputs and outputs as <see cref="NamedArray"/>s.
/// </summary>
public sealed class ModelSession : IDisposable
{
    readonly InferenceSession session;

    /// <summary>Opens a session; cancelling <paramref name="cancel"/> gives up waiting for ONNX Runtime to load the model.</summary>
    public ModelSession(OnnxModel model, SessionSettings? settings = null, CancellationToken cancel = default)
    {
        Model = model;
        try { session = RuntimeModel.Open(model, settings ?? new SessionSettings(), cancel); }
        catch (OnnxRuntimeException e)
        {
            throw new EngineException("ModelSessionFailed", EngineErrorKind.InvalidData,
                $"ONNX Runtime cannot load model '{model.Name}': {e.Message}", e) { Target = model.SourcePath };
        }
        OutputNames = session.OutputMetadata.Keys.ToList();
    }

    public OnnxModel Model { get; }
    public IReadOnlyList<string> OutputNames { get; }

    /// <summary>Runs the model; every input must be given. Cancelling the token stops ONNX Runtime mid-run.</summary>
    public IReadOnlyList<NamedArray> Run(IReadOnlyDictionary<string, NamedArray> inputs, IReadOnlyList<string>? outputs = null, CancellationToken cancel = default)
    {
        var wanted = outputs ?? OutputNames;
        return Execute(inputs, cancel, (runOptions, names, values) =>
        {
            using var results = session.Run(runOptions, names, values, wanted);
            return results.Select((r, i) => FromOrtValue(wanted[i], r)).ToList();
        });
    }

    /// <summary>
    /// Runs the model and writes one float output straight into <paramref name="destination"/>, whose shape the caller
    /// knows (<paramref name="outputShape"/>): no copy of the output, for a model run every training step.
    /// </summary>
    public void RunInto(IReadOnlyDictionary<string, NamedArray> inputs, string output, float[] destination, long[] outputShape, CancellationToken cancel = default) =>
        Execute(inputs, cancel, (runOptions, names, values) =>
        {
            using var result = OrtValue.CreateTensorValueFromMemory(destination, outputShape);
            session.Run(runOptions, names, values, [output], [result]);
            return true;
        });

    /// <summary>One ONNX Runtime run: inputs as OrtValues, terminated when the token is cancelled, failures as engine errors.</summary>
    T Execute<T>(IReadOnlyDictionary<string, NamedArray> inputs, CancellationToken cancel, Func<RunOptions, List<string>, List<OrtValue>, T> run)
    {
        cancel.ThrowIfCancellationRequested();
        var names = inputs.Keys.ToList();
        var values = new List<OrtValue>(names.Count);
        try
        {
            foreach (var name in names) values.Add(ToOrtValue(inputs[name]));
            using var runOptions = OrtObjects.RunOptions();
            using var stop = Terminate(runOptions, cancel);
            return run(runOptions, names, values);
        }
        catch (OnnxRuntimeException) when (cancel.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancel);
        }
        catch (OnnxRuntimeException e)
        {
            throw new EngineException("ModelRunFailed", EngineErrorKind.InvalidOperation, $"ONNX Runtime failed to run '{Model.Name}': {e.Message}", e) { Target = Model.SourcePath };
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    /// <summary>Makes a cancellation stop the ONNX Runtime run that <paramref name="options"/> belongs to.</summary>
    internal static CancellationTokenRegistration Terminate(RunOptions options, CancellationToken cancel) =>
        cancel.Register(() => options.Terminate = true);

    /// <summary>Runs with pre-built OrtValues and discards the outputs: the latency hot path.</summary>
    internal void RunDiscard(IReadOnlyList<string> inputNames, IReadOnlyList<OrtValue> values, RunOptions runOptions)
    {
        using var results = session.Run(runOptions, inputNames, values, OutputNames);
    }

    /// <summary>Runs with pre-built OrtValues and returns the outputs as OrtValues (the caller disposes them): generation's loop, which feeds one step's cache to the next without copies.</summary>
    internal IDisposableReadOnlyCollection<OrtValue> RunValues(IReadOnlyList<string> inputNames, IReadOnlyList<OrtValue> values, IReadOnlyList<string> outputNames, RunOptions runOptions) =>
        session.Run(runOptions, inputNames, values, outputNames);

    internal static OrtValue ToOrtValue(NamedArray a) => a.Data switch
    {
        float[] f => OrtValue.CreateTensorValueFromMemory(f, a.Shape),
        double[] d => OrtValue.CreateTensorValueFromMemory(d, a.Shape),
        long[] l => OrtValue.CreateTensorValueFromMemory(l, a.Shape),
        int[] i => OrtValue.CreateTensorValueFromMemory(i, a.Shape),
        byte[] b => OrtValue.CreateTensorValueFromMemory(b, a.Shape),
        sbyte[] s => OrtValue.CreateTensorValueFromMemory(s, a.Shape),
        bool[] b => OrtValue.CreateTensorValueFromMemory(b, a.Shape),
        Half[] h => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(h, v => new Float16(BitConverter.HalfToUInt16Bits(v))), a.Shape),
        _ => throw new EngineException("ArrayTypeUnsupported", EngineErrorKind.InvalidData, $"Input '{a.Name}' has unsupported element type {a.ElementType.Name}."),
    };

    static NamedArray FromOrtValue(string name, OrtValue v)
    {
        if (!v.IsTensor)
            throw new EngineException("OutputNotTensor", EngineErrorKind.NotImplemented, $"Output '{name}' is not a tensor; only tensor outputs are compared.");
        var info = v.GetTensorTypeAndShape();
        long[] shape = info.Shape;
        Array data = info.ElementDataType switch
        {
            TensorElementType.Float => v.GetTensorDataAsSpan<float>().ToArray(),
            TensorElementType.Double => v.GetTensorDataAsSpan<double>().ToArray(),
            TensorElementType.Int64 => v.GetTensorDataAsSpan<long>().ToArray(),
            TensorElementType.Int32 => v.GetTensorDataAsSpan<int>().ToArray(),
            TensorElementType.UInt8 => v.GetTensorDataAsSpan<byte>().ToArray(),
            TensorElementType.Int8 => v.GetTensorDataAsSpan<sbyte>().ToArray(),
            TensorElementType.Bool => v.GetTensorDataAsSpan<bool>().ToArray(),
            TensorElementType.Float16 => v.GetTensorDataAsSpan<Float16>().ToArray().Select(h => (float)BitConverter.UInt16BitsToHalf(h.value)).ToArray(),
            var t => throw new EngineException("OutputTypeUnsupported", EngineErrorKind.NotImplemented, $"Output '{name}' has element type {t}, which is not supported."),
        };
        return new NamedArray(name, shape, data);
    }

    public void Dispose() => session.Dispose();
}
