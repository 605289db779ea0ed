using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;

namespace ModelCompression.Engine.Tests.Training;

/// <summary>The training engine on the real models: its inference forward pass agrees with ONNX Runtime, and a training step runs.</summary>
public class RealModelTests
{
    [SharedTheory]
    [InlineData("ch_ppocr_mobile_v2.0_cls_infer.onnx", 2e-3)]
    [InlineData("tiny_bert.onnx", 2e-3)]
    public void ForwardAgreesWithOnnxRuntimeAndATrainingStepRuns(string file, double tolerance)
    {
        var model = ModelIO.Load(SharedFiles.Model(file));
        var inputs = InputSynthesizer.Synthesize(model, new SynthesisOptions { BatchSize = 2, DefaultDimension = 16, Dimensions = new Dictionary<string, long> { ["W"] = 96, ["w"] = 96 } });
        using var session = new ModelSession(model);
        var expected = session.Run(inputs)[0];

        var graph = TrainingGraph.Load(model);
        var feeds = inputs.ToDictionary(kv => kv.Key, kv => kv.Value.Data is float[] f
            ? Tensor.Float(kv.Value.Shape.Select(d => (int)d).ToArray(), f)
            : Tensor.Int64(kv.Value.Shape.Select(d => (int)d).ToArray(), kv.Value.AsInt64()));
        var mine = graph.Forward(feeds, training: false)[0];
        Assert.Equal(expected.Shape.Select(d => (int)d), mine.Shape);
        var e = expected.AsFloat();
        double maxErr = 0, maxRef = 0;
        for (int i = 0; i < e.Length; i++) { maxErr = Math.Max(maxErr, Math.Abs(e[i] - mine.Data[i])); maxRef = Math.Max(maxRef, Math.Abs(e[i])); }
        Assert.True(maxErr <= tolerance * Math.Max(1, maxRef), $"{file}: max abs error {maxErr} (largest output {maxRef})");

        // one training step: gradients reach the weights and are finite
        var y = graph.Forward(feeds, training: true)[0];
        graph.Backward(new Dictionary<string, Tensor> { [graph.OutputNames[0]] = Tensor.Float(y.Shape, Enumerable.Repeat(1f, y.Length).ToArray()) });
        var trained = graph.Parameters.Where(p => p.ReceivesGradient).ToList();
        Assert.True(trained.Count > 10, $"{trained.Count} parameters receive a gradient");
        Assert.All(trained, p => Assert.True(p.Grad.All(float.IsFinite), p.Name));
        Assert.Contains(trained, p => p.Grad.Any(g => g != 0f));
    }
}
