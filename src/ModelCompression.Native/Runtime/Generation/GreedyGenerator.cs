using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using ModelCompression.Native.Onnx;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Runtime.Generation;

/// <summary>One greedy continuation: the new tokens, and each step's time in ms ([0] the prompt and first token, then one per further token).</summary>
public sealed record GenerationRun(long[] Tokens, double[] StepMs);

/// <summary>Which runtime generates: ONNX Runtime through the module's own loop, or ONNX Runtime GenAI (models from GenAI folders).</summary>
public enum GenerationEngine { Auto, OnnxRuntime, GenAI }

/// <summary>Greedy decoding of a language model with a key/value cache.</summary>
public interface IGreedyGenerator : IDisposable
{
    GenerationEngine Engine { get; }
    GenerationRun Generate(long[] prompt, int newTokens, CancellationToken cancel = default);
}

/// <summary>
/// The module's own greedy loop on ONNX Runtime, what a deployment without GenAI does: the prompt runs once with an
/// empty cache (the first token comes from its last position), then one token per run with the previous run's cache
/// fed back as it came out of ONNX Runtime (no copies). Inputs follow the model's <see cref="DecoderContract"/>.
/// </summary>
public sealed class OrtGreedyGenerator : IGreedyGenerator
{
    readonly ModelSession session;
    readonly DecoderContract contract;
    readonly string[] outputs;

    public OrtGreedyGenerator(OnnxModel model, SessionSettings? settings = null)
    {
        contract = DecoderContract.RequireGenerative(model, "greedy generation");
        session = new ModelSession(model, settings);
        outputs = [contract.Logits!, .. contract.Cache.Select(c => c.Output)];
    }

    public GenerationEngine Engine => GenerationEngine.OnnxRuntime;

    public GenerationRun Generate(long[] prompt, int newTokens, CancellationToken cancel = default)
    {
        var tokens = new long[newTokens];
        var steps = new double[newTokens];
        var past = contract.Cache.Select(c => EmptyCache(c)).ToArray();
        using var runOptions = new RunOptions();
        using var stop = ModelSession.Terminate(runOptions, cancel);
        try
        {
            long[] step = prompt;
            for (int i = 0; i < newTokens; i++)
            {
                cancel.ThrowIfCancellationRequested();
                long start = Stopwatch.GetTimestamp();
                int pastLength = prompt.Length + i - step.Length;
                var names = new List<string>();
                var made = new List<OrtValue>();
                try
                {
                    Add(names, made, contract.Tokens, step, [1, step.Length]);
                    if (contract.AttentionMask is { } m) Add(names, made, m, Ones(pastLength + step.Length), [1, pastLength + step.Length]);
                    if (contract.PositionIds is { } p) Add(names, made, p, Range(pastLength, step.Length), [1, step.Length]);
                    if (contract.TokenTypeIds is { } tt) Add(names, made, tt, new long[step.Length], [1, step.Length]);
                    names.AddRange(contract.Cache.Select(c => c.Input));
                    var results = session.RunValues(names, [.. made, .. past], outputs, runOptions);
                    tokens[i] = LastArgMax(results[0]);
                    results[0].Dispose();
                    // The presents become the next step's pasts.
                    foreach (var v in past) v.Dispose();
                    past = results.Skip(1).ToArray();
                }
                finally
                {
                    foreach (var v in made) v.Dispose();
                }
                steps[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                step = [tokens[i]];
            }
        }
        catch (OnnxRuntimeException) when (cancel.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancel);
        }
        catch (OnnxRuntimeException e)
        {
            throw new EngineException("ModelRunFailed", EngineErrorKind.InvalidOperation, $"ONNX Runtime failed to generate with '{session.Model.Name}': {e.Message}", e) { Target = session.Model.SourcePath };
        }
        finally
        {
            foreach (var v in past) v.Dispose();
        }
        return new GenerationRun(tokens, steps);
    }

    static OrtValue EmptyCache(CacheEntry c) => c.ElementType == (int)DT.Float16
        ? OrtValue.CreateTensorValueFromMemory(Array.Empty<Float16>(), [1, c.Heads, 0, c.HeadSize])
        : OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [1, c.Heads, 0, c.HeadSize]);

    static void Add(List<string> names, List<OrtValue> values, ValueSignature s, long[] data, long[] shape)
    {
        names.Add(s.Name);
        values.Add((DT)s.ElementTypeCode switch
        {
            DT.Int32 => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(data, v => (int)v), shape),
            DT.Float => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(data, v => (float)v), shape),
            DT.Bool => OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(data, v => v != 0), shape),
            _ => OrtValue.CreateTensorValueFromMemory(data, shape),
        });
    }

    static long[] Ones(int n) { var r = new long[n]; Array.Fill(r, 1L); return r; }
    static long[] Range(int from, int n) { var r = new long[n]; for (int i = 0; i < n; i++) r[i] = from + i; return r; }

    /// <summary>The most likely token at the last position of logits [1, sequence, vocabulary].</summary>
    internal static long LastArgMax(OrtValue logits)
    {
        var info = logits.GetTensorTypeAndShape();
        int vocab = (int)info.Shape[^1];
        if (info.ElementDataType == TensorElementType.Float16)
        {
            var h = logits.GetTensorDataAsSpan<Float16>();
            h = h[^vocab..];
            int best = 0;
            for (int i = 1; i < vocab; i++) if ((float)h[i] > (float)h[best]) best = i;
            return best;
        }
        var f = logits.GetTensorDataAsSpan<float>()[^vocab..];
        return System.Numerics.Tensors.TensorPrimitives.IndexOfMax(f);
    }

    public void Dispose() => session.Dispose();
}
