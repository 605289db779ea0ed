using ModelCompression.Native.Onnx;
using static ModelCompression.Native.Onnx.GraphBuilder;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Fuzz;

/// <summary>Small models of the three families the cmdlets rewrite most (MLP, conv net, attention block), built in code.</summary>
static class BuiltModels
{
    public static IEnumerable<(string Name, OnnxModel Model)> All() => [("built_mlp", Mlp()), ("built_convnet", ConvNet()), ("built_attention", Attention())];

    static float[] Weights(Random rng, int n, float scale) => Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * scale).ToArray();

    static OnnxModel Mlp()
    {
        var rng = new Random(1);
        var b = new GraphBuilder("mlp").Input("x", DT.Float, "batch", 16).Output("y", DT.Float, "batch", 4);
        string h = b.Node("MatMul", ["x", b.Initializer("w1", [16, 64], Weights(rng, 16 * 64, 0.25f))]);
        h = b.Node("Relu", [b.Node("Add", [h, b.Initializer("b1", [64], Weights(rng, 64, 0.1f))])]);
        b.Node("Gemm", [h, b.Initializer("w2", [64, 4], Weights(rng, 256, 0.2f)), b.Initializer("b2", [4], Weights(rng, 4, 0.1f))], ["y"]);
        return b.BuildModel("built_mlp");
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
