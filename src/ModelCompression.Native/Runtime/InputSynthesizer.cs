using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Runtime;

/// <summary>How to make inputs when no data file is given.</summary>
public sealed record SynthesisOptions
{
    /// <summary>Fixed shapes by input name (overrides the signature entirely), or values by symbolic dimension name.</summary>
    public IReadOnlyDictionary<string, long[]> InputShapes { get; init; } = new Dictionary<string, long[]>();
    public IReadOnlyDictionary<string, long> Dimensions { get; init; } = new Dictionary<string, long>();
    /// <summary>Size of a symbolic first (batch) dimension.</summary>
    public long BatchSize { get; init; } = 1;
    /// <summary>[min, max) for integer inputs; null: from a vocabulary size the model reveals, else [0, 100).</summary>
    public (long Min, long Max)? IntegerRange { get; init; }
    public int Seed { get; init; } = 1234;
    /// <summary>Value used for symbolic dimensions other than the batch one when nothing else says; 0 means refuse.</summary>
    public long DefaultDimension { get; init; }
    /// <summary>
    /// Most elements the inputs together may have when their shapes come from the model file, and the largest single
    /// dimension taken from it: a file may declare any size, and what a model computes grows with its inputs, so
    /// declared shapes are trusted only this far (the caller's own -InputShape up to what one array can hold).
    /// </summary>
    public long MaxModelDeclaredElements { get; init; } = InputSynthesizer.DefaultElementBudget;
    public long MaxModelDeclaredDimension { get; init; } = InputSynthesizer.DefaultDimensionBudget;
}

/// <summary>
/// Builds model inputs from the model's signature: floats from a standard normal distribution, integers
/// uniformly from a range (the embedding table's row count for token ids, when the graph shows one).
/// </summary>
public static class InputSynthesizer
{
    /// <summary>1M elements (4 MB of float32) over all inputs whose shapes the model declares, none longer than 4096.</summary>
    public const long DefaultElementBudget = 1L << 20, DefaultDimensionBudget = 4096;

    public static IReadOnlyList<ValueSignature> Inputs(OnnxModel model)
    {
        var init = model.Proto.Graph.Initializer.Select(t => t.Name).ToHashSet(StringComparer.Ordinal);
        return model.Proto.Graph.Input.Where(i => !init.Contains(i.Name)).Select(ValueSignature.From).ToList();
    }

    /// <summary>The concrete shape of every input, or an error naming the dimensions nothing fixes.</summary>
    public static IReadOnlyDictionary<string, long[]> ResolveShapes(OnnxModel model, SynthesisOptions options, IReadOnlySet<string>? derived = null)
    {
        var result = new Dictionary<string, long[]>(StringComparer.Ordinal);
        var missing = new List<string>();
        long declaredElements = 0;
        foreach (var input in Inputs(model))
        {
            if (derived?.Contains(input.Name) == true) continue;
            if (options.InputShapes.TryGetValue(input.Name, out var fixedShape))
            {
                CheckSize(model, input.Name, fixedShape, Array.MaxLength, "the given shape");
                result[input.Name] = fixedShape;
                continue;
            }
            var shape = new long[input.Shape.Count];
            bool declared = false;
            for (int i = 0; i < shape.Length; i++)
            {
                string d = input.Shape[i];
                if (long.TryParse(d, out long v) && v > 0)
                {
                    if (v > options.MaxModelDeclaredDimension)
                        throw new EngineException("InputTooLarge", EngineErrorKind.LimitsExceeded,
                            $"Input '{input.Name}' of model '{model.Name}' declares dimension {i} as {v:N0}, more than the {options.MaxModelDeclaredDimension:N0} taken from a model file; " +
                            $"give the shape to use with -InputShape (e.g. @{{ {input.Name} = {string.Join(",", input.Shape.Select(s => long.TryParse(s, out long n) && n > 0 ? Math.Min(n, 16) : 1))} }}) or data with -InputData.");
                    shape[i] = v;
                    declared = true;
                }
                else if (options.Dimensions.TryGetValue(d, out long named)) shape[i] = named;
                else if (i == 0) shape[i] = options.BatchSize;
                else if (options.DefaultDimension > 0) shape[i] = options.DefaultDimension;
                else missing.Add($"{input.Name}[{i}] ('{d}')");
            }
            if (missing.Count == 0)
            {
                long count = CheckSize(model, input.Name, shape, declared ? options.MaxModelDeclaredElements - declaredElements : Array.MaxLength,
                    declared ? "the shape the model declares" : "the shape");
                if (declared) declaredElements += count;
            }
            result[input.Name] = shape;
        }
        if (missing.Count > 0)
            throw new EngineException("InputDimensionUnresolved", EngineErrorKind.InvalidArgument,
                $"Model '{model.Name}' has symbolic input dimensions that nothing fixes: {string.Join(", ", missing)}. Give them with -InputShape (e.g. @{{ name = 1,128 }}).");
        return result;
    }

    /// <summary>Refuses a shape whose element count overflows or passes <paramref name="budget"/>, before anything is allocated.</summary>
    static long CheckSize(OnnxModel model, string input, long[] shape, long budget, string source)
    {
        long count = 1;
        bool overflow = false;
        foreach (long d in shape)
        {
            if (d < 0)
                throw new EngineException("InputShapeInvalid", EngineErrorKind.InvalidArgument, $"Input '{input}' of model '{model.Name}' has a negative dimension in {source} [{string.Join(",", shape)}].");
            try { count = checked(count * d); } catch (OverflowException) { overflow = true; break; }
        }
        if (overflow || count > budget)
            throw new EngineException("InputTooLarge", EngineErrorKind.LimitsExceeded,
                $"Input '{input}' of model '{model.Name}' would have {(overflow ? "more than 2^63" : count.ToString("N0", System.Globalization.CultureInfo.InvariantCulture))} elements with {source} " +
                $"[{string.Join(",", shape)}], more than the {budget:N0} left to synthesize; give a smaller shape with -InputShape (e.g. @{{ {input} = 1,128 }}) or data with -InputData.");
        return count;
    }

    /// <summary>
    /// Inputs for one run. A language model's mask, positions and cache come from its <see cref="DecoderContract"/>:
    /// the past is empty unless the options give the cache's past dimension (then the cache holds random values).
    /// </summary>
    public static Dictionary<string, NamedArray> Synthesize(OnnxModel model, SynthesisOptions options)
    {
        var decoder = DecoderContract.Of(model);
        var derived = decoder?.DerivedInputs.ToHashSet(StringComparer.Ordinal) ?? [];
        foreach (var name in derived.Where(options.InputShapes.ContainsKey))
            throw new EngineException("InputShapeDerived", EngineErrorKind.InvalidArgument,
                $"Input '{name}' of model '{model.Name}' is derived from the token ids (attention mask of ones, positions, key/value cache); give the token shape ({decoder!.Tokens.Name})" +
                (decoder.PastDimension(model) is { } past ? $" and, for a filled cache, its past length ('{past}')" : "") + " instead.");
        var shapes = ResolveShapes(model, options, derived);
        var rng = new Random(options.Seed);
        var result = new Dictionary<string, NamedArray>(StringComparer.Ordinal);
        foreach (var input in Inputs(model))
        {
            if (derived.Contains(input.Name)) continue;
            var shape = shapes[input.Name];
            int n = (int)shape.Aggregate(1L, (a, d) => a * d);   // bounded by ResolveShapes
            var range = options.IntegerRange ?? (0, VocabularySize(model, input.Name) ?? 100);
            Array data = (TensorProto.Types.DataType)input.ElementTypeCode switch
            {
                TensorProto.Types.DataType.Float => Normal(rng, n),
                TensorProto.Types.DataType.Double => Array.ConvertAll(Normal(rng, n), v => (double)v),
                TensorProto.Types.DataType.Float16 => Array.ConvertAll(Normal(rng, n), v => (Half)v),
                TensorProto.Types.DataType.Int64 => Enumerable.Range(0, n).Select(_ => rng.NextInt64(range.Min, range.Max)).ToArray(),
                TensorProto.Types.DataType.Int32 => Enumerable.Range(0, n).Select(_ => (int)rng.NextInt64(range.Min, range.Max)).ToArray(),
                TensorProto.Types.DataType.Uint8 => Enumerable.Range(0, n).Select(_ => (byte)rng.Next(0, 256)).ToArray(),
                TensorProto.Types.DataType.Int8 => Enumerable.Range(0, n).Select(_ => (sbyte)rng.Next(-128, 128)).ToArray(),
                TensorProto.Types.DataType.Bool => Enumerable.Range(0, n).Select(_ => rng.Next(2) == 1).ToArray(),
                _ => throw new EngineException("InputTypeUnsupported", EngineErrorKind.NotImplemented,
                    $"Input '{input.Name}' of model '{model.Name}' has element type {input.ElementType}, which cannot be synthesized; give -InputData."),
            };
            result[input.Name] = new NamedArray(input.Name, shape, data);
        }
        if (decoder is not null)
        {
            var tokens = result[decoder.Tokens.Name].Shape;
            long past = decoder.PastDimension(model) is { } d && options.Dimensions.TryGetValue(d, out long p) ? p : 0;
            var normal = Normal(rng, 1 << 12);
            foreach (var (name, array) in decoder.Derive(tokens[0], tokens[1], past, i => normal[i & 4095]))
                result[name] = array;
        }
        return result;
    }

    /// <summary>Row count of the embedding table a Gather reads with this input as indices, if any.</summary>
    public static long? VocabularySize(OnnxModel model, string inputName)
    {
        var graph = model.Proto.Graph;
        var inits = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (var t in graph.Initializer) inits.TryAdd(t.Name, t);
        foreach (var node in graph.Node)
            if (node.OpType == "Gather" && node.Input.Count >= 2 && node.Input[1] == inputName
                && inits.TryGetValue(node.Input[0], out var table) && table.Dims.Count >= 1)
                return table.Dims[0];
        return null;
    }

    static float[] Normal(Random rng, int n)
    {
        var r = new float[n];
        for (int i = 0; i < n; i += 2)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            double mag = Math.Sqrt(-2 * Math.Log(u1));
            r[i] = (float)(mag * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < n) r[i + 1] = (float)(mag * Math.Sin(2 * Math.PI * u2));
        }
        return r;
    }
}
