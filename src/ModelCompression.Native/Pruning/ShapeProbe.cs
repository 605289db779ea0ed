using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Concrete shapes of every tensor, learned by running the model once in ONNX Runtime on synthesized inputs
/// with every node output exposed as a graph output. Structured pruning needs ranks and sizes that the file
/// often does not state, and the probe run doubles as the check that a rewritten model loads and runs.
/// </summary>
internal sealed class ShapeProbe
{
    ShapeProbe(Dictionary<string, long[]> shapes, Dictionary<string, long[]> outputs, string inputs)
    {
        Shapes = shapes;
        OutputShapes = outputs;
        InputDescription = inputs;
    }

    public Dictionary<string, long[]> Shapes { get; }
    public Dictionary<string, long[]> OutputShapes { get; }
    /// <summary>The input shapes the probe ran with, for reports ("x[1,3,64,64]").</summary>
    public string InputDescription { get; }

    public long[]? Shape(string tensor) => Shapes.TryGetValue(tensor, out var s) ? s : null;

    /// <summary>How many runs the node outputs are spread over, at most.</summary>
    const int OutputSlices = 8;

    public static ShapeProbe Run(OnnxModel model, long dimension, CancellationToken cancel)
    {
        cancel.ThrowIfCancellationRequested();
        var inputs = InputSynthesizer.Synthesize(model, new SynthesisOptions { BatchSize = 1, DefaultDimension = dimension });
        var probe = model.Proto.Clone();
        var graph = probe.Graph;
        var existing = graph.Output.Select(o => o.Name).ToHashSet(StringComparer.Ordinal);
        var inputNames = graph.Input.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var node in graph.Node)
            foreach (var o in node.Output)
                if (o.Length > 0 && existing.Add(o) && !inputNames.Contains(o)) graph.Output.Add(new ValueInfoProto { Name = o });
        var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
        foreach (var kv in inputs) shapes[kv.Key] = kv.Value.Shape;
        foreach (var t in model.Proto.Graph.Initializer) shapes[t.Name] = t.Dims.ToArray();
        var outputShapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
        try
        {
            using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
            using var session = RuntimeModel.Open(probe, model.Name, options);
            var names = inputs.Keys.ToList();
            var values = names.Select(n => ModelSession.ToOrtValue(inputs[n])).ToList();
            try
            {
                // Every node output at once would hold all of the model's activations together: ask for them in
                // slices (the same session, a few runs), so memory stays near one run's.
                var all = session.OutputMetadata.Keys.ToList();
                int slice = Math.Max(64, (all.Count + OutputSlices - 1) / OutputSlices);
                using var run = new RunOptions();
                using var stop = ModelSession.Terminate(run, cancel);
                foreach (var wanted in all.Chunk(slice))
                {
                    using var results = session.Run(run, names, values, wanted);
                    for (int i = 0; i < wanted.Length; i++)
                        if (results[i].IsTensor) shapes[wanted[i]] = results[i].GetTensorTypeAndShape().Shape;
                }
            }
            finally { foreach (var v in values) v.Dispose(); }
        }
        catch (OnnxRuntimeException) when (cancel.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancel);
        }
        catch (OnnxRuntimeException e)
        {
            throw new EngineException("PruningShapeProbeFailed", EngineErrorKind.InvalidOperation,
                $"ONNX Runtime could not run model '{model.Name}' to learn its tensor shapes: {e.Message}", e) { Target = model.SourcePath };
        }
        foreach (var o in model.Proto.Graph.Output) if (shapes.TryGetValue(o.Name, out var s)) outputShapes[o.Name] = s;
        string description = string.Join(", ", inputs.Select(kv => $"{kv.Key}[{string.Join(",", kv.Value.Shape)}]"));
        return new ShapeProbe(shapes, outputShapes, description);
    }
}
