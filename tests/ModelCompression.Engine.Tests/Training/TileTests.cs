using ModelCompression.Native.Onnx;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Training;

/// <summary>Tile, as some exporters repeat the key/value heads of grouped-query attention.</summary>
public class TileTests
{
    [Fact]
    public void RepeatedKeyValueHeadsMatchOnnxRuntimeAndTheirGradientsAddUp()
    {
        // [batch, kv heads, seq, head size] projected, repeated to 4 query heads' worth, scaled per head
        var rng = new Random(5);
        var b = new GraphBuilder("tile").Input("x", DT.Float, 2, 2, 3, 4).Output("y", DT.Float);
        var k = b.Node("MatMul", ["x", b.Initializer("w", [4, 4], TestModels.RandomWeights(rng, 16, 1f))]);
        var repeated = b.Node("Tile", [k, b.InitializerInt64("repeats", [4], [1, 2, 1, 1])]);
        b.Node("Mul", [repeated, b.Initializer("scale", [4, 1, 1], TestModels.RandomWeights(rng, 4, 1f))], ["y"]);
        GradientCheck.Run("Tile", new GradientCase(b.BuildModel(), [2, 2, 3, 4]));
    }
}
