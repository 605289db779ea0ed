using System.Globalization;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphBuilder;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests;

/// <summary>The sizes of a Llama-family decoder: grouped-query attention, rotary positions, RMSNorm, SwiGLU, no biases.</summary>
public sealed record LlamaConfig(int Layers, int Hidden, int Heads, int KeyValueHeads, int HeadSize, int Ffn, int Vocabulary,
    int MaxPositions = 2048, double RopeTheta = 10000, float Epsilon = 1e-5f)
{
    /// <summary>tiny_llama in ../shared/models: 4 blocks, d=256, 8/2 heads of 32, FFN 688, 256 byte tokens.</summary>
    public static LlamaConfig TinyLlama { get; } = new(4, 256, 8, 2, 32, 688, 256);

    public long Parameters => (long)Vocabulary * Hidden * 2 + Hidden
        + (long)Layers * (2 * Hidden + (long)Hidden * HeadSize * (Heads * 2 + KeyValueHeads * 2) + 3L * Hidden * Ffn);
}

/// <summary>
/// Llama-family decoders in ONNX Runtime GenAI's model-builder layout: SimplifiedLayerNormalization and
/// SkipSimplifiedLayerNormalization for RMSNorm and the residual stream, com.microsoft GroupQueryAttention with its
/// rotary embedding inside (do_rotary; cos/sin caches of half the head size), seqlens_k and total_sequence_length
/// computed from the attention mask, SwiGLU as Sigmoid/Mul, and the cache as past_key_values.N.key/value in and
/// present.N.key/value out ([batch, key/value heads, sequence, head size]). The builder itself is Python; this follows
/// the contracts of ONNX Runtime's contrib operators. Weights come from a source: tiny_llama's own (to check this
/// layout against the decomposed export), or random ones streamed to external data (the large benchmark model).
/// </summary>
public static class LlamaModels
{
    /// <summary>A weight by role ("emb", "blocks.0.q", "blocks.0.n1", "norm", "head", ...) with its ONNX shape.</summary>
    public delegate TensorProto WeightSource(string role, long[] dims);

    /// <summary>tiny_llama's weights in the builder layout (from the decomposed export tiny_llama_kv.onnx).</summary>
    public static ModelProto TinyLlamaBuilderLayout(OnnxModel decomposed) => Build(LlamaConfig.TinyLlama, FromDecomposed(decomposed));

    /// <summary>The builder-layout graph over <paramref name="weights"/>.</summary>
    public static ModelProto Build(LlamaConfig c, WeightSource weights)
    {
        var b = new GraphBuilder("llama_gqa", opset: 17);
        b.Build().OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        var g = b.Graph;
        b.Input("input_ids", DT.Int64, "batch_size", "sequence_length").Input("attention_mask", DT.Int64, "batch_size", "total_sequence_length");
        for (int l = 0; l < c.Layers; l++)
            foreach (var kind in new[] { "key", "value" })
                b.Input($"past_key_values.{l}.{kind}", DT.Float, "batch_size", c.KeyValueHeads, "past_sequence_length", c.HeadSize);
        b.Output("logits", DT.Float, "batch_size", "sequence_length", c.Vocabulary);
        for (int l = 0; l < c.Layers; l++)
            foreach (var kind in new[] { "key", "value" })
                b.Output($"present.{l}.{kind}", DT.Float, "batch_size", c.KeyValueHeads, "total_sequence_length", c.HeadSize);

        string W(string role, params long[] dims) { var t = weights(role, dims); t.Name = role; g.Initializer.Add(t); return role; }
        // seqlens_k: index of each row's last token (mask sum - 1); total_sequence_length: the mask's width. Both int32.
        b.InitializerInt64("one", [1], [1]);
        string maskSum = b.Node("ReduceSum", ["attention_mask", "one"], name: "/model/attn_mask_reformat/seqlens/ReduceSum", attributes: Attr("keepdims", 0L));
        string seqlens = b.Node("Cast", [b.Node("Sub", [maskSum, "one_scalar"], name: "/model/attn_mask_reformat/seqlens/Sub")],
            name: "/model/attn_mask_reformat/seqlens/Cast", attributes: Attr("to", (long)DT.Int32));
        g.Initializer.Add(TensorData.FromInt64("one_scalar", [], [1]));
        string total = b.Node("Cast", [b.Node("Gather", [b.Node("Shape", ["attention_mask"], name: "/model/attn_mask_reformat/total/Shape"), "one_scalar"],
            name: "/model/attn_mask_reformat/total/Gather", attributes: Attr("axis", 0L))], name: "/model/attn_mask_reformat/total/Cast", attributes: Attr("to", (long)DT.Int32));
        var (cos, sin) = RotaryCaches(c);
        g.Initializer.Add(TensorData.FromFloat("cos_cache", [c.MaxPositions, c.HeadSize / 2], cos));
        g.Initializer.Add(TensorData.FromFloat("sin_cache", [c.MaxPositions, c.HeadSize / 2], sin));

        string x = b.Node("Gather", [W("emb", c.Vocabulary, c.Hidden), "input_ids"], name: "/model/embed_tokens/Gather");
        string normed = b.Node("SimplifiedLayerNormalization", [x, W("blocks.0.n1", c.Hidden)], name: "/model/layers.0/input_layernorm/LayerNorm",
            attributes: [Attr("axis", -1L), Attr("epsilon", c.Epsilon)]);
        string residual = x;
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"/model/layers.{l}";
            string Linear(string input, string role, long k, long n) => b.Node("MatMul", [input, W($"blocks.{l}.{role}", k, n)], name: $"{p}/{role}/MatMul");
            string q = Linear(normed, "q", c.Hidden, c.Heads * c.HeadSize);
            string k = Linear(normed, "k", c.Hidden, c.KeyValueHeads * c.HeadSize);
            string v = Linear(normed, "v", c.Hidden, c.KeyValueHeads * c.HeadSize);
            string attn = b.Node("GroupQueryAttention", [q, k, v, $"past_key_values.{l}.key", $"past_key_values.{l}.value", seqlens, total, "cos_cache", "sin_cache"],
                [$"{p}/attn/GroupQueryAttention/output_0", $"present.{l}.key", $"present.{l}.value"], name: $"{p}/attn/GroupQueryAttention", domain: "com.microsoft",
                attributes: [Attr("num_heads", (long)c.Heads), Attr("kv_num_heads", (long)c.KeyValueHeads), Attr("do_rotary", 1L), Attr("rotary_interleaved", 0L)]);
            string o = Linear(attn, "o", c.Heads * c.HeadSize, c.Hidden);
            var post = b.Node("SkipSimplifiedLayerNormalization", [o, residual, W($"blocks.{l}.n2", c.Hidden)],
                [$"{p}/post_attention_layernorm/output_0", "", "", $"{p}/post_attention_layernorm/output_3"], name: $"{p}/post_attention_layernorm/SkipLayerNorm",
                domain: "com.microsoft", attributes: Attr("epsilon", c.Epsilon));
            residual = $"{p}/post_attention_layernorm/output_3";
            string gate = Linear(post, "gate", c.Hidden, c.Ffn);
            string silu = b.Node("Mul", [gate, b.Node("Sigmoid", [gate], name: $"{p}/mlp/act_fn/Sigmoid")], name: $"{p}/mlp/act_fn/Mul");
            string up = Linear(post, "up", c.Hidden, c.Ffn);
            string down = Linear(b.Node("Mul", [silu, up], name: $"{p}/mlp/Mul"), "down", c.Ffn, c.Hidden);
            bool last = l == c.Layers - 1;
            string next = last ? "/model/norm" : $"/model/layers.{l + 1}/input_layernorm";
            normed = b.Node("SkipSimplifiedLayerNormalization", [down, residual, W(last ? "norm" : $"blocks.{l + 1}.n1", c.Hidden)],
                [$"{next}/output_0", "", "", $"{next}/output_3"], name: $"{next}/SkipLayerNorm", domain: "com.microsoft", attributes: Attr("epsilon", c.Epsilon));
            residual = $"{next}/output_3";
        }
        b.Node("MatMul", [normed, W("head", c.Hidden, c.Vocabulary)], ["logits"], name: "/lm_head/MatMul");
        // The last SkipSimplifiedLayerNormalization's sum is not used: leave it unnamed.
        g.Node[^2].Output[3] = "";
        return b.Build();
    }

    /// <summary>cos and sin of position x inverse frequency, [positions, head size / 2] (the halves of rotate_half share them).</summary>
    static (float[] Cos, float[] Sin) RotaryCaches(LlamaConfig c)
    {
        int half = c.HeadSize / 2;
        var cos = new float[c.MaxPositions * half];
        var sin = new float[cos.Length];
        for (int p = 0; p < c.MaxPositions; p++)
            for (int i = 0; i < half; i++)
            {
                double angle = p / Math.Pow(c.RopeTheta, 2.0 * i / c.HeadSize);
                cos[p * half + i] = (float)Math.Cos(angle);
                sin[p * half + i] = (float)Math.Sin(angle);
            }
        return (cos, sin);
    }

    /// <summary>Weights by role from the decomposed PyTorch export (nodes named /m/blocks.N/q/MatMul, /m/blocks.N/n1/Mul_1, ...).</summary>
    static WeightSource FromDecomposed(OnnxModel model)
    {
        var graph = model.Proto.Graph;
        var init = graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        string Role(NodeProto n)
        {
            var parts = n.Name.Split('/', StringSplitOptions.RemoveEmptyEntries);   // m, blocks.0, q, MatMul
            if (n.OpType == "Gather" && n.Name == "/m/emb/Gather") return "emb";
            if (parts.Length == 4 && parts[1].StartsWith("blocks.", StringComparison.Ordinal) && (n.OpType == "MatMul" || parts[3] == "Mul_1"))
                return $"{parts[1]}.{parts[2]}";
            if (parts.Length == 3 && parts[1] is "norm" or "head" && (n.OpType == "MatMul" || parts[2] == "Mul_1")) return parts[1];
            return "";
        }
        var byRole = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            if (Role(n) is { Length: > 0 } role && n.Input.FirstOrDefault(init.ContainsKey) is { } w) byRole[role] = init[w];
        return (role, dims) =>
        {
            var t = byRole[role].Clone();
            if (!t.Dims.SequenceEqual(dims))
                throw new InvalidOperationException($"{role}: [{string.Join(",", t.Dims)}] is not [{string.Join(",", dims)}]");
            return t;
        };
    }

    /// <summary>Random weights written one after the other into one external data file (the generator holds one tensor at a time).</summary>
    public sealed class RandomExternalWeights(string dataPath, ulong seed = 0x9E3779B97F4A7C15) : IDisposable
    {
        readonly FileStream data = new(dataPath, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
        ulong state = seed;
        float[] buffer = [];

        public long Parameters { get; private set; }

        public TensorProto Next(string role, long[] dims)
        {
            long n = dims.Aggregate(1L, (a, d) => a * d);
            if (buffer.Length < n) buffer = new float[n];
            bool norm = dims.Length == 1;
            // Norm scales near 1, weights uniform in +-1/sqrt(fan in): activations stay of order one through the layers.
            float scale = norm ? 0.1f : 1f / MathF.Sqrt(dims[0]);
            for (long i = 0; i < n; i++)
            {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                float u = (int)(state >> 40) / (float)(1 << 23) - 1f;
                buffer[i] = norm ? 1f + u * scale : u * scale;
            }
            long offset = (data.Position + 4095) / 4096 * 4096;
            data.Position = offset;
            data.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(buffer.AsSpan(0, (int)n)));
            var t = new TensorProto { Name = role, DataType = (int)DT.Float, DataLocation = TensorProto.Types.DataLocation.External };
            t.Dims.AddRange(dims);
            t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = Path.GetFileName(data.Name) });
            t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
            t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = (n * 4).ToString(CultureInfo.InvariantCulture) });
            Parameters += n;
            return t;
        }

        public void Dispose()
        {
            data.Flush(flushToDisk: true);
            data.Dispose();
        }
    }

    /// <summary>
    /// Writes a random-weight builder-layout model to <paramref name="path"/> with its weights in one external data file
    /// beside it, and a genai_config.json in the same folder; returns the parameter count.
    /// </summary>
    public static long WriteRandom(string path, LlamaConfig c)
    {
        ModelProto proto;
        long parameters;
        using (var weights = new RandomExternalWeights(path + ".data"))
        {
            proto = Build(c, weights.Next);
            parameters = weights.Parameters;
        }
        using (var file = File.Create(path)) Google.Protobuf.MessageExtensions.WriteTo(proto, file);
        File.WriteAllText(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, "genai_config.json"), GenAiConfig(c, Path.GetFileName(path)));
        return parameters;
    }

    /// <summary>An ONNX Runtime GenAI configuration for a model of this layout (greedy search).</summary>
    public static string GenAiConfig(LlamaConfig c, string fileName, int maxLength = 2048) => $$"""
        {
          "model": {
            "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "context_length": {{c.MaxPositions}}, "vocab_size": {{c.Vocabulary}}, "type": "llama",
            "decoder": {
              "session_options": { "log_id": "onnxruntime-genai", "provider_options": [] },
              "filename": "{{fileName}}", "head_size": {{c.HeadSize}}, "hidden_size": {{c.Hidden}}, "num_attention_heads": {{c.Heads}},
              "num_key_value_heads": {{c.KeyValueHeads}}, "num_hidden_layers": {{c.Layers}},
              "inputs": { "input_ids": "input_ids", "attention_mask": "attention_mask",
                          "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value" },
              "outputs": { "logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value" }
            }
          },
          "search": { "do_sample": false, "max_length": {{maxLength}}, "min_length": 0, "num_beams": 1, "num_return_sequences": 1,
                      "past_present_share_buffer": false, "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 1, "top_p": 1.0 }
        }
        """;
}
