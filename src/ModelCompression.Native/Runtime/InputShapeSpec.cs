using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Runtime;

/// <summary>
/// What a user wrote to fix input shapes (-InputShape @{ input_ids = 1,128 } or @{ sequence = 128 }), sorted into
/// whole input shapes (the key names an input) and symbolic dimension values (the key names a symbolic dimension).
/// A key that is neither in any of the models is refused, so a typo never goes unnoticed. A batch the spec gives (the
/// first dimension of an input whose first dimension is symbolic, or that dimension's value by name) becomes the batch
/// size; a batch size the caller gave as well must agree with it.
/// </summary>
public static class InputShapeSpec
{
    public static SynthesisOptions Apply(SynthesisOptions options, IEnumerable<OnnxModel> models, IReadOnlyDictionary<string, long[]> spec, bool batchSizeGiven = false)
    {
        if (spec.Count == 0) return options;
        var inputs = models.SelectMany(InputSynthesizer.Inputs).ToList();
        var inputNames = inputs.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var dimNames = inputs.SelectMany(i => i.Shape).Where(d => !long.TryParse(d, out _)).ToHashSet(StringComparer.Ordinal);
        var shapes = new Dictionary<string, long[]>(options.InputShapes, StringComparer.Ordinal);
        var dims = new Dictionary<string, long>(options.Dimensions, StringComparer.Ordinal);
        foreach (var (key, value) in spec)
        {
            if (value.Length == 0 || value.Any(v => v < 1))
                throw new EngineException("InputShapeInvalid", EngineErrorKind.InvalidArgument,
                    $"Input shape '{key}' = [{string.Join(",", value)}]: every dimension must be 1 or more.");
            if (inputNames.Contains(key))
            {
                var rank = inputs.Where(i => i.Name == key && i.Shape.Count > 0).Select(i => i.Shape.Count).Distinct().ToList();
                if (rank.Count == 1 && rank[0] != value.Length)
                    throw new EngineException("InputShapeRankMismatch", EngineErrorKind.InvalidArgument,
                        $"Input '{key}' has {rank[0]} dimensions, but the shape given has {value.Length}: [{string.Join(",", value)}].");
                shapes[key] = value;
            }
            else if (dimNames.Contains(key))
            {
                if (value.Length != 1)
                    throw new EngineException("InputShapeInvalid", EngineErrorKind.InvalidArgument,
                        $"'{key}' is a symbolic dimension; give it one value, not [{string.Join(",", value)}].");
                dims[key] = value[0];
            }
            else
                throw new EngineException("InputShapeKeyUnknown", EngineErrorKind.InvalidArgument,
                    $"'{key}' is neither an input nor a symbolic dimension of the model. Inputs: {string.Join("; ", inputs.Select(i => i.ToString()).Distinct())}.");
        }
        var batch = Batch(inputs, spec, inputNames);
        if (batch is { } b && b.Size != options.BatchSize && batchSizeGiven)
            throw new EngineException("BatchSizeConflict", EngineErrorKind.InvalidArgument,
                $"-InputShape gives input '{b.Input}' a batch of {b.Size}, but -BatchSize {options.BatchSize} asks for another; give the batch in one place (-InputShape alone will do).");
        return options with { InputShapes = shapes, Dimensions = dims, BatchSize = batch?.Size ?? options.BatchSize };
    }

    /// <summary>The batch the spec fixes, with an input it fixes it for; null when it fixes none. Two different batches are refused.</summary>
    static (long Size, string Input)? Batch(List<ValueSignature> inputs, IReadOnlyDictionary<string, long[]> spec, HashSet<string> inputNames)
    {
        (long Size, string Input)? batch = null;
        foreach (var input in inputs)
        {
            if (input.Shape.Count == 0 || long.TryParse(input.Shape[0], out _)) continue;
            long? size = spec.TryGetValue(input.Name, out var shape) ? shape[0]
                : !inputNames.Contains(input.Shape[0]) && spec.TryGetValue(input.Shape[0], out var dim) ? dim[0] : null;
            if (size is not { } s) continue;
            if (batch is { } b && b.Size != s)
                throw new EngineException("InputShapeBatchInconsistent", EngineErrorKind.InvalidArgument,
                    $"-InputShape gives input '{b.Input}' a batch of {b.Size} but input '{input.Name}' a batch of {s}; inputs are run together, with one batch.");
            batch ??= (s, input.Name);
        }
        return batch;
    }
}
