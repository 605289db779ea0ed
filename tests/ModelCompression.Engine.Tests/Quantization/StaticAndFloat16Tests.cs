using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Quantization;

public class StaticAndFloat16Tests
{
    static int Count(OnnxModel m, string op) => m.Proto.Graph.Node.Count(n => n.OpType == op);

    static DataSet Images(int count, int h, int w, int seed, bool imagenet = true) =>
        new("synthetic", [SyntheticImages.Documents("x", count, h, w, seed, imagenet)]);

    [Fact]
    public void StaticQdqOnConvNetFoldsBatchNormAndFusesInOnnxRuntime()
    {
        var net = TestModels.ConvNet();
        var calib = new DataSet("calib", [SyntheticImages.Documents("x", 16, 16, 16, 1, true)]);
        var q = ModelQuantizer.Quantize(net, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = calib });
        Assert.Equal(0, Count(q, "BatchNormalization")); // Optimize (basic) ran first
        Assert.Equal(["Optimize", "Quantize"], q.History.Select(s => s.Name));
        Assert.True(Count(q, "QuantizeLinear") >= 3);
        Assert.Contains(q.Proto.Graph.Initializer, t => t.DataType == (int)DT.Int8 && t.Dims.Count == 4); // conv weight stored int8
        Assert.Contains(q.Proto.Graph.Initializer, t => t.DataType == (int)DT.Int32); // bias int32
        Assert.Contains(q.Report!.Entries, e => e.Target == "conv1" && e.Detail.Contains("Relu folded", StringComparison.Ordinal));
        var fused = GraphOptimizer.Optimize(q, "All");
        Assert.Equal(2, Count(fused, "QLinearConv"));
        var test = new DataSet("test", [SyntheticImages.Documents("x", 8, 16, 16, 77, true)]);
        var f = ModelComparer.Compare(net, q, new InputSource { Data = test }).Single();
        Assert.True(f.Cosine >= 0.99, $"cosine {f.Cosine}");
    }

    [Fact]
    public void ConvFollowedByConstantMulAndAddIsFoldedExactly()
    {
        var rng = new Random(9);
        var b = new GraphBuilder("affine").Input("x", DT.Float, "batch", 3, 8, 8).Output("y", DT.Float, "batch", 4, 8, 8);
        var w = b.Initializer("w", [4, 3, 3, 3], TestModels.RandomWeights(rng, 108, 0.3f));
        var h = b.Node("Conv", ["x", w], name: "conv", attributes: [GraphBuilder.Attr("pads", new long[] { 1, 1, 1, 1 })]);
        h = b.Node("Mul", [b.Initializer("s", [1], [0.25f]), h], name: "lab_scale");
        b.Node("Add", [h, b.Initializer("t", [4, 1, 1], [100f, -50f, 3f, 0f])], ["y"], name: "lab_bias");
        var m = b.BuildModel("affine");
        var folded = m.Derive("test", new Dictionary<string, string>(), p => { Assert.Equal(2, AffineFolding.FoldConvAffine(p)); return null; });
        Assert.Equal(["Conv"], folded.Proto.Graph.Node.Select(n => n.OpType));
        Assert.Equal("y", folded.Proto.Graph.Node[0].Output[0]);
        var f = QuantizerTests.Compare(m, folded);
        Assert.True(f.MaxAbsError < 1e-4, $"max abs error {f.MaxAbsError}");
    }

    [Fact]
    public void CalibrationMethodsNarrowTheRangeAsExpected()
    {
        // Uniform mass on [0, ~9.8] plus one outlier at 100: percentile clips the outlier, min/max would not.
        var hist = new long[Calibrator.HistogramBins];
        for (int i = 0; i < 200; i++) hist[i] = 1000;
        hist[^1] = 1;
        var (lo, hi) = Calibrator.Percentile(hist, 0f, 100f, 99.9);
        Assert.Equal(0f, lo);
        Assert.InRange(hi, 9f, 11f);
        // Exponentially decaying |x| (a Laplacian) with a far outlier: entropy clips well inside the outlier
        // but keeps the bulk of the distribution.
        var laplace = new long[Calibrator.HistogramBins];
        for (int i = 0; i < laplace.Length; i++) laplace[i] = (long)(100000 * Math.Exp(-i / 40.0));
        laplace[^1] += 1;
        var (elo, ehi) = Calibrator.Entropy(laplace, -100f, 100f);
        Assert.InRange(ehi, 5f, 60f); // bulk scale: 40 bins of 2048 over 100 ≈ 2; the outlier at 100 is dropped
        Assert.Equal(-ehi, elo);
        // Too few observations to clip by: the observed range is kept.
        var sparse = new long[Calibrator.HistogramBins];
        sparse[0] = 10; sparse[^1] = 1;
        Assert.Equal((0f, 100f), Calibrator.Percentile(sparse, 0f, 100f, 99.9));
        Assert.Equal((0f, 100f), Calibrator.Entropy(sparse, 0f, 100f));
    }

    [SharedFact]
    public void ClassifierStaticIsFaithfulOnHeldOutImages()
    {
        var m = ModelIO.Load(SharedFiles.Model("ch_ppocr_mobile_v2.0_cls_infer.onnx"));
        var q = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = Images(8, 48, 192, 1, imagenet: false) });
        Assert.Equal(13, q.Proto.OpsetImport.Single(o => o.Domain == "").Version); // raised from 9
        Assert.True(q.SerializedSize < 0.55 * m.SerializedSize);
        var f = ModelComparer.Compare(m, q, new InputSource { Data = Images(6, 48, 192, 99, imagenet: false), BatchSize = 2 }).Single();
        Assert.True(f.Cosine >= 0.98, $"cosine {f.Cosine}");
        Assert.Equal(1.0, f.Top1Agreement);
    }

    [SharedFact]
    public void DetectorStaticRunsFusedAndStaysCloseOnHeldOutImages()
    {
        var m = ModelIO.Load(SharedFiles.Model("ch_PP-OCRv4_det_infer.onnx"));
        var q = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = Images(6, 96, 96, 1) });
        var f = ModelComparer.Compare(m, q, new InputSource { Data = Images(3, 96, 96, 99), BatchSize = 1 }).Single();
        // Measured 0.86-0.90 on synthetic documents without fallback: below the issue's 0.98 target, which -TargetCosine
        // reaches (next test); guard against regressions of the plain path.
        Assert.True(f.Cosine >= 0.80, $"cosine {f.Cosine}");
        Assert.True(f.MeanAbsError < 0.05, $"mean abs error {f.MeanAbsError}");
        // "Runs fused": ONNX Runtime turns the QDQ groups around each quantized Conv into one QLinearConv.
        var fused = GraphOptimizer.Optimize(q, "All");
        int quantizedConvs = q.Report!.Entries.Count(e => e.OpType == "Conv" && e.Action == "Quantized");
        int qlinear = fused.Proto.Graph.Node.Count(n => n.OpType == "QLinearConv");
        Assert.True(quantizedConvs > 0);
        Assert.True(qlinear >= 0.9 * quantizedConvs, $"{qlinear} QLinearConv for {quantizedConvs} quantized Conv");
    }

    [SharedFact]
    public void DetectorStaticWithTargetCosineKeepsSensitiveNodesFloatAndReachesTarget()
    {
        var m = ModelIO.Load(SharedFiles.Model("ch_PP-OCRv4_det_infer.onnx"));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var q = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = Images(8, 96, 96, 1), TargetCosine = 0.98 });
        double seconds = clock.Elapsed.TotalSeconds;
        var test = new InputSource { Data = Images(3, 96, 96, 99), BatchSize = 1 };
        var f = ModelComparer.Compare(m, q, test).Single();
        var plain = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = Images(8, 96, 96, 1) });
        double before = ModelComparer.Compare(m, plain, test).Single().Cosine;
        var report = q.Report!;
        int kept = report.Entries.Count(e => e.Action == "Kept" && e.Detail.Contains("TargetCosine", StringComparison.Ordinal));
        int convQuantized = report.Entries.Count(e => e.OpType == "Conv" && e.Action == "Quantized");
        int convKept = report.Entries.Count(e => e.OpType == "Conv" && e.Action == "Kept");
        Console.WriteLine($"det -TargetCosine 0.98: held-out cosine {before:F4} -> {f.Cosine:F4}, kept {kept} node(s) ({convKept} Conv, {convQuantized} Conv quantized), " +
            $"reached {report.Metrics["CosineReached"]:F4} from {report.Metrics["CosineAllQuantized"]:F4} in {report.Metrics["TuningEvaluations"]} evaluations, {seconds:F1} s, size {q.SerializedSize} of {m.SerializedSize}");
        Assert.True(f.Cosine >= 0.98, $"cosine {f.Cosine}");
        Assert.Equal(kept, (int)report.Metrics["NodesKeptFloat"]);
        Assert.True(kept >= 1, "the detector needs fallback at 0.98");
        Assert.True(report.Metrics["CosineReached"] >= 0.98);
        Assert.True(convQuantized >= 0.75 * (convQuantized + convKept), $"{convQuantized} of {convQuantized + convKept} Conv quantized");
        Assert.True(q.SerializedSize < 0.5 * m.SerializedSize, $"size {q.SerializedSize} of {m.SerializedSize}");
        Assert.True(before < 0.98, $"without fallback {before}: the test no longer exercises it");
    }

    [SharedFact]
    public void RecognizerStaticWithTargetCosineReachesTargetOnHeldOutImages()
    {
        var m = ModelIO.Load(SharedFiles.Model("ch_PP-OCRv4_rec_infer.onnx"));
        var calib = Images(8, 48, 160, 1, imagenet: false);
        var test = new InputSource { Data = Images(3, 48, 160, 99, imagenet: false), BatchSize = 1 };
        var plain = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = calib });
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var q = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = calib, TargetCosine = 0.98 });
        double seconds = clock.Elapsed.TotalSeconds;
        double before = ModelComparer.Compare(m, plain, test).Single().Cosine;
        var f = ModelComparer.Compare(m, q, test).Single();
        var report = q.Report!;
        int convQuantized = report.Entries.Count(e => e.OpType == "Conv" && e.Action == "Quantized");
        int convKept = report.Entries.Count(e => e.OpType == "Conv" && e.Action == "Kept");
        Console.WriteLine($"rec -TargetCosine 0.98: held-out cosine {before:F4} -> {f.Cosine:F4}, kept {report.Metrics["NodesKeptFloat"]} node(s) ({convKept} Conv, {convQuantized} Conv quantized), " +
            $"{report.Metrics["TuningEvaluations"]} evaluations, {seconds:F1} s, size {q.SerializedSize} of {m.SerializedSize}");
        Assert.True(f.Cosine >= 0.98, $"cosine {f.Cosine}");
        // The recognizer's error is spread over its CNN backbone and transformer neck: the window kept in float32 is wide
        // (measured 16 of 38 Conv, 68 nodes; held-out cosine 0.929 -> 0.987) but the model stays well under half the float size.
        Assert.True(convQuantized >= 10, $"{convQuantized} of {convQuantized + convKept} Conv quantized");
        Assert.True(q.SerializedSize < 0.45 * m.SerializedSize, $"size {q.SerializedSize} of {m.SerializedSize}");
    }

    [Fact]
    public void TargetCosineIsStaticOnlyAndFailsClearlyWhenUnreachable()
    {
        var mlp = TestModels.Mlp();
        Assert.Equal("QuantizationParameterNotApplicable", Assert.Throws<EngineException>(() =>
            ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = QuantizationMode.Dynamic, TargetCosine = 0.99 })).ErrorId);
        var net = TestModels.ConvNet();
        var calib = new DataSet("calib", [SyntheticImages.Documents("x", 8, 16, 16, 1, true)]);
        Assert.Equal("QuantizationTargetCosineInvalid", Assert.Throws<EngineException>(() =>
            ModelQuantizer.Quantize(net, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = calib, TargetCosine = 1.5 })).ErrorId);
        Assert.Equal("QuantizationValidationRowsMissing", Assert.Throws<EngineException>(() =>
            ModelQuantizer.Quantize(net, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = new DataSet("one", [calib.Arrays[0].Slice(0, 1)]), TargetCosine = 0.9 })).ErrorId);
        // Cosine exactly 1 needs every node in float32: refused with a clear id rather than returning an unquantized model.
        var e = Assert.Throws<EngineException>(() =>
            ModelQuantizer.Quantize(net, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = calib, TargetCosine = 1.0 }));
        Assert.Equal("QuantizationTargetCosineNotMet", e.ErrorId);
        // A reachable target: met, reported, and the fallback nodes are named.
        var q = ModelQuantizer.Quantize(net, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = calib, TargetCosine = 0.95 });
        Assert.True(q.Report!.Metrics["CosineReached"] >= 0.95);
        Assert.True(ModelComparer.Compare(net, q, new InputSource { Data = new DataSet("test", [SyntheticImages.Documents("x", 8, 16, 16, 77, true)]) }).Single().Cosine >= 0.95);
    }

    [Fact]
    public void Float16FullKeepsFloat32InterfaceAndBlocksFragileOps()
    {
        var b = new GraphBuilder("f16").Input("x", DT.Float, "batch", 8).Output("y", DT.Float, "batch", 8);
        var w = b.Initializer("w", [8, 8], TestModels.RandomWeights(new Random(3), 64, 0.5f));
        var h = b.Node("MatMul", ["x", w], name: "mm");
        h = b.Node("Exp", [h], name: "exp");
        var bias = b.Initializer("bias", [8], TestModels.RandomWeights(new Random(4), 8, 0.1f));
        b.Node("Add", [h, bias], ["y"], name: "add");
        var m = b.BuildModel("f16");
        var q = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = QuantizationMode.Float16 });
        Assert.Equal((int)DT.Float, q.Proto.Graph.Input[0].Type.TensorType.ElemType);
        Assert.Equal((int)DT.Float, q.Proto.Graph.Output[0].Type.TensorType.ElemType);
        Assert.Equal((int)DT.Float16, q.Proto.Graph.Initializer.Single(t => t.Name == "w").DataType);
        Assert.Contains(q.Report!.Entries, e => e.Target == "exp" && e.Action == "Kept");
        Assert.True(Count(q, "Cast") >= 3); // in, around Exp, out
        var f = QuantizerTests.Compare(m, q);
        Assert.True(f.Cosine >= 0.999, $"cosine {f.Cosine}");
        Assert.Equal("ModelAlreadyQuantized", Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(q, new QuantizationOptions { Mode = QuantizationMode.Float16 })).ErrorId);
        var excluded = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = QuantizationMode.Float16, ExcludeNodes = ["ADD"] });
        Assert.Contains(excluded.Report!.Entries, e => e.Target == "add" && e.Action == "Kept" && e.Detail.Contains("ExcludeNode", StringComparison.Ordinal));
        Assert.True(QuantizerTests.Compare(m, excluded).Cosine >= 0.999);
    }

    [Fact]
    public void Float16WithoutKeepIOTypesChangesTheInterface()
    {
        var mlp = TestModels.Mlp();
        var q = ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = QuantizationMode.Float16, KeepIOTypes = false });
        Assert.Equal((int)DT.Float16, q.Proto.Graph.Input[0].Type.TensorType.ElemType);
        Assert.Equal((int)DT.Float16, q.Proto.Graph.Output[0].Type.TensorType.ElemType);
        using var s = new ModelSession(q);
        var x = new NamedArray("features", [2, 8], Enumerable.Range(0, 16).Select(i => (Half)(i * 0.1f)).ToArray());
        var y = s.Run(new Dictionary<string, NamedArray> { ["features"] = x }).Single();
        Assert.Equal([2L, 3L], y.Shape);
    }

    [SharedFact]
    public void TinyBertFloat16HalvesTheFileInBothVariants()
    {
        var bert = ModelIO.Load(SharedFiles.Model("tiny_bert.onnx"));
        foreach (bool storageOnly in new[] { false, true })
        {
            var q = ModelQuantizer.Quantize(bert, new QuantizationOptions { Mode = QuantizationMode.Float16, StorageOnly = storageOnly });
            double ratio = (double)q.SerializedSize / bert.SerializedSize;
            Assert.True(ratio <= 0.51, $"storageOnly={storageOnly}: ratio {ratio:F3}");
            var f = QuantizerTests.Compare(bert, q, QuantizerTests.Tokens);
            Assert.True(f.Cosine >= 0.999 && f.MaxAbsError < 0.01, $"storageOnly={storageOnly}: cosine {f.Cosine}, max {f.MaxAbsError}");
        }
    }

    public static TheoryData<string, QuantizationMode> MlpModes() => new()
    {
        { "wine", QuantizationMode.Float16 }, { "breast_cancer", QuantizationMode.Float16 },
        { "wine", QuantizationMode.Static }, { "breast_cancer", QuantizationMode.Static },
    };

    [SharedTheory]
    [MemberData(nameof(MlpModes))]
    public void MlpAccuracyWithinOnePoint(string name, QuantizationMode mode)
    {
        var m = ModelIO.Load(SharedFiles.Model(name + "_mlp.onnx"));
        var test = DataSet.Load(SharedFiles.Data(name + "_test.npz"));
        var options = mode == QuantizationMode.Static
            ? new QuantizationOptions { Mode = mode, CalibrationData = DataSet.Load(SharedFiles.Data(name + "_train.npz")), CalibrationBatchSize = 32 }
            : new QuantizationOptions { Mode = mode };
        var q = ModelQuantizer.Quantize(m, options);
        var f = ModelComparer.Compare(m, q, new InputSource { Data = test }).Single();
        Assert.True(f.DifferenceAccuracy >= f.ReferenceAccuracy - 0.01, $"accuracy {f.ReferenceAccuracy} -> {f.DifferenceAccuracy}");
    }

    public static IEnumerable<object[]> EveryModelAndMode() =>
        from model in new[] { "breast_cancer_mlp", "ch_PP-OCRv4_det_infer", "ch_PP-OCRv4_rec_infer", "ch_ppocr_mobile_v2.0_cls_infer", "tiny_bert", "wine_mlp" }
        from mode in Enum.GetValues<QuantizationMode>()
        select new object[] { model, mode };

    /// <summary>Every mode on every shared model gives a model ONNX Runtime runs, except the refusals expected, with their ids.</summary>
    [SharedTheory]
    [MemberData(nameof(EveryModelAndMode))]
    public void EveryModeOnEveryModelWorksOrRefusesClearly(string name, QuantizationMode mode)
    {
        var m = ModelIO.Load(SharedFiles.Model(name + ".onnx"));
        var (h, w) = name.Contains("det", StringComparison.Ordinal) ? (64, 64) : name.Contains("rec", StringComparison.Ordinal) ? (48, 160) : (48, 192);
        DataSet? calib = mode != QuantizationMode.Static ? null
            : name.EndsWith("_mlp", StringComparison.Ordinal) ? DataSet.Load(SharedFiles.Data(name.Replace("_mlp", "_train.npz", StringComparison.Ordinal)))
            : name == "tiny_bert" ? new DataSet("tokens", [new NamedArray("input_ids", [4, 16], Enumerable.Range(0, 64).Select(i => (long)(i * 37 % 5000)).ToArray())])
            : Images(2, h, w, 1, imagenet: name.Contains("det", StringComparison.Ordinal));
        // The one refusal expected: the detector is all Conv, which only Static quantizes (and Float16 converts).
        string? refusal = name == "ch_PP-OCRv4_det_infer" && mode is QuantizationMode.Dynamic or QuantizationMode.WeightOnly
            ? "QuantizationNothingToQuantize" : null;
        OnnxModel q;
        try { q = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = mode, CalibrationData = calib }); }
        catch (EngineException e) when (refusal is not null)
        {
            Assert.Equal(refusal, e.ErrorId);
            Assert.True(e.Message.Length > 30, e.Message);
            return;
        }
        Assert.Null(refusal);
        Assert.True(q.Report!.Metrics["NodesQuantized"] > 0);
        var inputs = new InputSource { Synthesis = new SynthesisOptions { BatchSize = 1, InputShapes = name.Contains("ocr", StringComparison.OrdinalIgnoreCase) || name.StartsWith("ch_", StringComparison.Ordinal) ? new Dictionary<string, long[]> { ["x"] = [1, 3, h, w] } : new Dictionary<string, long[]>(), DefaultDimension = 16 }, SyntheticBatches = 1 };
        var f = ModelComparer.Compare(m, q, inputs);
        Assert.All(f, o => Assert.False(double.IsNaN(o.Cosine)));
    }
}
