using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphBuilder;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Pruning;

/// <summary>How a test transformer computes attention.</summary>
public enum AttentionStyle
{
    /// <summary>Separate Q, K, V MatMuls, Reshape into heads, Transpose (PyTorch's own attention code).</summary>
    Separate,
    /// <summary>One fused Q/K/V MatMul cut by Slice (nn.MultiheadAttention's in_proj).</summary>
    Fused,
    /// <summary>ONNX Runtime's com.microsoft Attention with a packed weight.</summary>
    ContribAttention,
    /// <summary>Separate projections into com.microsoft MultiHeadAttention.</summary>
    ContribMultiHead,
}

public enum NormStyle { Fused, Decomposed, None, Rms }

public sealed record TransformerSpec
{
    public int Vocab { get; init; } = 32;
    public int MaxSequence { get; init; } = 64;
    public int Hidden { get; init; } = 16;
    public int Heads { get; init; } = 4;
    public int Ffn { get; init; } = 32;
    public int Blocks { get; init; } = 2;
    public AttentionStyle Attention { get; init; } = AttentionStyle.Separate;
    /// <summary>Reshape targets computed from Shape at run time, as torch.onnx.export writes them.</summary>
    public bool ComputedShapes { get; init; } = true;
    public NormStyle Norm { get; init; } = NormStyle.Fused;
    /// <summary>Normalization after each residual Add (BERT) instead of before each branch (GPT).</summary>
    public bool PostNorm { get; init; }
    public int Seed { get; init; } = 1;
}

/// <summary>
/// Small transformers built in code with the patterns PyTorch and ONNX Runtime export: token embedding (Gather) plus a
/// position table (Slice), residual blocks of attention and a GELU feed-forward network, normalizations, and a head.
/// Input input_ids int64 [batch, seq] (seq at most MaxSequence), output logits [batch, seq, vocab]. Node names are
/// scoped like PyTorch's ("/blocks.1/q/MatMul"), weights named like its parameters ("blocks.1.q.weight").
/// </summary>
public static class TransformerModels
{
    public static OnnxModel Build(TransformerSpec s)
    {
        var rng = new Random(s.Seed);
        var b = new GraphBuilder("transformer").Input("input_ids", DT.Int64, "batch", "seq").Output("logits", DT.Float, "batch", "seq", s.Vocab);
        if (s.Attention is AttentionStyle.ContribAttention or AttentionStyle.ContribMultiHead)
            b.Build().OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        int d = s.Hidden, dh = s.Hidden / s.Heads;
        float scale = 1f / MathF.Sqrt(d);
        string W(string name, int rows, int cols, float sd) => b.Initializer(name, [rows, cols], TestModels.RandomWeights(rng, rows * cols, sd));
        string V(string name, int n, float sd, float offset = 0) => b.Initializer(name, [n], TestModels.RandomWeights(rng, n, sd).Select(x => x + offset).ToArray());
        string I(string name, params long[] v) => b.InitializerInt64(name, [v.Length], v);

        var seqLen = b.Node("Gather", [b.Node("Shape", ["input_ids"], name: "/Shape"), b.InitializerInt64("idx1", [], [1])], name: "/Gather", attributes: [Attr("axis", 0L)]);
        var seqEnd = b.Node("Unsqueeze", [seqLen, I("axes0", 0)], name: "/Unsqueeze");
        var emb = b.Node("Gather", [W("emb.weight", s.Vocab, d, 1f), "input_ids"], name: "/emb/Gather");
        b.Initializer("pos", [1, s.MaxSequence, d], TestModels.RandomWeights(rng, s.MaxSequence * d, 0.5f));
        var pos = b.Node("Slice", ["pos", I("start0", 0), seqEnd, I("axis1", 1)], name: "/Slice");
        string x = b.Node("Add", [emb, pos], name: "/Add");
        string mask = b.Node("Slice", [b.Initializer("mask", [s.MaxSequence, s.MaxSequence], Causal(s.MaxSequence)), I("zeros2", 0, 0), b.Node("Concat", [seqEnd, seqEnd], name: "/mask/Concat", attributes: [Attr("axis", 0L)]), I("axes01", 0, 1)], name: "/mask/Slice");

        for (int l = 0; l < s.Blocks; l++)
        {
            string p = $"/blocks.{l}", w = $"blocks.{l}";
            string h = s.PostNorm ? x : Norm(b, s, x, $"{p}/ln1", $"{w}.ln1", rng);
            string attn = Attention(b, s, h, p, w, mask, rng, W, V, I, dh);
            x = b.Node("Add", [x, attn], name: $"{p}/Add");
            if (s.PostNorm) x = Norm(b, s, x, $"{p}/ln1", $"{w}.ln1", rng);
            string h2 = s.PostNorm ? x : Norm(b, s, x, $"{p}/ln2", $"{w}.ln2", rng);
            string up = b.Node("Add", [V($"{w}.up.bias", s.Ffn, 0.1f), b.Node("MatMul", [h2, W($"{w}.up.weight", d, s.Ffn, 1f / MathF.Sqrt(d))], name: $"{p}/up/MatMul")], name: $"{p}/up/Add");
            // GELU as PyTorch exports it: x * 0.5 * (1 + erf(x / sqrt 2)).
            string erf = b.Node("Erf", [b.Node("Div", [up, b.Initializer($"{w}.sqrt2", [], [MathF.Sqrt(2)])], name: $"{p}/Div")], name: $"{p}/Erf");
            string gelu = b.Node("Mul", [b.Node("Mul", [up, b.Node("Add", [erf, b.Initializer($"{w}.one", [], [1f])], name: $"{p}/Add_1")], name: $"{p}/Mul"), b.Initializer($"{w}.half", [], [0.5f])], name: $"{p}/Mul_1");
            string down = b.Node("Add", [V($"{w}.down.bias", d, 0.1f), b.Node("MatMul", [gelu, W($"{w}.down.weight", s.Ffn, d, 1f / MathF.Sqrt(s.Ffn))], name: $"{p}/down/MatMul")], name: $"{p}/down/Add");
            x = b.Node("Add", [x, down], name: $"{p}/Add_2");
            if (s.PostNorm) x = Norm(b, s, x, $"{p}/ln2", $"{w}.ln2", rng);
        }
        string final = s.PostNorm ? x : Norm(b, s, x, "/ln", "ln", rng);
        b.Node("MatMul", [final, W("head.weight", d, s.Vocab, scale)], ["logits"], name: "/head/MatMul");
        return b.BuildModel("transformer");
    }

    static string Attention(GraphBuilder b, TransformerSpec s, string h, string p, string w, string mask, Random rng,
        Func<string, int, int, float, string> W, Func<string, int, float, float, string> V, Func<string, long[], string> I, int dh)
    {
        int d = s.Hidden;
        float sd = 1f / MathF.Sqrt(d);
        string o;
        switch (s.Attention)
        {
            case AttentionStyle.ContribAttention:
                o = b.Node("Attention", [h, W($"{w}.qkv.weight", d, 3 * d, sd), V($"{w}.qkv.bias", 3 * d, 0.1f, 0)], name: $"{p}/Attention", domain: "com.microsoft",
                    attributes: [Attr("num_heads", (long)s.Heads), Attr("unidirectional", 1L)]);
                break;
            case AttentionStyle.ContribMultiHead:
                {
                    string Proj(string n) => b.Node("Add", [V($"{w}.{n}.bias", d, 0.1f, 0), b.Node("MatMul", [h, W($"{w}.{n}.weight", d, d, sd)], name: $"{p}/{n}/MatMul")], name: $"{p}/{n}/Add");
                    o = b.Node("MultiHeadAttention", [Proj("q"), Proj("k"), Proj("v")], name: $"{p}/MultiHeadAttention", domain: "com.microsoft", attributes: [Attr("num_heads", (long)s.Heads)]);
                    break;
                }
            default:
                {
                    string q, k, v;
                    if (s.Attention == AttentionStyle.Fused)
                    {
                        string qkv = b.Node("Add", [V($"{w}.in_proj_bias", 3 * d, 0.1f, 0), b.Node("MatMul", [h, W($"{w}.in_proj_weight", d, 3 * d, sd)], name: $"{p}/in_proj/MatMul")], name: $"{p}/in_proj/Add");
                        string Cut(int i) => b.Node("Slice", [qkv, I($"{w}.start{i}", [i * d]), I($"{w}.end{i}", [(i + 1) * d]), I($"{w}.axis{i}", [-1])], name: $"{p}/Slice_{i}");
                        (q, k, v) = (Cut(0), Cut(1), Cut(2));
                    }
                    else
                    {
                        string Proj(string n) => b.Node("Add", [V($"{w}.{n}.bias", d, 0.1f, 0), b.Node("MatMul", [h, W($"{w}.{n}.weight", d, d, sd)], name: $"{p}/{n}/MatMul")], name: $"{p}/{n}/Add");
                        (q, k, v) = (Proj("q"), Proj("k"), Proj("v"));
                    }
                    string split = s.ComputedShapes ? SplitShape(b, h, p, s.Heads, I) : I($"{w}.split_shape", [0, 0, s.Heads, dh]);
                    string Heads(string t, string n, long[] perm) =>
                        b.Node("Transpose", [b.Node("Reshape", [t, split], name: $"{p}/Reshape_{n}")], name: $"{p}/Transpose_{n}", attributes: [Attr("perm", perm)]);
                    string qh = Heads(q, "q", [0, 2, 1, 3]), kt = Heads(k, "k", [0, 2, 3, 1]), vh = Heads(v, "v", [0, 2, 1, 3]);
                    string scores = b.Node("Div", [b.Node("MatMul", [qh, kt], name: $"{p}/MatMul"), b.Initializer($"{w}.scale", [], [MathF.Sqrt(dh)])], name: $"{p}/Div_1");
                    string probs = b.Node("Softmax", [b.Node("Add", [scores, mask], name: $"{p}/Add_mask")], name: $"{p}/Softmax", attributes: [Attr("axis", -1L)]);
                    string ctx = b.Node("Transpose", [b.Node("MatMul", [probs, vh], name: $"{p}/MatMul_1")], name: $"{p}/Transpose_o", attributes: [Attr("perm", new long[] { 0, 2, 1, 3 })]);
                    string merge = s.ComputedShapes ? MergeShape(b, h, p, I) : I($"{w}.merge_shape", [0, 0, d]);
                    o = b.Node("Reshape", [ctx, merge], name: $"{p}/Reshape_o");
                    break;
                }
        }
        return b.Node("Add", [V($"{w}.o.bias", d, 0.1f, 0), b.Node("MatMul", [o, W($"{w}.o.weight", d, d, sd)], name: $"{p}/o/MatMul")], name: $"{p}/o/Add");
    }

    /// <summary>[batch, seq, heads, hidden / heads] computed from the input's shape, as torch.onnx.export writes it.</summary>
    static string SplitShape(GraphBuilder b, string h, string p, int heads, Func<string, long[], string> I)
    {
        string shape = b.Node("Shape", [h], name: $"{p}/Shape");
        string Dim(int i) => b.Node("Unsqueeze", [b.Node("Gather", [shape, b.InitializerInt64($"{p}.dim{i}", [], [i])], name: $"{p}/Gather_{i}"), I($"{p}.ax{i}", [0])], name: $"{p}/Unsqueeze_{i}");
        string headDim = b.Node("Div", [b.Node("Gather", [shape, I($"{p}.dim2b", [2])], name: $"{p}/Gather_hidden"), I($"{p}.heads", [heads])], name: $"{p}/Div_head");
        return b.Node("Concat", [Dim(0), Dim(1), I($"{p}.heads_entry", [heads]), headDim], name: $"{p}/Concat", attributes: [Attr("axis", 0L)]);
    }

    /// <summary>[batch, seq, hidden] with hidden read back from the block input's shape.</summary>
    static string MergeShape(GraphBuilder b, string h, string p, Func<string, long[], string> I)
    {
        string shape = b.Node("Shape", [h], name: $"{p}/Shape_o");
        string Dim(int i) => b.Node("Gather", [shape, I($"{p}.odim{i}", [i])], name: $"{p}/Gather_o{i}");
        return b.Node("Concat", [Dim(0), Dim(1), Dim(2)], name: $"{p}/Concat_o", attributes: [Attr("axis", 0L)]);
    }

    static string Norm(GraphBuilder b, TransformerSpec s, string x, string p, string w, Random rng)
    {
        int d = s.Hidden;
        string gamma = b.Initializer($"{w}.weight", [d], TestModels.RandomWeights(rng, d, 0.2f).Select(v => 1 + v).ToArray());
        string beta = b.Initializer($"{w}.bias", [d], TestModels.RandomWeights(rng, d, 0.1f));
        switch (s.Norm)
        {
            case NormStyle.None: return x;
            case NormStyle.Fused:
                return b.Node("LayerNormalization", [x, gamma, beta], name: $"{p}/LayerNormalization", attributes: [Attr("axis", -1L), Attr("epsilon", 1e-5f)]);
            case NormStyle.Rms:
                return b.Node("SimplifiedLayerNormalization", [x, gamma], name: $"{p}/SimplifiedLayerNormalization", attributes: [Attr("axis", -1L), Attr("epsilon", 1e-5f)]);
            default:
                {
                    string mean = b.Node("ReduceMean", [x], name: $"{p}/ReduceMean", attributes: [Attr("axes", new long[] { -1 })]);
                    string centred = b.Node("Sub", [x, mean], name: $"{p}/Sub");
                    string variance = b.Node("ReduceMean", [b.Node("Pow", [centred, b.Initializer($"{w}.two", [], [2f])], name: $"{p}/Pow")], name: $"{p}/ReduceMean_1", attributes: [Attr("axes", new long[] { -1 })]);
                    string std = b.Node("Sqrt", [b.Node("Add", [variance, b.Initializer($"{w}.eps", [], [1e-5f])], name: $"{p}/Add")], name: $"{p}/Sqrt");
                    return b.Node("Add", [b.Node("Mul", [b.Node("Div", [centred, std], name: $"{p}/Div"), gamma], name: $"{p}/Mul"), beta], name: $"{p}/Add_1");
                }
        }
    }

    static float[] Causal(int n)
    {
        var m = new float[n * n];
        for (int i = 0; i < n; i++) for (int j = i + 1; j < n; j++) m[i * n + j] = -1e4f;
        return m;
    }
}
