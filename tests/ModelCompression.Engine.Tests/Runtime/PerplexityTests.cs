using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;
using static ModelCompression.Native.Onnx.GraphBuilder;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Runtime;

/// <summary>Token accuracy and perplexity of sequence outputs ([batch, sequence, classes]) with a label per position.</summary>
public class PerplexityTests
{
    static NamedArray Scores(long[] shape, float[] values) => new("logits", shape, values);

    [Fact]
    public void PerplexityIsTheExponentOfTheMeanCrossEntropyComputedByHand()
    {
        // One row of two positions, three classes; the second model is worse on the second position.
        float[] a = [2, 1, 0, 0, 0, 3], b = [2, 1, 0, 1, 0, 2];
        long[] labels = [0, 2];
        var acc = new FidelityAccumulator("logits");
        acc.Add(Scores([1, 2, 3], a), Scores([1, 2, 3], b), labels);
        var r = acc.Result();
        static double Ce(float[] s, int offset, int label) => Math.Log(Math.Exp(s[offset]) + Math.Exp(s[offset + 1]) + Math.Exp(s[offset + 2])) - s[offset + label];
        double expectedRef = Math.Exp((Ce(a, 0, 0) + Ce(a, 3, 2)) / 2), expectedDiff = Math.Exp((Ce(b, 0, 0) + Ce(b, 3, 2)) / 2);
        Assert.Equal(expectedRef, r.ReferencePerplexity!.Value, 10);
        Assert.Equal(expectedDiff, r.DifferencePerplexity!.Value, 10);
        Assert.Equal((expectedDiff / expectedRef - 1) * 100, r.PerplexityIncrease!.Value, 8);
        Assert.Equal(1, r.ReferenceAccuracy);
        Assert.Equal(1, r.DifferenceAccuracy);
    }

    [Fact]
    public void ProbabilitiesAreReadAsProbabilitiesAndIgnoredLabelsDoNotCount()
    {
        float[] p = [0.5f, 0.25f, 0.25f, 0.1f, 0.1f, 0.8f, 0.2f, 0.3f, 0.5f];
        var acc = new FidelityAccumulator("probs");
        acc.Add(Scores([1, 3, 3], p), Scores([1, 3, 3], p), [0, 2, -100]);
        var r = acc.Result();
        Assert.Equal(Math.Exp(-(Math.Log(0.5) + Math.Log(0.8)) / 2), r.ReferencePerplexity!.Value, 5);
        Assert.Equal(0, r.PerplexityIncrease!.Value, 9);
        Assert.Equal(1, r.ReferenceAccuracy); // the ignored position is not scored
    }

    [Fact]
    public void ClassifierOutputsHaveAccuracyButNoPerplexity()
    {
        var acc = new FidelityAccumulator("logits");
        acc.Add(Scores([2, 3], [1, 2, 3, 3, 2, 1]), Scores([2, 3], [1, 2, 3, 3, 2, 1]), [2, 0]);
        var r = acc.Result();
        Assert.Equal(1, r.ReferenceAccuracy);
        Assert.Null(r.ReferencePerplexity);
        Assert.Null(r.PerplexityIncrease);
    }

    /// <summary>ids [batch, 4] → one-hot-ish logits [batch, 4, 5] through an embedding table, with a scale knob.</summary>
    static OnnxModel TinySequenceModel(float scale)
    {
        var b = new GraphBuilder("seq").Input("ids", DT.Int64, "batch", 4).Output("logits", DT.Float, "batch", 4, 5);
        var table = new float[25];
        for (int i = 0; i < 5; i++) table[i * 5 + (i + 1) % 5] = scale;
        b.Node("Gather", [b.Initializer("table", [5, 5], table), "ids"], ["logits"]);
        return b.BuildModel("seq");
    }

    static DataSet NextTokenData()
    {
        var ids = new long[] { 0, 1, 2, 3, 1, 2, 3, 4, 4, 0, 1, 2 };
        var next = ids.Select(i => (i + 1) % 5).ToArray();
        next[5] = 0; // one wrong guess
        return new DataSet("next.npz", [new NamedArray("x", [3, 4], ids), new NamedArray("y", [3, 4], next)]);
    }

    [Fact]
    public void SequenceLabelsAreSlicedPerBatchAndThePerplexityGateJudgesTheIncrease()
    {
        var sharp = TinySequenceModel(4f);
        var blunt = TinySequenceModel(2f);
        var data = NextTokenData();
        // Batches of 2 rows over 3 rows: labels must follow their rows (4 per row).
        var c = ModelComparison.Run(sharp, blunt, new InputSource { Data = data, BatchSize = 2 }, new ComparisonGates { MaxPerplexityIncrease = 1 });
        var o = Assert.Single(c.Outputs);
        Assert.Equal(11.0 / 12, o.ReferenceAccuracy!.Value, 9);
        Assert.True(o.DifferencePerplexity > o.ReferencePerplexity);
        var f = Assert.Single(c.FailedGates);
        Assert.Equal("PerplexityIncreaseAboveMaximum", f.ErrorId);
        Assert.Equal(o.PerplexityIncrease, f.Actual);
        var same = ModelComparison.Run(sharp, sharp, new InputSource { Data = data, BatchSize = 2 }, new ComparisonGates { MaxPerplexityIncrease = 0 });
        Assert.Empty(same.FailedGates);
    }

    [Fact]
    public void PerplexityGateNeedsLabelsAndASequenceOutput()
    {
        var model = TinySequenceModel(1);
        var e = Assert.Throws<EngineException>(() => ModelComparison.Run(model, model, new InputSource(), new ComparisonGates { MaxPerplexityIncrease = 1 }));
        Assert.Equal("PerplexityGateRequiresLabels", e.ErrorId);
        Assert.Equal("MaxPerplexityIncreaseOutOfRange", Assert.Throws<EngineException>(() =>
            ModelComparison.Run(model, model, new InputSource { Data = NextTokenData() }, new ComparisonGates { MaxPerplexityIncrease = -1 })).ErrorId);
        var mlp = TestModels.Mlp(classes: 3);
        var labelled = new DataSet("rows.npz", [new NamedArray("features", [4, 8], new float[32]), new NamedArray("y", [4], new long[4])]);
        var c = ModelComparison.Run(mlp, mlp, new InputSource { Data = labelled }, new ComparisonGates { MaxPerplexityIncrease = 1 });
        Assert.Equal("PerplexityNotMeasurable", Assert.Single(c.FailedGates).ErrorId);
    }
}

/// <summary>One parameter count for Get-ModelInfo, Compare-Model and pruning.</summary>
public class ParameterCountTests
{
    [Fact]
    public void ConstantNodeWeightsCountLikeInitializersInParametersBytesAndSparsity()
    {
        var values = new float[64];
        for (int i = 0; i < 32; i++) values[i] = 1;
        var b = new GraphBuilder("const").Input("x", DT.Float, "batch", 8).Output("y", DT.Float, "batch", 8);
        b.Node("Constant", [], ["w"], attributes: new Native.Onnx.Proto.AttributeProto { Name = "value", Type = Native.Onnx.Proto.AttributeProto.Types.AttributeType.Tensor, T = TensorData.FromFloat("w", [8, 8], values) });
        b.Node("MatMul", ["x", "w"], ["y"]);
        var model = b.BuildModel("const");
        Assert.Equal(64, ParameterCount.Of(model.Proto));
        var s = ModelSummary.Of(model);
        Assert.Equal(64, s.Parameters);
        Assert.Equal(256, s.BytesByElementType["float32"]);
        Assert.Equal(0.5, s.Sparsity!.Value, 9);
    }

    [Theory]
    [InlineData(QuantizationMode.Dynamic)]
    [InlineData(QuantizationMode.WeightOnly)]
    public void QuantizedModelsKeepTheParameterCountOfTheirOriginal(QuantizationMode mode)
    {
        var mlp = TestModels.Mlp(inputs: 40, hidden: 64, classes: 5);
        var q = ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = mode, PerChannel = mode == QuantizationMode.Dynamic ? true : null });
        long original = ParameterCount.Of(mlp.Proto);
        Assert.Equal(original, ParameterCount.Of(q.Proto));
        Assert.Equal(original, ModelSummary.Of(q).Parameters);
        var c = ModelComparison.Run(mlp, q, new InputSource { SyntheticBatches = 1, Synthesis = new SynthesisOptions { BatchSize = 2 } });
        Assert.Equal(1, c.ParameterRatio);
        Assert.True(c.SizeRatio < 0.5);
    }

    [SharedFact]
    public void PaddleOcrWeightsInConstantNodesAreCounted()
    {
        var m = ModelIO.Load(SharedFiles.Model("ch_ppocr_mobile_v2.0_cls_infer.onnx"));
        var s = ModelSummary.Of(m);
        Assert.True(s.Parameters > 100_000, $"{s.Parameters} parameters");
        Assert.True(s.BytesByElementType["float32"] > 400_000);
    }
}
