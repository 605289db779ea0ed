using ModelCompression.Engine.Tests;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using static ModelCompression.Native.Onnx.GraphBuilder;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Fuzz;

/// <summary>
/// Small models built in code: the families the cmdlets rewrite most (MLP, conv net, attention block), a Llama-family
/// decoder with a KV cache in ONNX Runtime GenAI's builder layout (GroupQueryAttention, SkipSimplifiedLayerNormalization;
/// also as a GenAI folder, <see cref="LlamaConfig"/>), and mixed-precision models as the quantizer makes them (4-bit
/// MatMulNBits beside float layers kept with -ExcludeNode, and beside int8 dynamic layers).
/// </summary>
static class BuiltModels
{
    /// <summary>The decoder's sizes: 2 blocks, d=32, 4 query / 2 key-value heads of 8, FFN 64, 64 tokens.</summary>
    public static LlamaConfig Llama { get; } = new(2, 32, 4, 2, 8, 64, 64, MaxPositions: 64);

    public static IEnumerable<(string Name, OnnxModel Model)> All()
    {
        var llama = LlamaGqa();
        var deep = Mlp(64, 64, 3);
        // Weight-only 4-bit with the last layer (or the attention projections) kept float, then int8 dynamic on the float ones.
        var mixed = Quantize(deep, QuantizationMode.WeightOnly, [deep.Proto.Graph.Node[^1].Name]);
        var llamaMixed = Quantize(llama, QuantizationMode.WeightOnly, ["*/q/MatMul", "*/k/MatMul", "*/v/MatMul", "*/o/MatMul"]);
        return [("built_mlp", Mlp(16, 64, 1)), ("built_convnet", ConvNet()), ("built_attention", Attention()), ("built_llama_gqa", llama),
                ("built_mixed_4bit_float", mixed), ("built_mixed_4bit_int8", Quantize(mixed, QuantizationMode.Dynamic, [], force: true)),
                ("built_llama_mixed", llamaMixed), ("built_llama_mixed_int8", Quantize(llamaMixed, QuantizationMode.Dynamic, [], force: true))];
    }

    /// <summary>The mixed-precision forms of <paramref name="model"/> that the corpus also takes from ../shared's language models.</summary>
    public static OnnxModel Quantize(OnnxModel model, QuantizationMode mode, IReadOnlyList<string> exclude, bool force = false) =>
        ModelQuantizer.Quantize(model, new QuantizationOptions { Mode = mode, Bits = mode == QuantizationMode.WeightOnly ? 4 : null, BlockSize = mode == QuantizationMode.WeightOnly ? 32 : null, ExcludeNodes = exclude, Force = force });

    static float[] Weights(Random rng, int n, float scale) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();

    /// <summary>x [batch, inputs] -> <paramref name="hidden"/> layers of MatMul+Add+Relu of that width -> a Gemm to 4 outputs.</summary>
    static OnnxModel Mlp(int inputs, int width, int hidden)
    {
        var rng = new Random(1);
        var b = new GraphBuilder("mlp").Input("x", DT.Float, "batch", inputs).Output("y", DT.Float, "batch", 4);
        string h = "x";
        for (int l = 1, k = inputs; l <= hidden; l++, k = width)
        {
            h = b.Node("MatMul", [h, b.Initializer($"w{l}", [k, width], Weights(rng, k * width, 0.25f))], name: $"/fc{l}/MatMul");
            h = b.Node("Relu", [b.Node("Add", [h, b.Initializer($"b{l}", [width], Weights(rng, width, 0.1f))])]);
        }
        b.Node("Gemm", [h, b.Initializer("head", [width, 4], Weights(rng, width * 4, 0.2f)), b.Initializer("head.bias", [4], Weights(rng, 4, 0.1f))], ["y"], name: "/head/Gemm");
        return b.BuildModel("built_mlp");
    }

    /// <summary>The Llama decoder with random weights (norm scales near 1, weights of order 1/sqrt(fan in)).</summary>
    static OnnxModel LlamaGqa()
    {
        var rng = new Random(4);
        var proto = LlamaModels.Build(Llama, (role, dims) =>
        {
            int n = (int)dims.Aggregate(1L, (a, d) => a * d);
            var values = dims.Length == 1 ? Weights(rng, n, 0.1f).Select(v => v + 1).ToArray() : Weights(rng, n, 1 / MathF.Sqrt(dims[0]));
            return ModelCompression.Native.Onnx.TensorData.FromFloat(role, dims, values);
        });
        return new OnnxModel(proto, null, []);
    }

    static OnnxModel ConvNet()
    {
        var rng = new Random(2);
        var b = new GraphBuilder("convnet").Input("x", DT.Float, "batch", 3, 16, 16).Output("y", DT.Float, "batch", 4);
        string h = b.Node("Conv", ["x", b.Initializer("c1", [8, 3, 3, 3], Weights(rng, 216, 0.3f)), b.Initializer("c1b", [8], Weights(rng, 8, 0.1f))],
            attributes: [Attr("pads", new long[] { 1, 1, 1, 1 })]);
        h = b.Node("Relu", [h]);
        h = b.Node("Conv", [h, b.Initializer("c2", [8, 8, 3, 3], Weights(rng, 576, 0.2f))], attributes: [Attr("pads", new long[] { 1, 1, 1, 1 })]);
        h = b.Node("Flatten", [b.Node("GlobalAveragePool", [h])]);
        b.Node("Gemm", [h, b.Initializer("fc", [8, 4], Weights(rng, 32, 0.5f))], ["y"]);
        return b.BuildModel("built_convnet");
    }

    /// <summary>One pre-LN self-attention block with 2 heads of 8, as PyTorch exports it (Reshape/Transpose into heads).</summary>
    static OnnxModel Attention()
    {
        const int d = 16, heads = 2, dh = 8;
        var rng = new Random(3);
        var b = new GraphBuilder("attention").Input("x", DT.Float, "batch", "seq", d).Output("y", DT.Float, "batch", "seq", d);
        string norm = b.Node("LayerNormalization", ["x", b.Initializer("ln.scale", [d], Enumerable.Repeat(1f, d).ToArray()), b.Initializer("ln.bias", [d], new float[d])],
            attributes: [Attr("axis", -1L)]);
        string split = b.InitializerInt64("split_heads", [4], [0, 0, heads, dh]);
        string merge = b.InitializerInt64("merge_heads", [3], [0, 0, d]);
        string Heads(string name, long[] perm)
        {
            string p = b.Node("MatMul", [norm, b.Initializer(name, [d, d], Weights(rng, d * d, 0.25f))]);
            return b.Node("Transpose", [b.Node("Reshape", [p, split])], attributes: [Attr("perm", perm)]);
        }
        string q = Heads("wq", [0, 2, 1, 3]), k = Heads("wk", [0, 2, 3, 1]), v = Heads("wv", [0, 2, 1, 3]);
        string scores = b.Node("Div", [b.Node("MatMul", [q, k]), b.Initializer("scale", [], [MathF.Sqrt(dh)])]);
        string context = b.Node("MatMul", [b.Node("Softmax", [scores], attributes: [Attr("axis", -1L)]), v]);
        string merged = b.Node("Reshape", [b.Node("Transpose", [context], attributes: [Attr("perm", new long[] { 0, 2, 1, 3 })]), merge]);
        string o = b.Node("MatMul", [merged, b.Initializer("wo", [d, d], Weights(rng, d * d, 0.25f))]);
        b.Node("Add", ["x", o], ["y"]);
        return b.BuildModel("built_attention");
    }
}
