using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Runtime;

/// <summary>
/// What a user wrote to fix input shapes (-InputShape @{ input_ids = 1,128 } or @{ sequence = 128 }), sorted into
/// whole input shapes (the key names an input) and symbolic dimension values (the key names a symbolic dimension).
/// A key that is neither in any of the models is refused, so a typo never goes unnoticed.
/// </summary>
public static class InputShapeSpec
{
    public static SynthesisOptions Apply(SynthesisOptions options, IEnumerable<OnnxModel> models, IReadOnlyDictionary<string, long[]> spec)
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
        return options with { InputShapes = shapes, Dimensions = dims };
    }
}
