using ModelCompression.Native;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Pruning;
using Xunit.Abstractions;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;
using static ModelCompression.Engine.Tests.Pruning.PruningTestHelpers;

namespace ModelCompression.Engine.Tests.Pruning;

public class StructuredPruningTests(ITestOutputHelper output)
{
    void Print(OnnxModel m)
    {
        foreach (var n in m.Report!.Notes) output.WriteLine(n);
        foreach (var e in m.Report.Entries) output.WriteLine($"  {e.Target} [{e.OpType}] {e.Action}: {e.Detail}");
    }

    [Fact]
    public void MlpHiddenNeuronsAreRemovedAndConsumersFollow()
    {
        var model = TestModels.Mlp(inputs: 8, hidden: 16, classes: 3);
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0 });
        Print(pruned);
        Assert.Equal([8L, 8], Tensor(pruned, "fc0.weight").Dims);
        Assert.Equal([8L], Tensor(pruned, "fc0.bias").Dims);
        Assert.Equal([8L, 8], Tensor(pruned, "fc1.weight").Dims);
        Assert.Equal([8L, 3], Tensor(pruned, "fc2.weight").Dims);     // output layer: model output keeps its shape
        Assert.Contains(pruned.Report!.Entries, e => e.Target == "fc2.matmul" && e.Action == "Skipped" && e.Detail.Contains("model output"));
        Assert.Equal([1L, 3], OutputShape(pruned));
        Assert.True(pruned.SerializedSize < model.SerializedSize);
        Assert.True(pruned.Report.Metrics["FlopsAfter"] < pruned.Report.Metrics["FlopsBefore"]);
        Assert.Equal(model.Proto.Graph.Initializer.Sum(t => TensorData.ElementCount(t)), pruned.Report.Metrics["ParametersBefore"]);
        Assert.Equal(pruned.Proto.Graph.Initializer.Sum(t => TensorData.ElementCount(t)), pruned.Report.Metrics["ParametersAfter"]);
    }

    [Fact]
    public void RemovingZeroNeuronsLeavesTheFunctionUnchanged()
    {
        // Zero 8 of fc0's 16 output columns (and their bias): those neurons are dead (Relu(0) = 0),
        // so structured pruning must remove exactly them and the outputs must not change.
        var model = TestModels.Mlp(inputs: 8, hidden: 16, classes: 3);
        var dead = new[] { 1, 3, 4, 7, 9, 10, 12, 15 };
        var proto = model.Proto.Clone();
        var w = Floats(model, "fc0.weight");
        var b = Floats(model, "fc0.bias");
        foreach (int n in dead) { for (int k = 0; k < 8; k++) w[k * 16 + n] = 0; b[n] = -1; }
        int wi = proto.Graph.Initializer.IndexOf(proto.Graph.Initializer.Single(t => t.Name == "fc0.weight"));
        proto.Graph.Initializer[wi] = TensorData.FromFloat("fc0.weight", [8, 16], w);
        int bi = proto.Graph.Initializer.IndexOf(proto.Graph.Initializer.Single(t => t.Name == "fc0.bias"));
        proto.Graph.Initializer[bi] = TensorData.FromFloat("fc0.bias", [16], b);
        var withDead = new OnnxModel(proto, "dead", []);
        var pruned = ModelPruner.Prune(withDead, new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0, ExcludeNodes = ["fc1.*"] });
        Print(pruned);
        Assert.Equal([8L, 8], Tensor(pruned, "fc0.weight").Dims);
        var f = CompareSynthetic(withDead, pruned);
        Assert.True(f.MaxAbsError < 1e-5, $"max abs error {f.MaxAbsError}");
        // An excluded layer keeps its own channels but follows its neighbour: its input rows were sliced.
        Assert.Contains(pruned.Report!.Entries, e => e.Target == "fc1.matmul" && e.Detail.Contains("ExcludeNode"));
        Assert.Equal([8L, 16], Tensor(pruned, "fc1.weight").Dims);
    }

    [Fact]
    public void ConcatOffsetsAndReshapeBlocksKeepTheFunctionWhenDeadChannelsGo()
    {
        // x[1,2,4,4] -> convA(4, two dead channels) -> Relu -\
        //            -> convB(3) ----------------------------> Concat(axis 1) -> Reshape [1,112] -> Transpose? no: Gemm -> y[1,5]
        var rng = new Random(3);
        var b = new GraphBuilder("concat").Input("x", DT.Float, 1, 2, 4, 4).Output("y", DT.Float, 1, 5);
        var wa = TestModels.RandomWeights(rng, 4 * 2 * 9, 0.5f);
        var ba = TestModels.RandomWeights(rng, 4, 0.1f);
        foreach (int dead in new[] { 1, 3 }) { Array.Clear(wa, dead * 18, 18); ba[dead] = -1f; }
        var a = b.Node("Conv", ["x", b.Initializer("wa", [4, 2, 3, 3], wa), b.Initializer("ba", [4], ba)], name: "convA", attributes: [GraphBuilder.Attr("pads", new long[] { 1, 1, 1, 1 })]);
        a = b.Node("Relu", [a], name: "reluA");
        var c = b.Node("Conv", ["x", b.Initializer("wb", [3, 2, 3, 3], TestModels.RandomWeights(rng, 54, 0.5f))], name: "convB", attributes: [GraphBuilder.Attr("pads", new long[] { 1, 1, 1, 1 })]);
        var cat = b.Node("Concat", [c, a], name: "concat", attributes: [GraphBuilder.Attr("axis", 1L)]);
        var flat = b.Node("Reshape", [cat, b.InitializerInt64("shape", [2], [1, 112])], name: "reshape");
        b.Node("Gemm", [flat, b.Initializer("wf", [112, 5], TestModels.RandomWeights(rng, 560, 0.2f))], ["y"], name: "fc");
        var model = b.BuildModel("concat");

        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0, OpTypes = ["Conv"], ExcludeNodes = ["convB"] });
        Print(pruned);
        Assert.Equal([2L, 2, 3, 3], Tensor(pruned, "wa").Dims);
        Assert.Equal([80L, 5], pruned.Proto.Graph.Initializer.Single(t => t.Name.StartsWith("wf", StringComparison.Ordinal)).Dims);
        var f = CompareSynthetic(model, pruned);
        Assert.True(f.MaxAbsError < 1e-5, $"max abs error {f.MaxAbsError}");
        Assert.Contains(pruned.Report!.Entries, e => e.Target == "convA" && e.Detail.Contains("Concat") && e.Detail.Contains("Reshape"));
    }

    [Fact]
    public void ConvChannelsFollowBatchNormReluAndFlatten()
    {
        var model = TestModels.ConvNet();
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0 });
        Print(pruned);
        Assert.Equal([4L, 3, 3, 3], Tensor(pruned, "conv1.weight").Dims);
        Assert.Equal([4L], Tensor(pruned, "bn.scale").Dims);
        Assert.Equal([4L, 4, 3, 3], Tensor(pruned, "conv2.weight").Dims);
        Assert.Equal([4L, 4], Tensor(pruned, "fc.weight").Dims);
        Assert.Equal([1L, 4], OutputShape(pruned));
    }

    [SharedFact]
    public void ActivationAwareStructuredPruningUsesCalibrationData()
    {
        var model = ModelIO.Load(SharedFiles.Model("wine_mlp.onnx"));
        var data = Native.Data.DataSet.Load(SharedFiles.Data("wine_train.npz"));
        var wanda = ModelPruner.Prune(model, new PruningOptions { Rate = 0.75, Structured = true, Criterion = PruningCriterion.Activation, CalibrationData = data });
        var magnitude = ModelPruner.Prune(model, new PruningOptions { Rate = 0.75, Structured = true });
        var fw = Compare(model, wanda, "wine_test.npz");
        var fm = Compare(model, magnitude, "wine_test.npz");
        output.WriteLine($"wine 75% structured: activation acc {fw.DifferenceAccuracy:P1} cosine {fw.Cosine:F4}; magnitude acc {fm.DifferenceAccuracy:P1} cosine {fm.Cosine:F4}");
        Assert.Equal([64L, 13], Tensor(wanda, "fc1.weight").Dims);
        Assert.NotEqual(Floats(wanda, "fc2.bias"), Floats(magnitude, "fc2.bias"));   // other neurons chosen in the second layer
        Assert.True(fw.DifferenceAccuracy >= 0.9, $"accuracy {fw.DifferenceAccuracy}");
    }

    [Fact]
    public void CancellationStopsPruning()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => ModelPruner.Prune(TestModels.ConvNet(), new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0 }, cancel: cts.Token));
        Assert.ThrowsAny<OperationCanceledException>(() => ModelPruner.Prune(TestModels.Mlp(), new PruningOptions { Rate = 0.5, MinElements = 0 }, cancel: cts.Token));
    }

    [Fact]
    public void RateZeroKeepsEveryChannel()
    {
        var model = TestModels.Mlp();
        var same = ModelPruner.Prune(model, new PruningOptions { Rate = 0, Structured = true, MinElements = 0 });
        Assert.Equal(model.Proto.Graph.Initializer.Select(t => string.Join(",", t.Dims)), same.Proto.Graph.Initializer.Select(t => string.Join(",", t.Dims)));
        Assert.Contains(same.Report!.Entries, e => e.Action == "Kept");
        Assert.Equal("PruningNoPrunableChannels", Assert.Throws<EngineException>(() =>
            ModelPruner.Prune(TestModels.Mlp(layers: 0), new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0 })).ErrorId);
    }

    [Fact]
    public void ARateThatWouldEmptyALayerIsRefused()
    {
        var model = TestModels.Mlp(inputs: 8, hidden: 2, classes: 3);
        var e = Assert.Throws<EngineException>(() => ModelPruner.Prune(model, new PruningOptions { Rate = 0.8, Structured = true, MinElements = 0 }));
        Assert.Equal("PruningWouldEmptyLayer", e.ErrorId);
    }

    [SharedFact]
    public void GlobalStructuredScopeRanksChannelsAcrossLayers()
    {
        var model = ModelIO.Load(SharedFiles.Model("breast_cancer_mlp.onnx"));
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true, Scope = PruningScope.Global });
        Print(pruned);
        Assert.Equal(256, pruned.Report!.Metrics["ChannelsAfter"]);   // 50% of 2 x 256 hidden neurons in total
        long h1 = Tensor(pruned, "fc1.weight").Dims[0], h2 = Tensor(pruned, "fc2.weight").Dims[0];
        Assert.Equal(256, h1 + h2);
        Assert.NotEqual(h1, h2);                                       // one ranking: the layers lose different shares
        var f = Compare(model, pruned, "breast_cancer_test.npz");
        output.WriteLine($"breast_cancer structured global 50%: hidden {h1}+{h2}, accuracy {f.ReferenceAccuracy:P2} -> {f.DifferenceAccuracy:P2}");
        Assert.True(f.DifferenceAccuracy >= f.ReferenceAccuracy - 0.05);
    }

    [SharedFact]
    public void TinyBertFeedForwardHalvedIsSmallerAndRuns()
    {
        var model = ModelIO.Load(SharedFiles.Model("tiny_bert.onnx"));
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true, Targets = [PrunedPart.Ffn] });
        Print(pruned);
        output.WriteLine($"size {model.SerializedSize:N0} -> {pruned.SerializedSize:N0}");
        var prunedFfn = pruned.Report!.Entries.Where(e => e.Action == "Pruned").ToList();
        Assert.Equal(4, prunedFfn.Count);
        Assert.All(prunedFfn, e => Assert.Contains("linear1", e.Target));
        Assert.All(prunedFfn, e => Assert.Contains("kept 512 of 1024", e.Detail));
        Assert.Equal(OutputShape(model, 16), OutputShape(pruned, 16));
        // The four layers share one FFN weight pair in the file; they still share one (half-size) pair after pruning
        // (four copies would add 3 MB). The shape arithmetic that became constants saves a few more kilobytes.
        long ffnBytes = 2 * 256 * 1024 * 4;
        Assert.InRange(model.SerializedSize - pruned.SerializedSize, ffnBytes / 2 - 10_000, ffnBytes / 2 + 60_000);
    }

    [SharedFact]
    public void TiedLayersGetOneDecisionAndStayShared()
    {
        // tiny_bert's four encoder layers read the same FFN weights; activation scores differ per layer, yet the
        // layers must keep sharing one (smaller) weight pair rather than splitting into four copies.
        var model = ModelIO.Load(SharedFiles.Model("tiny_bert.onnx"));
        var rng = new Random(5);
        var calibration = new Native.Data.DataSet("calibration", [new Native.Data.NamedArray("input_ids", [8, 16], Enumerable.Range(0, 128).Select(_ => (long)rng.Next(5000)).ToArray())]);
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true, Criterion = PruningCriterion.Activation, CalibrationData = calibration });
        Print(pruned);
        Assert.Contains(pruned.Report!.Notes, n => n.Contains("tied layers"));
        Assert.DoesNotContain(pruned.Report.Notes, n => n.Contains("split into"));
        Assert.True(pruned.SerializedSize < model.SerializedSize - 1_000_000, $"size {pruned.SerializedSize}");
    }

    [SharedFact]
    public void PaddleOcrDetectorQuarterOfConvChannels()
    {
        var model = ModelIO.Load(SharedFiles.Model("ch_PP-OCRv4_det_infer.onnx"));
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.25, Structured = true, MinElements = 0 });
        Print(pruned);
        output.WriteLine($"size {model.SerializedSize:N0} -> {pruned.SerializedSize:N0}");
        Assert.True(pruned.Report!.Metrics["PrunedLayers"] >= 5);
        Assert.True(pruned.SerializedSize < model.SerializedSize);
        Assert.Equal(OutputShape(model), OutputShape(pruned));
        // Squeeze-excite gates and residual joins tie channels: those layers are pruned jointly, depthwise convs follow.
        Assert.Contains(pruned.Report.Entries, e => e.Action == "Pruned" && e.Detail.Contains("pruned jointly with"));
        Assert.Contains(pruned.Report.Entries, e => e.Action == "Skipped" && e.Detail.Contains("depthwise"));
        var f = CompareSynthetic(model, pruned);
        output.WriteLine($"cosine to the original on synthetic input (no fine-tuning): {f.Cosine:F3}");
    }

    public static TheoryData<string> SharedModels() => [.. SharedFiles.Models.Select(f => Path.GetFileName(f))];

    [SharedTheory]
    [MemberData(nameof(SharedModels))]
    public void EverySharedModelPrunesToAValidModelOrRefusesClearly(string file)
    {
        var model = ModelIO.Load(SharedFiles.Model(file));
        foreach (var options in new[]
        {
            new PruningOptions { Rate = 0.25, Structured = true },
            new PruningOptions { Rate = 0.5, Scope = PruningScope.Global },
        })
        {
            try
            {
                var pruned = ModelPruner.Prune(model, options);
                Assert.Equal(OutputShape(model), OutputShape(pruned));
                output.WriteLine($"{file} {options.Method}: {pruned.Report!.Notes[0]} size {model.SerializedSize:N0} -> {pruned.SerializedSize:N0}");
            }
            catch (EngineException e)
            {
                output.WriteLine($"{file} {options.Method}: refused {e.ErrorId}: {e.Message}");
                Assert.StartsWith("Pruning", e.ErrorId);
                Assert.DoesNotContain("defect", e.Message);
            }
        }
    }
}
