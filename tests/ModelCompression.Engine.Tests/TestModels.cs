using ModelCompression.Native.Onnx;
using static ModelCompression.Native.Onnx.GraphBuilder;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests;

/// <summary>Small models built in code so most tests need no file.</summary>
public static class TestModels
{
    public static float[] RandomWeights(Random rng, int n, float scale)
    {
        var w = new float[n];
        for (int i = 0; i < n; i++) w[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return w;
    }

    /// <summary>features[batch, inputs] → MatMul+Add+Relu per hidden layer → logits[batch, classes].</summary>
    public static OnnxModel Mlp(int inputs = 8, int hidden = 16, int classes = 3, int layers = 2, int seed = 1)
    {
        var rng = new Random(seed);
        var b = new GraphBuilder("mlp").Input("features", DT.Float, "batch", inputs).Output("logits", DT.Float, "batch", classes);
        string x = "features";
        int width = inputs;
        for (int l = 0; l <= layers; l++)
        {
            int outWidth = l == layers ? classes : hidden;
            var w = b.Initializer($"fc{l}.weight", [width, outWidth], RandomWeights(rng, width * outWidth, 1f / MathF.Sqrt(width)));
            var bias = b.Initializer($"fc{l}.bias", [outWidth], RandomWeights(rng, outWidth, 0.1f));
            x = b.Node("MatMul", [x, w], name: $"fc{l}.matmul");
            x = b.Node("Add", [x, bias], l == layers ? ["logits"] : null, name: $"fc{l}.add");
            if (l < layers) x = b.Node("Relu", [x], name: $"fc{l}.relu");
            width = outWidth;
        }
        return b.BuildModel("mlp");
    }

    /// <summary>x[batch,3,16,16] → Conv(8)+BatchNorm+Relu → Conv(8) → GlobalAveragePool → Flatten → Gemm → y[batch,4].</summary>
    public static OnnxModel ConvNet(int seed = 2)
    {
        var rng = new Random(seed);
        var b = new GraphBuilder("convnet").Input("x", DT.Float, "batch", 3, 16, 16).Output("y", DT.Float, "batch", 4);
        var w1 = b.Initializer("conv1.weight", [8, 3, 3, 3], RandomWeights(rng, 8 * 27, 0.3f));
        var b1 = b.Initializer("conv1.bias", [8], RandomWeights(rng, 8, 0.1f));
        var h = b.Node("Conv", ["x", w1, b1], name: "conv1", attributes: [Attr("pads", new long[] { 1, 1, 1, 1 })]);
        var scale = b.Initializer("bn.scale", [8], Enumerable.Range(0, 8).Select(i => 0.5f + 0.1f * i).ToArray());
        var bias = b.Initializer("bn.bias", [8], RandomWeights(rng, 8, 0.1f));
        var mean = b.Initializer("bn.mean", [8], RandomWeights(rng, 8, 0.1f));
        var variance = b.Initializer("bn.var", [8], Enumerable.Range(0, 8).Select(i => 1f + 0.05f * i).ToArray());
        h = b.Node("BatchNormalization", [h, scale, bias, mean, variance], name: "bn");
        h = b.Node("Relu", [h], name: "relu1");
        var w2 = b.Initializer("conv2.weight", [8, 8, 3, 3], RandomWeights(rng, 8 * 72, 0.2f));
        h = b.Node("Conv", [h, w2], name: "conv2", attributes: [Attr("pads", new long[] { 1, 1, 1, 1 })]);
        h = b.Node("GlobalAveragePool", [h], name: "gap");
        h = b.Node("Flatten", [h], name: "flatten");
        var wf = b.Initializer("fc.weight", [8, 4], RandomWeights(rng, 32, 0.5f));
        var bf = b.Initializer("fc.bias", [4], RandomWeights(rng, 4, 0.1f));
        b.Node("Gemm", [h, wf, bf], ["y"], name: "fc");
        return b.BuildModel("convnet");
    }
}
