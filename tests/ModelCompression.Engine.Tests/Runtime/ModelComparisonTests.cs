using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Runtime;

public class ModelComparisonTests
{
    /// <summary>The model with every weight multiplied by (1 + noise·N(0,1)).</summary>
    static OnnxModel Perturbed(OnnxModel model, double noise, int seed = 9) =>
        model.Derive("Perturb", new Dictionary<string, string> { ["noise"] = noise.ToString(System.Globalization.CultureInfo.InvariantCulture) }, proto =>
        {
            var rng = new Random(seed);
            for (int i = 0; i < proto.Graph.Initializer.Count; i++)
            {
                var t = proto.Graph.Initializer[i];
                if (t.DataType != (int)DT.Float) continue;
                var v = TensorData.ToFloat(t);
                for (int j = 0; j < v.Length; j++) v[j] *= (float)(1 + noise * (rng.NextDouble() * 2 - 1) * 1.7);
                proto.Graph.Initializer[i] = TensorData.FromFloat(t.Name, t.Dims.ToArray(), v);
            }
            return null;
        });

    [SharedFact]
    public void ModelAgainstItselfOnLabelledDataPassesEveryGate()
    {
        var model = ModelIO.Load(SharedFiles.Model("wine_mlp.onnx"));
        var data = DataSet.Load(SharedFiles.Data("wine_test.npz"));
        var c = ModelComparison.Run(model, model, new InputSource { Data = data },
            new ComparisonGates { MinCosine = 0.9999, MaxAccuracyDrop = 0, MinTop1Agreement = 1 });
        var o = Assert.Single(c.Outputs);
        Assert.Equal("logits", o.Output);
        Assert.Equal(1, o.Cosine, 9);
        Assert.Equal(0, o.MaxAbsError);
        Assert.Equal(1, o.Top1Agreement);
        Assert.Equal(o.ReferenceAccuracy, o.DifferenceAccuracy);
        Assert.True(o.ReferenceAccuracy > 0.9);
        Assert.Equal(1, c.SizeRatio);
        Assert.Equal(1, c.ParameterRatio);
        Assert.Equal(data.Rows, c.Rows);
        Assert.Equal($"wine_test.npz ({data.Rows} rows, labelled)", c.InputSource);
        Assert.Empty(c.FailedGates);
        Assert.True(c.Passed);
    }

    [SharedFact]
    public void PerturbedModelMissesATightCosineGateAndTheReportIsStillComplete()
    {
        var model = ModelIO.Load(SharedFiles.Model("breast_cancer_mlp.onnx"));
        var noisy = Perturbed(model, 0.2);
        var data = DataSet.Load(SharedFiles.Data("breast_cancer_test.npz"));
        var c = ModelComparison.Run(model, noisy, new InputSource { Data = data },
            new ComparisonGates { MinCosine = 0.999999, MaxAccuracyDrop = 0.5, MinTop1Agreement = 0.5 });
        var o = Assert.Single(c.Outputs);
        Assert.InRange(o.Cosine, 0.5, 0.999999);
        Assert.True(o.MaxAbsError > 0);
        var f = Assert.Single(c.FailedGates);
        Assert.Equal(("MinCosine", "CosineBelowMinimum", "logits"), (f.Gate, f.ErrorId, f.Output));
        Assert.Equal(o.Cosine, f.Actual);
        Assert.Contains("below the minimum", f.Message);
        Assert.False(c.Passed);
    }

    [SharedFact]
    public void AccuracyDropAndTop1GatesFailWhenTheModelIsBroken()
    {
        var model = ModelIO.Load(SharedFiles.Model("wine_mlp.onnx"));
        var broken = Perturbed(model, 3.0);
        var c = ModelComparison.Run(model, broken, new InputSource { Data = DataSet.Load(SharedFiles.Data("wine_test.csv")) },
            new ComparisonGates { MaxAccuracyDrop = 0.01, MinTop1Agreement = 0.99 });
        var o = c.Outputs.Single();
        Assert.True(o.ReferenceAccuracy - o.DifferenceAccuracy > 0.01, $"{o.ReferenceAccuracy} -> {o.DifferenceAccuracy}");
        Assert.Equal(["AccuracyDropAboveMaximum", "Top1AgreementBelowMinimum"], c.FailedGates.Select(g => g.ErrorId).Order());
        var drop = c.FailedGates.Single(g => g.Gate == "MaxAccuracyDrop");
        Assert.Equal(o.ReferenceAccuracy!.Value - o.DifferenceAccuracy!.Value, drop.Actual!.Value, 12);
    }

    [Fact]
    public void AccuracyGateWithoutLabelsIsRefusedBeforeRunning()
    {
        var e = Assert.Throws<EngineException>(() => ModelComparison.Run(TestModels.Mlp(), TestModels.Mlp(), new InputSource(),
            new ComparisonGates { MaxAccuracyDrop = 0.01 }));
        Assert.Equal("AccuracyGateRequiresLabels", e.ErrorId);
    }

    [Theory]
    [InlineData(1.5, null, null, "MinCosineOutOfRange")]
    [InlineData(null, -0.1, null, "MaxAccuracyDropOutOfRange")]
    [InlineData(null, null, 2.0, "MinTop1AgreementOutOfRange")]
    public void GateOutOfRangeIsRefused(double? cos, double? drop, double? top1, string errorId)
    {
        var e = Assert.Throws<EngineException>(() => ModelComparison.Run(TestModels.Mlp(), TestModels.Mlp(), new InputSource(),
            new ComparisonGates { MinCosine = cos, MaxAccuracyDrop = drop, MinTop1Agreement = top1 }));
        Assert.Equal(errorId, e.ErrorId);
    }

    [Fact]
    public void Top1GateOnAnOutputWithoutClassAxisFailsAsNotMeasurable()
    {
        var single = TestModels.Mlp(classes: 1);
        var c = ModelComparison.Run(single, single, new InputSource(), new ComparisonGates { MinTop1Agreement = 0.9 });
        var f = Assert.Single(c.FailedGates);
        Assert.Equal("Top1AgreementNotMeasurable", f.ErrorId);
        Assert.Null(f.Actual);
    }

    [Fact]
    public void NaNCosineFailsTheCosineGate()
    {
        var failed = ModelComparison.Evaluate(new ComparisonGates { MinCosine = 0.9 },
            [new OutputFidelity("y", 10, double.NaN, double.NaN, double.NaN, null, null, null)]);
        Assert.Equal("CosineBelowMinimum", Assert.Single(failed).ErrorId);
    }

    [Fact]
    public void SizeAndParameterRatiosFollowTheModels()
    {
        var model = TestModels.Mlp();
        var bigger = model.Derive("AddUnused", new Dictionary<string, string>(), proto =>
        {
            proto.Graph.Initializer.Add(TensorData.FromFloat("unused", [1000], new float[1000]));
            return null;
        });
        var c = ModelComparison.Run(model, bigger, new InputSource { SyntheticBatches = 2, Synthesis = new SynthesisOptions { BatchSize = 4 } });
        long parameters = model.Initializers.Sum(TensorData.ElementCount);
        Assert.Equal(parameters, c.ReferenceParameters);
        Assert.Equal(parameters + 1000, c.DifferenceParameters);
        Assert.Equal((double)(parameters + 1000) / parameters, c.ParameterRatio, 12);
        Assert.Equal((double)bigger.SerializedSize / model.SerializedSize, c.SizeRatio, 12);
        Assert.True(c.SizeRatio > 1);
        Assert.Equal(8, c.Rows);
        Assert.Equal("Synthesized (2 batches of 4)", c.InputSource);
        Assert.Equal(1, c.Outputs.Single().Cosine, 9);
    }
}
