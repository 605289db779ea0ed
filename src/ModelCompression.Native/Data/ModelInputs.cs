using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Data;

/// <summary>Where a stage's inputs come from: a data set (in batches), or synthesized batches.</summary>
public sealed record InputSource
{
    public DataSet? Data { get; init; }
    public SynthesisOptions Synthesis { get; init; } = new();
    /// <summary>Synthesized batches to run when there is no data.</summary>
    public int SyntheticBatches { get; init; } = 4;
    public int BatchSize { get; init; } = 32;
}

/// <summary>One batch of a model's inputs, its labels (empty when none) and the fraction of the source done after it.</summary>
public sealed record InputBatch(IReadOnlyDictionary<string, NamedArray> Inputs, long[] Labels, double Fraction);

/// <summary>
/// The one place that binds data to a model's inputs, for every stage (calibration, GPTQ, pruning scores, comparison,
/// latency, distillation): arrays go to inputs by name first, then in order; shapes and element types are checked
/// before anything runs (integers convert to the input's integer type and floats to its float type; a float array for
/// an integer input, or the reverse, is refused); the inputs a language model's data does not hold (attention mask,
/// positions, an empty key/value cache) are derived by its <see cref="DecoderContract"/>.
/// </summary>
public static class ModelInputs
{
    /// <summary>Every input of <paramref name="model"/> for all rows of <paramref name="data"/>.</summary>
    public static IReadOnlyDictionary<string, NamedArray> Bind(OnnxModel model, DataSet data)
    {
        var inputs = InputSynthesizer.Inputs(model);
        var decoder = DecoderContract.Of(model);
        var given = data.Features.Select(a => a.Name).ToHashSet(StringComparer.Ordinal);
        // Derived inputs are taken from the data only when it names them; otherwise the contract makes them.
        var derived = decoder?.DerivedInputs.Where(n => !given.Contains(n)).ToHashSet(StringComparer.Ordinal) ?? [];
        var map = Map(data, inputs.Where(i => !derived.Contains(i.Name)).ToList());
        if (derived.Count > 0)
        {
            var tokens = map[decoder!.Tokens.Name];
            if (tokens.Shape.Length != 2)
                throw new EngineException("DataShapeMismatch", EngineErrorKind.InvalidData,
                    $"Data file '{data.Source}': array for input '{tokens.Name}' has shape [{string.Join(",", tokens.Shape)}]; token ids are [rows, sequence].") { Target = data.Source };
            foreach (var (name, array) in decoder.Derive(tokens.Shape[0], tokens.Shape[1]))
                if (derived.Contains(name)) map[name] = array;
        }
        return inputs.ToDictionary(i => i.Name, i => Convert(map[i.Name], i, data.Source), StringComparer.Ordinal);
    }

    /// <summary>The batches of <paramref name="source"/> for <paramref name="model"/>: data rows in order, or synthesized batches.</summary>
    public static IEnumerable<InputBatch> Batches(OnnxModel model, InputSource source)
    {
        if (source.Data is { } data)
        {
            if (source.BatchSize < 1)
                throw new EngineException("BatchSizeOutOfRange", EngineErrorKind.InvalidArgument, $"Batch size must be 1 or more, not {source.BatchSize}.");
            var map = Bind(model, data);
            long[] labels = data.Labels ?? [];
            long perRow = data.Rows == 0 ? 0 : labels.Length / data.Rows; // one label per row, or one per position ([batch, sequence])
            for (long start = 0; start < data.Rows; start += source.BatchSize)
            {
                long count = Math.Min(source.BatchSize, data.Rows - start);
                var batch = map.ToDictionary(kv => kv.Key, kv => kv.Value.Slice(start, count), StringComparer.Ordinal);
                yield return new InputBatch(batch, labels.Length == 0 ? [] : labels.AsSpan((int)(start * perRow), (int)(count * perRow)).ToArray(), (double)(start + count) / data.Rows);
            }
            yield break;
        }
        for (int i = 0; i < source.SyntheticBatches; i++)
            yield return new InputBatch(InputSynthesizer.Synthesize(model, source.Synthesis with { Seed = source.Synthesis.Seed + i }), [], (i + 1.0) / source.SyntheticBatches);
    }

    /// <summary>
    /// <paramref name="model"/>'s inputs from a batch made for another model on the same data (the reference of a
    /// comparison): arrays by name, and the inputs this model derives (its mask, positions and cache, whose head count
    /// pruning may have changed) made again from the batch's tokens when the batch has none of their shape.
    /// </summary>
    public static IReadOnlyDictionary<string, NamedArray> For(OnnxModel model, IReadOnlyDictionary<string, NamedArray> batch)
    {
        var inputs = InputSynthesizer.Inputs(model);
        var decoder = DecoderContract.Of(model);
        var result = new Dictionary<string, NamedArray>(StringComparer.Ordinal);
        Dictionary<string, NamedArray>? derived = null;
        foreach (var input in inputs)
        {
            if (batch.TryGetValue(input.Name, out var a) && Fits(a, input)) { result[input.Name] = a; continue; }
            if (decoder is null || !decoder.DerivedInputs.Contains(input.Name) || !batch.TryGetValue(decoder.Tokens.Name, out var tokens) || tokens.Shape.Length != 2)
                throw new EngineException("DataInputMissing", EngineErrorKind.InvalidData,
                    $"Model '{model.Name}' needs input '{input.Name}', which the inputs made for the other model do not hold ({string.Join(", ", batch.Values)}).");
            long past = decoder.AttentionMask is { } m && batch.TryGetValue(m.Name, out var mask) && mask.Shape.Length == 2 ? mask.Shape[1] - tokens.Shape[1] : 0;
            if (past > 0)
                throw new EngineException("DecoderCacheMismatch", EngineErrorKind.InvalidArgument,
                    $"Model '{model.Name}' has another cache shape than the model its inputs were made for ({input.Name}); compare the two with an empty cache (no past length).");
            derived ??= decoder.Derive(tokens.Shape[0], tokens.Shape[1]);
            result[input.Name] = derived[input.Name];
        }
        return result;
    }

    static bool Fits(NamedArray a, ValueSignature input) =>
        (input.Shape.Count == 0 || input.Shape.Count == a.Shape.Length)
        && input.Shape.Select((d, i) => !long.TryParse(d, out long v) || v == a.Shape[i]).All(x => x);

    /// <summary>Which array feeds which input: by name first, then the remaining arrays in order; counts and fixed dimensions checked.</summary>
    static Dictionary<string, NamedArray> Map(DataSet data, IReadOnlyList<ValueSignature> inputs)
    {
        var map = new Dictionary<string, NamedArray>(StringComparer.Ordinal);
        var unused = new List<NamedArray>(data.Features);
        foreach (var input in inputs)
        {
            var byName = unused.FirstOrDefault(a => a.Name == input.Name);
            if (byName is null) continue;
            map[input.Name] = byName;
            unused.Remove(byName);
        }
        foreach (var input in inputs.Where(i => !map.ContainsKey(i.Name)))
        {
            if (unused.Count == 0)
                throw new EngineException("DataInputMissing", EngineErrorKind.InvalidData,
                    $"Data file '{data.Source}' has no array for model input '{input.Name}' (arrays: {string.Join(", ", data.Arrays.Select(a => a.Name))}).") { Target = data.Source };
            map[input.Name] = unused[0].Rename(input.Name);
            unused.RemoveAt(0);
        }
        foreach (var input in inputs)
        {
            var a = map[input.Name];
            bool rankOk = input.Shape.Count == 0 || input.Shape.Count == a.Shape.Length;
            bool dimsOk = rankOk && input.Shape.Select((d, i) => i == 0 || !long.TryParse(d, out long v) || v == a.Shape[i]).All(x => x);
            if (!dimsOk)
                throw new EngineException("DataShapeMismatch", EngineErrorKind.InvalidData,
                    $"Data file '{data.Source}': array for input '{input.Name}' has shape [{string.Join(",", a.Shape)}] but the model expects [{string.Join(",", input.Shape)}].") { Target = data.Source };
        }
        return map;
    }

    /// <summary>The array in the input's element type: integers to integers and floats to floats; across the two it is refused.</summary>
    static NamedArray Convert(NamedArray a, ValueSignature input, string source)
    {
        var expected = (DT)input.ElementTypeCode;
        var actual = ElementType(a);
        if (expected == DT.Undefined || actual == expected) return a;
        bool expectedFloat = expected is DT.Float or DT.Double or DT.Float16, actualFloat = actual is DT.Float or DT.Double or DT.Float16;
        bool expectedInteger = expected is DT.Int64 or DT.Int32 or DT.Bool, actualInteger = actual is DT.Int64 or DT.Int32 or DT.Uint8 or DT.Int8 or DT.Bool;
        if (expectedFloat && actualFloat)
            return expected switch
            {
                DT.Float => new NamedArray(a.Name, a.Shape, a.AsFloat()),
                DT.Double => new NamedArray(a.Name, a.Shape, Array.ConvertAll(a.AsFloat(), v => (double)v)),
                _ => new NamedArray(a.Name, a.Shape, Array.ConvertAll(a.AsFloat(), v => (Half)v)),
            };
        if (expectedInteger && actualInteger)
            return expected switch
            {
                DT.Int64 => new NamedArray(a.Name, a.Shape, a.AsInt64()),
                DT.Int32 => new NamedArray(a.Name, a.Shape, Array.ConvertAll(a.AsInt64(), v => v is >= int.MinValue and <= int.MaxValue ? (int)v
                    : throw new EngineException("DataValueOutOfRange", EngineErrorKind.InvalidData, $"Data file '{source}': array '{a.Name}' holds {v}, which input '{input.Name}' (int32) cannot take.") { Target = source })),
                _ => new NamedArray(a.Name, a.Shape, Array.ConvertAll(a.AsInt64(), v => v != 0)),
            };
        throw new EngineException("DataTypeMismatch", EngineErrorKind.InvalidData,
            $"Data file '{source}': array '{a.Name}' holds {ElementTypes.Name((int)actual)} values but model input '{input.Name}' is {input.ElementType}.") { Target = source };
    }

    static DT ElementType(NamedArray a) => a.Data switch
    {
        float[] => DT.Float,
        double[] => DT.Double,
        long[] => DT.Int64,
        int[] => DT.Int32,
        byte[] => DT.Uint8,
        sbyte[] => DT.Int8,
        bool[] => DT.Bool,
        Half[] => DT.Float16,
        _ => DT.Undefined,
    };
}
