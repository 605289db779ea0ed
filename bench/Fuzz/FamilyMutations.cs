using System.Text.Json.Nodes;
using Google.Protobuf;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Fuzz;

/// <summary>
/// Mutations aimed at what the newer model families rely on: a language model's decoder contract (KV-cache inputs and
/// outputs, attention mask, positions, GroupQueryAttention's head counts and rotary caches), quantized nodes
/// (MatMulNBits' sizes, packed weights and scales; int8 dynamic layers) and a GenAI folder's genai_config.json. Each
/// returns null when the model has nothing of its family (the case then runs the model unchanged).
/// </summary>
static class FamilyMutations
{
    static readonly long[] OddCounts = [0, 1, 3, -1, -2, 7, 1L << 31, 1L << 40];

    /// <summary>Edits the decoder contract of a model with a cache or GroupQueryAttention.</summary>
    public static string? Decoder(ModelProto proto, Random rng)
    {
        var g = proto.Graph;
        var cacheIn = g.Input.Where(i => i.Name.StartsWith("past_key_values.", StringComparison.Ordinal)).ToList();
        var gqa = g.Node.Where(n => n.OpType == "GroupQueryAttention").ToList();
        var mask = g.Input.FirstOrDefault(i => i.Name == "attention_mask");
        if (cacheIn.Count == 0 && gqa.Count == 0 && mask is null) return null;
        switch (rng.Next(7))
        {
            case 0 when cacheIn.Count > 0:
                {
                    var input = Pick(rng, cacheIn);
                    var dims = input.Type?.TensorType?.Shape?.Dim;
                    if (dims is null || dims.Count < 4) return $"cache input '{input.Name}' without a shape";
                    int axis = Pick(rng, new[] { 1, 3 });
                    dims[axis].DimValue = Pick(rng, OddCounts);
                    return $"cache input '{input.Name}' dimension {axis} -> {dims[axis].DimValue}";
                }
            case 1 when mask is not null:
                mask.Type.TensorType.ElemType = Pick(rng, new[] { (int)DT.Float, (int)DT.Int32, (int)DT.String, (int)DT.Bool });
                return $"attention_mask element type -> {mask.Type.TensorType.ElemType}";
            case 2:
                {
                    // An input the graph still reads, gone from the signature.
                    var gone = g.Input.FirstOrDefault(i => i.Name == "position_ids") ?? mask ?? cacheIn.FirstOrDefault();
                    if (gone is null) return "nothing to remove";
                    g.Input.Remove(gone);
                    return $"input '{gone.Name}' removed from the signature";
                }
            case 3 when g.Output.Any(o => o.Name.StartsWith("present.", StringComparison.Ordinal)):
                {
                    var output = Pick(rng, g.Output.Where(o => o.Name.StartsWith("present.", StringComparison.Ordinal)).ToList());
                    string name = Pick(rng, new[] { "present.99.key", "present.0.value", "logits", "present..key" });
                    output.Name = name;
                    return $"a cache output renamed to '{name}' (its node still writes the old name)";
                }
            case 4 when gqa.Count > 0:
                {
                    var node = Pick(rng, gqa);
                    var sizes = node.Attribute.Where(a => a.Name is "num_heads" or "kv_num_heads" or "do_rotary" or "local_window_size").ToList();
                    if (sizes.Count == 0) return $"GroupQueryAttention '{node.Name}' without sizes";
                    var attribute = Pick(rng, sizes);
                    attribute.I = Pick(rng, OddCounts);
                    return $"GroupQueryAttention '{node.Name}' {attribute.Name} -> {attribute.I}";
                }
            case 5 when g.Initializer.Any(t => t.Name is "cos_cache" or "sin_cache"):
                {
                    var cache = Pick(rng, g.Initializer.Where(t => t.Name is "cos_cache" or "sin_cache").ToList());
                    int axis = rng.Next(cache.Dims.Count);
                    cache.Dims[axis] = Pick(rng, new long[] { 1, 3, 0, cache.Dims[axis] * 2 });
                    return $"rotary '{cache.Name}' dims -> [{string.Join(",", cache.Dims)}]";
                }
            case 6 when cacheIn.Count >= 2:
                {
                    // Key and value of one layer swapped in the signature: the shapes still agree, the meaning does not.
                    var key = cacheIn.First(i => i.Name.EndsWith(".key", StringComparison.Ordinal));
                    var value = cacheIn.First(i => i.Name == key.Name[..^".key".Length] + ".value");
                    (key.Name, value.Name) = (value.Name, key.Name);
                    return $"'{key.Name}' and '{value.Name}' swapped";
                }
        }
        return "decoder unchanged";
    }

    /// <summary>Edits a quantized node: MatMulNBits' sizes, packed weight, scales or zero points; an int8 layer's domain.</summary>
    public static string? Quantized(ModelProto proto, Random rng)
    {
        var g = proto.Graph;
        var nodes = g.Node.Where(n => n.OpType is "MatMulNBits" or "MatMulInteger" or "DynamicQuantizeLinear" or "DequantizeLinear" or "QuantizeLinear").ToList();
        if (nodes.Count == 0) return null;
        var node = Pick(rng, nodes);
        var initializers = g.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        switch (rng.Next(5))
        {
            case 0 when node.Attribute.Count > 0:
                {
                    var a = Pick(rng, node.Attribute.ToList());
                    a.I = Pick(rng, new long[] { 0, 1, 2, 3, 5, 8, 16, 17, -1, 1L << 31 });
                    return $"{node.OpType} '{node.Name}' {a.Name} -> {a.I}";
                }
            case 1 or 2 when node.Input.Skip(1).Any(initializers.ContainsKey):
                {
                    var t = initializers[Pick(rng, node.Input.Skip(1).Where(initializers.ContainsKey).ToList())];
                    if (rng.Next(2) == 0 && t.Dims.Count > 0)
                    {
                        int axis = rng.Next(t.Dims.Count);
                        t.Dims[axis] = Math.Max(0, t.Dims[axis] + Pick(rng, new long[] { -1, 1, 7 }));
                        return $"{node.OpType} '{node.Name}' input '{t.Name}' dims -> [{string.Join(",", t.Dims)}]";
                    }
                    var raw = t.RawData.ToByteArray();
                    t.RawData = ByteString.CopyFrom(raw.AsSpan(0, rng.Next(raw.Length + 1)));
                    return $"{node.OpType} '{node.Name}' input '{t.Name}' truncated to {t.RawData.Length} of {raw.Length} bytes";
                }
            case 3:
                {
                    // Zero points where there were none (or other ones): another initializer of the wrong size and type.
                    string other = Pick(rng, g.Initializer.ToList()).Name;
                    while (node.Input.Count < 4) node.Input.Add("");
                    node.Input[node.OpType == "MatMulNBits" ? 3 : node.Input.Count - 1] = other;
                    return $"{node.OpType} '{node.Name}' reads '{other}' as zero points";
                }
            case 4:
                node.Domain = node.Domain == "com.microsoft" ? "" : "com.microsoft";
                return $"{node.OpType} '{node.Name}' in domain '{node.Domain}'";
        }
        return "quantized node unchanged";
    }

    /// <summary>A mutated genai_config.json: broken JSON, missing or mistyped fields, odd sizes, a file name leaving the folder.</summary>
    public static (string Json, string What) GenAiConfig(string json, Random rng)
    {
        switch (rng.Next(8))
        {
            case 0:
                int at = rng.Next(json.Length);
                return (json[..at], $"genai_config.json truncated to {at} characters");
            case 1:
                return (Pick(rng, new[] { "", "null", "[]", "42", "{\"model\": null}", new string('[', 10000) }), "genai_config.json replaced by a bare value");
        }
        var root = JsonNode.Parse(json)!;
        var fields = Leaves(root).ToList();
        var (parent, key) = Pick(rng, fields);
        switch (rng.Next(6))
        {
            case 0:
                Remove(parent, key);
                return (root.ToJsonString(), $"genai_config.json without '{key}'");
            case 1:
                Set(parent, key, Pick(rng, new JsonNode?[] { 0, -1, 3, 1e12, 1.5, "two", null, new JsonArray(), new JsonObject() }));
                return (root.ToJsonString(), $"genai_config.json '{key}' -> {Describe(parent, key)}");
            case 2:
                Set(root["model"]?["decoder"] as JsonObject, "filename", Pick(rng, new[] { "../model.onnx", "missing.onnx", "/etc/passwd", "", "model.onnx/", "genai_config.json" }));
                return (root.ToJsonString(), $"decoder filename -> {root["model"]?["decoder"]?["filename"]}");
            case 3:
                Set(root["model"]?["decoder"] as JsonObject, Pick(rng, new[] { "num_key_value_heads", "num_attention_heads", "head_size", "hidden_size", "num_hidden_layers" }), Pick(rng, new JsonNode[] { 0, 1, 3, 5, 64, -8, 1 << 30 }));
                return (root.ToJsonString(), "decoder sizes that disagree with the model");
            case 4:
                Set(root["model"]?["decoder"]?["inputs"] as JsonObject, Pick(rng, new[] { "input_ids", "attention_mask", "past_key_names" }), Pick(rng, new[] { "no_such_input", "past_key_values.key", "%d%d%s", "" }));
                return (root.ToJsonString(), "decoder input names that are not the model's");
            default:
                Set(root["model"] as JsonObject, "type", Pick(rng, new JsonNode?[] { "gpt2", "", "phi3", 42, null }));
                return (root.ToJsonString(), $"model type -> {root["model"]?["type"]?.ToJsonString() ?? "null"}");
        }
    }

    static IEnumerable<(JsonNode Parent, string Key)> Leaves(JsonNode node)
    {
        if (node is JsonObject o)
            foreach (var (key, value) in o.ToList())
            {
                yield return (o, key);
                if (value is not null) foreach (var leaf in Leaves(value)) yield return leaf;
            }
    }

    static void Remove(JsonNode parent, string key) => (parent as JsonObject)?.Remove(key);

    static void Set(JsonObject? parent, string key, JsonNode? value) { if (parent is not null) parent[key] = value?.DeepClone(); }

    static void Set(JsonNode parent, string key, JsonNode? value) => Set(parent as JsonObject, key, value);

    static string Describe(JsonNode parent, string key) => parent[key]?.ToJsonString() ?? "null";

    static T Pick<T>(Random rng, IReadOnlyList<T> items) => items[rng.Next(items.Count)];
}
