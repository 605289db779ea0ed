using ModelCompression.Native;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

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

    [Fact]
    public void ABatchTheSpecGivesIsTheBatchSizeAndAGivenBatchSizeMustAgree()
    {
        var mlp = TestModels.Mlp(inputs: 8);
        var spec = new Dictionary<string, long[]> { ["features"] = [5, 8] };
        Assert.Equal(5, InputShapeSpec.Apply(new SynthesisOptions { BatchSize = 32 }, [mlp], spec).BatchSize);
        Assert.Equal(5, InputShapeSpec.Apply(new SynthesisOptions { BatchSize = 5 }, [mlp], spec, batchSizeGiven: true).BatchSize);
        Assert.Equal(7, InputShapeSpec.Apply(new SynthesisOptions(), [mlp], new Dictionary<string, long[]> { ["batch"] = [7] }).BatchSize);
        var e = Assert.Throws<EngineException>(() => InputShapeSpec.Apply(new SynthesisOptions { BatchSize = 32 }, [mlp], spec, batchSizeGiven: true));
        Assert.Equal("BatchSizeConflict", e.ErrorId);
        Assert.Contains("'features' a batch of 5", e.Message);
    }

    [Fact]
    public void TheHintForAnOpenDimensionNamesTheRealInput()
    {
        var b = new GraphBuilder("lm").Input("input_ids", DT.Int64, "batch", "seq").Output("y", DT.Int64, "batch", "seq");
        b.Node("Identity", ["input_ids"], ["y"]);
        var model = b.BuildModel("lm");
        var e = Assert.Throws<EngineException>(() => { InputSynthesizer.ResolveShapes(model, new SynthesisOptions { BatchSize = 4 }); });
        Assert.Equal("InputDimensionUnresolved", e.ErrorId);
        Assert.Contains("@{ input_ids = 4,128 } or @{ seq = 128 }", e.Message);
    }
}
