using ModelCompression.Native;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Engine.Tests.Runtime;

public class InputShapeSpecTests
{
    [Fact]
    public void InputNamesFixWholeShapesAndDimensionNamesFixDimensions()
    {
        var mlp = TestModels.Mlp(inputs: 8);
        var o = InputShapeSpec.Apply(new SynthesisOptions(), [mlp], new Dictionary<string, long[]> { ["features"] = [5, 8] });
        Assert.Equal([5L, 8L], o.InputShapes["features"]);
        Assert.Equal([5L, 8L], InputSynthesizer.ResolveShapes(mlp, o)["features"]);

        var d = InputShapeSpec.Apply(new SynthesisOptions(), [mlp], new Dictionary<string, long[]> { ["batch"] = [7] });
        Assert.Equal(7, d.Dimensions["batch"]);
        Assert.Equal([7L, 8L], InputSynthesizer.ResolveShapes(mlp, d)["features"]);
    }

    [Theory]
    [InlineData("nosuch", new long[] { 1 }, "InputShapeKeyUnknown")]
    [InlineData("features", new long[] { 1, 8, 1 }, "InputShapeRankMismatch")]
    [InlineData("features", new long[] { 0, 8 }, "InputShapeInvalid")]
    [InlineData("batch", new long[] { 2, 3 }, "InputShapeInvalid")]
    public void BadSpecificationsAreRefused(string key, long[] value, string errorId)
    {
        var e = Assert.Throws<EngineException>(() => InputShapeSpec.Apply(new SynthesisOptions(), [TestModels.Mlp()], new Dictionary<string, long[]> { [key] = value }));
        Assert.Equal(errorId, e.ErrorId);
    }
}
