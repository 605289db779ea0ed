using System.Text.RegularExpressions;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Runtime;

/// <summary>Which half of a layer's key/value cache an input holds.</summary>
public enum CacheKind { Key, Value }

/// <summary>
/// One cache input and the output that returns it one step longer (Optimum's <c>past_key_values.N.key</c> and
/// <c>present.N.key</c>): its layer, its half, and its shape [batch, key/value heads, past, head size], the past axis
/// symbolic and the others fixed, as every decoder-with-past export lays it out.
/// </summary>
public sealed record CacheEntry(int Layer, CacheKind Kind, string Input, string Output, int ElementType, long Heads, long HeadSize);

/// <summary>
/// What a language model's inputs mean beyond its tokens, read from its signature: the attention mask, the positions,
/// token types and the key/value cache, named as Optimum's decoder-with-past exports and ONNX Runtime GenAI's model
/// builder name them. It is the one place that derives the inputs a data file of token ids does not hold: a mask of
/// ones over past and new tokens, positions past..past+n-1, zero token types, and a cache of the model's own shape
/// (empty for past length 0, which makes the cache model compute exactly what the model without a cache computes).
/// </summary>
public sealed partial class DecoderContract
{
    public const string AttentionMaskName = "attention_mask", PositionIdsName = "position_ids", TokenTypeIdsName = "token_type_ids";

    DecoderContract(ValueSignature tokens, ValueSignature? mask, ValueSignature? positions, ValueSignature? tokenTypes, List<CacheEntry> cache, string? logits)
    {
        Tokens = tokens;
        AttentionMask = mask;
        PositionIds = positions;
        TokenTypeIds = tokenTypes;
        Cache = cache;
        Logits = logits;
    }

    /// <summary>The input of token ids (<c>input_ids</c>).</summary>
    public ValueSignature Tokens { get; }
    public ValueSignature? AttentionMask { get; }
    public ValueSignature? PositionIds { get; }
    public ValueSignature? TokenTypeIds { get; }
    /// <summary>The cache, by layer then key before value.</summary>
    public IReadOnlyList<CacheEntry> Cache { get; }
    /// <summary>The output of next-token scores ([batch, sequence, vocabulary]), when the model has one.</summary>
    public string? Logits { get; }

    public bool HasCache => Cache.Count > 0;
    public int CacheLayers => Cache.Select(c => c.Layer).Distinct().Count();
    /// <summary>Key/value heads of the first layer's cache (a pruned model may have other counts in other layers).</summary>
    public long? KeyValueHeads => HasCache ? Cache[0].Heads : null;
    public long? HeadSize => HasCache ? Cache[0].HeadSize : null;

    /// <summary>The inputs this contract derives, in the model's order.</summary>
    public IEnumerable<string> DerivedInputs =>
        new[] { AttentionMask?.Name, PositionIds?.Name, TokenTypeIds?.Name }.OfType<string>().Concat(Cache.Select(c => c.Input));

    /// <summary>Bytes the cache holds per token of context (every layer's keys and values): what decode memory grows by.</summary>
    public long CacheBytesPerToken => Cache.Sum(c => c.Heads * c.HeadSize * Math.Max(1, ElementTypes.ByteCount(c.ElementType, 1)));

    [GeneratedRegex(@"(?:^|[._/])(\d+)(?:[._/]|$)")]
    private static partial Regex LayerNumber();
    [GeneratedRegex(@"(?:^|[._/])(key|value)s?(?:[._/]|$)", RegexOptions.IgnoreCase)]
    private static partial Regex KindWord();

    /// <summary>
    /// The contract of <paramref name="model"/>, or null when it has nothing to derive (its only inputs are its
    /// tokens, or it is no language model). A model that names a cache it does not return is refused: that cache
    /// could only be guessed.
    /// </summary>
    public static DecoderContract? Of(OnnxModel model)
    {
        var inputs = InputSynthesizer.Inputs(model);
        var outputs = model.Proto.Graph.Output.Select(ValueSignature.From).ToList();
        var derivable = new HashSet<string>(StringComparer.Ordinal);
        ValueSignature? Named(string name)
        {
            var s = inputs.FirstOrDefault(i => i.Name == name && i.Shape.Count == 2);
            if (s is not null) derivable.Add(s.Name);
            return s;
        }
        var mask = Named(AttentionMaskName);
        var positions = Named(PositionIdsName);
        var tokenTypes = Named(TokenTypeIdsName);
        var cache = new List<CacheEntry>();
        foreach (var input in inputs.Where(i => i.Name.Contains("past", StringComparison.OrdinalIgnoreCase)))
        {
            cache.Add(MatchCache(model, input, outputs));
            derivable.Add(input.Name);
        }
        if (derivable.Count == 0) return null;
        var tokens = inputs.FirstOrDefault(i => i.Name == "input_ids")
            ?? inputs.FirstOrDefault(i => !derivable.Contains(i.Name) && i.Shape.Count == 2 && IsInteger(i.ElementTypeCode));
        if (tokens is null || inputs.Any(i => !derivable.Contains(i.Name) && i.Name != tokens.Name)) return null;
        string? logits = outputs.FirstOrDefault(o => o.Name == "logits")?.Name
            ?? outputs.FirstOrDefault(o => o.Shape.Count == 3 && o.ElementTypeCode is (int)DT.Float or (int)DT.Float16)?.Name;
        cache.Sort((a, b) => a.Layer != b.Layer ? a.Layer.CompareTo(b.Layer) : a.Kind.CompareTo(b.Kind));
        return new DecoderContract(tokens, mask, positions, tokenTypes, cache, logits);
    }

    /// <summary>The contract of a model that must have one with a cache and logits (generation), or an error saying what is missing.</summary>
    public static DecoderContract RequireGenerative(OnnxModel model, string purpose)
    {
        var c = Of(model);
        if (c is null || !c.HasCache)
            throw new EngineException("GenerationCacheMissing", EngineErrorKind.InvalidArgument,
                $"Model '{model.Name}' has no key/value cache (past_key_values.N.key/value inputs returned as present.N.key/value), which {purpose} needs: export it with a cache (Optimum's decoder-with-past layout or ONNX Runtime GenAI's model builder).") { Target = model.SourcePath };
        if (c.Logits is null)
            throw new EngineException("GenerationLogitsMissing", EngineErrorKind.InvalidArgument,
                $"Model '{model.Name}' has no logits output ([batch, sequence, vocabulary]), which {purpose} needs.") { Target = model.SourcePath };
        return c;
    }

    static CacheEntry MatchCache(OnnxModel model, ValueSignature input, List<ValueSignature> outputs)
    {
        var layer = LayerNumber().Matches(input.Name).LastOrDefault();
        var kind = KindWord().Matches(input.Name).LastOrDefault();
        string Why(string what) => $"Model '{model.Name}' has cache input '{input.Name}' but {what}; the module derives an empty cache only for the decoder-with-past layout " +
            "(past_key_values.N.key/value [batch, key/value heads, past, head size] returned as present.N.key/value).";
        if (layer is null || kind is null || input.Shape.Count != 4)
            throw new EngineException("DecoderCacheUnmatched", EngineErrorKind.InvalidData, Why("its name or rank is not a layer's key or value")) { Target = model.SourcePath };
        int n = int.Parse(layer.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        var k = kind.Groups[1].Value.Equals("key", StringComparison.OrdinalIgnoreCase) ? CacheKind.Key : CacheKind.Value;
        var output = outputs.FirstOrDefault(o => o.Name.Contains("present", StringComparison.OrdinalIgnoreCase)
            && LayerNumber().Matches(o.Name).LastOrDefault() is { } l && l.Groups[1].Value == layer.Groups[1].Value
            && KindWord().Matches(o.Name).LastOrDefault() is { } m && m.Groups[1].Value.Equals(kind.Groups[1].Value, StringComparison.OrdinalIgnoreCase));
        if (output is null)
            throw new EngineException("DecoderCacheUnmatched", EngineErrorKind.InvalidData, Why($"no output returns it (no present output for layer {n}'s {k.ToString().ToLowerInvariant()})")) { Target = model.SourcePath };
        if (!long.TryParse(input.Shape[1], out long heads) || !long.TryParse(input.Shape[3], out long headSize) || heads < 1 || headSize < 1)
            throw new EngineException("DecoderCacheUnmatched", EngineErrorKind.InvalidData, Why($"its heads and head size [{string.Join(",", input.Shape)}] are not fixed numbers")) { Target = model.SourcePath };
        // One token's keys or values of one layer is an array: its element count must be one.
        if (heads > Array.MaxLength / headSize)
            throw new EngineException("DecoderCacheUnmatched", EngineErrorKind.InvalidData, Why($"{heads} heads of {headSize} values per token cannot be one array")) { Target = model.SourcePath };
        return new CacheEntry(n, k, input.Name, output.Name, input.ElementTypeCode, heads, headSize);
    }

    /// <summary>
    /// Query heads: GroupQueryAttention's (or another attention operator's) num_heads, else the most heads a projection
    /// is reshaped into ([batch, sequence, heads, head size] with the cache's head size: queries have at least as many
    /// heads as keys and values). Null when the model shows neither.
    /// </summary>
    public long? QueryHeads(OnnxModel model)
    {
        var graph = model.Proto.Graph;
        var fused = graph.Node.Where(n => n.Domain == "com.microsoft" && n.OpType is "GroupQueryAttention" or "MultiHeadAttention" or "Attention")
            .Select(n => GraphIndex.IntAttr(n, "num_heads")).OfType<long>().ToList();
        if (fused.Count > 0) return fused.Max();
        if (HeadSize is not { } size) return null;
        var index = new GraphIndex(model.Proto);
        long? best = null;
        foreach (var reshape in graph.Node.Where(n => n.OpType == "Reshape" && n.Input.Count == 2))
        {
            if (!index.Producer.TryGetValue(reshape.Input[0], out var producer) || producer.OpType != "MatMul" || index.Constant(producer.Input[1]) is null) continue;
            if (TargetTail(index, reshape.Input[1]) is [var heads, var width] && width == size && heads > 0) best = Math.Max(best ?? 0, heads);
        }
        return best;
    }

    /// <summary>The last two entries of a reshape target that is a constant or a Concat ending in constants.</summary>
    static long[]? TargetTail(GraphIndex index, string target)
    {
        if (index.Constant(target) is { } c) return TensorData.ToInt64(c) is { Length: >= 2 } v ? v[^2..] : null;
        if (!index.Producer.TryGetValue(target, out var concat) || concat.OpType != "Concat") return null;
        var tail = new List<long>();
        for (int i = concat.Input.Count - 1; i >= 0 && tail.Count < 2; i--)
        {
            if (index.Constant(concat.Input[i]) is not { } part) return null;
            tail.InsertRange(0, TensorData.ToInt64(part));
        }
        return tail.Count >= 2 ? tail.ToArray()[^2..] : null;
    }

    /// <summary>The symbolic name of the cache's past axis (the value a user may give to run with a filled cache).</summary>
    public string? PastDimension(OnnxModel model) =>
        HasCache ? InputSynthesizer.Inputs(model).First(i => i.Name == Cache[0].Input).Shape[2] : null;

    /// <summary>
    /// The derived inputs for <paramref name="batch"/> rows of <paramref name="sequence"/> new tokens after
    /// <paramref name="past"/> cached ones: mask of ones, positions, zero token types, and the cache (zeros, or values
    /// drawn by <paramref name="fill"/> when it is given and the past is not empty).
    /// </summary>
    public Dictionary<string, NamedArray> Derive(long batch, long sequence, long past = 0, Func<int, float>? fill = null)
    {
        var result = new Dictionary<string, NamedArray>(StringComparer.Ordinal);
        if (AttentionMask is { } mask) result[mask.Name] = Filled(mask, [batch, past + sequence], _ => 1);
        if (PositionIds is { } pos) result[pos.Name] = Filled(pos, [batch, sequence], i => past + i % sequence);
        if (TokenTypeIds is { } types) result[types.Name] = Filled(types, [batch, sequence], _ => 0);
        foreach (var c in Cache)
        {
            long[] shape = [batch, c.Heads, past, c.HeadSize];
            long count = checked(batch * c.Heads * past * c.HeadSize);
            var values = new float[count];
            if (fill is not null) for (int i = 0; i < values.Length; i++) values[i] = fill(i);
            result[c.Input] = c.ElementType == (int)DT.Float16
                ? new NamedArray(c.Input, shape, Array.ConvertAll(values, v => (Half)v))
                : new NamedArray(c.Input, shape, values);
        }
        return result;
    }

    static NamedArray Filled(ValueSignature s, long[] shape, Func<long, long> value)
    {
        long n = shape[0] * shape[1];
        Array data = (DT)s.ElementTypeCode switch
        {
            DT.Int32 => Make(n, i => (int)value(i)),
            DT.Float => Make(n, i => (float)value(i)),
            DT.Float16 => Make(n, i => (Half)value(i)),
            DT.Bool => Make(n, i => value(i) != 0),
            _ => Make(n, value),
        };
        return new NamedArray(s.Name, shape, data);
    }

    static T[] Make<T>(long n, Func<long, T> f)
    {
        var r = new T[n];
        for (long i = 0; i < n; i++) r[i] = f(i);
        return r;
    }

    static bool IsInteger(int type) => (DT)type is DT.Int64 or DT.Int32 or DT.Int16 or DT.Int8 or DT.Uint8 or DT.Uint16 or DT.Uint32 or DT.Uint64;
}
