using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;
using static ModelCompression.Native.Onnx.GraphBuilder;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Quantization;

/// <summary>Weight-only quantization of whole models, judged in ONNX Runtime: float16 graphs, embedding tables, the head, bad input.</summary>
public class WeightOnlyModelTests
{
    static int Count(OnnxModel m, string op) => m.Proto.Graph.Node.Count(n => n.OpType == op);

    static QuantizationOptions WeightOnly(WeightOnlyAlgorithm? algorithm = null, DataSet? data = null, IReadOnlyList<string>? ops = null) =>
        new() { Mode = QuantizationMode.WeightOnly, Algorithm = algorithm, CalibrationData = data, OpTypes = ops };

    /// <summary>An MLP whose weights and computation are float16 (as -Mode Float16 leaves a model), float32 at its edges.</summary>
    static OnnxModel HalfMlp(int inputs = 64, int hidden = 96, int classes = 5)
    {
        var rng = new Random(4);
        var b = new GraphBuilder("half").Input("x", DT.Float, "batch", inputs).Output("y", DT.Float, "batch", classes);
        string h = b.Node("Cast", ["x"], attributes: Attr("to", (long)DT.Float16));
        int width = inputs;
        for (int l = 0; l < 2; l++)
        {
            int outWidth = l == 1 ? classes : hidden;
            var w = TestModels.RandomWeights(rng, width * outWidth, 1f / MathF.Sqrt(width));
            b.Graph.Initializer.Add(TensorData.FromRaw($"w{l}", DT.Float16, [width, outWidth], QuantMath.HalfBytes(QuantMath.ToHalf(w))));
            h = b.Node("MatMul", [h, $"w{l}"], name: $"fc{l}");
            if (l == 0) h = b.Node("Relu", [h]);
            width = outWidth;
        }
        b.Node("Cast", [h], ["y"], attributes: Attr("to", (long)DT.Float));
        return b.BuildModel("half");
    }

    [Fact]
    public void Float16GraphGetsMatMulNBitsWithFloat16Scales()
    {
        var m = HalfMlp();
        foreach (var algorithm in new WeightOnlyAlgorithm?[] { null, new HqqAlgorithm() })
        {
            var q = ModelQuantizer.Quantize(m, WeightOnly(algorithm));
            Assert.Equal(2, Count(q, "MatMulNBits"));
            var scales = q.Proto.Graph.Initializer.Where(t => t.Name.Contains("_scales", StringComparison.Ordinal)).ToList();
            Assert.Equal(2, scales.Count);
            Assert.All(scales, t => Assert.Equal((int)DT.Float16, t.DataType));
            Assert.Contains("in float16", q.Report!.Entries[0].Detail);
            Assert.True(QuantizerTests.Compare(m, q).Cosine >= 0.99);
        }
    }

    [Fact]
    public void Float16StorageBehindCastIsQuantizedThroughTheCast()
    {
        var mlp = TestModels.Mlp(inputs: 64, hidden: 96, classes: 5);
        var stored = ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = QuantizationMode.Float16, StorageOnly = true });
        var q = ModelQuantizer.Quantize(stored, WeightOnly());
        Assert.Equal(3, Count(q, "MatMulNBits"));
        Assert.Equal(0, Count(q, "MatMul"));
        // The weights' Casts and float16 copies are gone; the scales are float32 (the graph computes in float32).
        Assert.DoesNotContain(q.Proto.Graph.Initializer, t => t.DataType == (int)DT.Float16 && t.Dims.Count == 2);
        Assert.All(q.Proto.Graph.Initializer.Where(t => t.Name.Contains("_scales", StringComparison.Ordinal)), t => Assert.Equal((int)DT.Float, t.DataType));
        Assert.Contains("from float16 storage", q.Report!.Entries.First(e => e.Action == "Quantized").Detail);
        Assert.Equal(ParameterCount.Of(mlp.Proto), ParameterCount.Of(q.Proto));
        Assert.True(QuantizerTests.Compare(mlp, q).Cosine >= 0.99);
    }

    [Fact]
    public void DynamicRefusesAFloat16GraphNamingTheNodeAndTheReason()
    {
        var e = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(HalfMlp(), new QuantizationOptions { Mode = QuantizationMode.Dynamic }));
        Assert.Equal("QuantizationNothingToQuantize", e.ErrorId);
        Assert.Contains("'fc0'", e.Message);
        Assert.Contains("float16", e.Message);
        // float16 storage behind a Cast computes in float32: dynamic int8 quantizes it.
        var stored = ModelQuantizer.Quantize(TestModels.Mlp(), new QuantizationOptions { Mode = QuantizationMode.Float16, StorageOnly = true });
        var q = ModelQuantizer.Quantize(stored, new QuantizationOptions { Mode = QuantizationMode.Dynamic });
        Assert.Equal(3, Count(q, "MatMulInteger"));
    }

    [Fact]
    public void Float16GraphWhoseOnlyMatMulMultipliesComputedValuesIsRefusedWithTheReason()
    {
        var b = new GraphBuilder("attn").Input("q", DT.Float16, 4, 8).Input("k", DT.Float16, 8, 4).Output("s", DT.Float16, 4, 4);
        b.Node("MatMul", ["q", "k"], ["s"], name: "scores");
        var e = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(b.BuildModel(), WeightOnly()));
        Assert.Equal("QuantizationNothingToQuantize", e.ErrorId);
        Assert.Contains("'scores'", e.Message);
        Assert.Contains("not a constant", e.Message);
    }

    [SharedTheory]
    [InlineData("tiny_lm.onnx", false)]
    [InlineData("tiny_lm.onnx", true)]
    [InlineData("tiny_bert.onnx", false)]
    [InlineData("tiny_bert.onnx", true)]
    public void Float16ThenWeightOnlyRunsInOnnxRuntime(string file, bool storageOnly)
    {
        var m = ModelIO.Load(SharedFiles.Model(file));
        var half = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = QuantizationMode.Float16, StorageOnly = storageOnly ? true : null });
        var q = ModelQuantizer.Quantize(half, WeightOnly());
        Assert.Equal(file == "tiny_lm.onnx" ? 25 : 17, Count(q, "MatMulNBits"));
        Assert.Equal(8, Count(q, "MatMul")); // attention products stay, with a skip entry and a note (a warning in the cmdlet)
        Assert.Equal(8, q.Report!.Entries.Count(e => e.Action == "Skipped" && e.Detail.Contains("not a constant", StringComparison.Ordinal)));
        Assert.Contains(q.Report.Notes, n => n.Contains("computed values", StringComparison.Ordinal));
        Assert.Equal(ParameterCount.Of(m.Proto), ParameterCount.Of(q.Proto));
        var f = QuantizerTests.Compare(m, q, QuantizerTests.Tokens);
        Assert.True(f.Cosine >= 0.99, $"cosine {f.Cosine}");
    }

    static OnnxModel Embedding(int vocab, int width, int seed = 2)
    {
        var rng = new Random(seed);
        var b = new GraphBuilder("emb").Input("ids", DT.Int64, "batch", 6).Output("y", DT.Float, "batch", 6, width);
        b.Node("Gather", [b.Initializer("table", [vocab, width], TestModels.RandomWeights(rng, vocab * width, 0.5f)), "ids"], ["y"], name: "lookup");
        return b.BuildModel("emb");
    }

    [Theory]
    [InlineData(4, true)]
    [InlineData(4, false)]
    [InlineData(8, true)]
    public void EmbeddingTablesBecomeGatherBlockQuantizedWithTheExactDequantizedRows(int bits, bool symmetric)
    {
        const int vocab = 50, width = 48; // width not a multiple of the block: a partial last block per row
        var m = Embedding(vocab, width);
        var q = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = QuantizationMode.WeightOnly, OpTypes = ["Gather"], Bits = bits, BlockSize = 32, Symmetric = symmetric });
        Assert.Equal(1, Count(q, "GatherBlockQuantized"));
        var table = TensorData.ToFloat(m.Proto.Graph.Initializer.Single(t => t.Name == "table"));
        var transposed = new float[width * vocab];
        for (int v = 0; v < vocab; v++) for (int d = 0; d < width; d++) transposed[d * vocab + v] = table[v * width + d];
        var expected = RoundToNearest.Quantize(transposed, width, vocab, bits, 32, symmetric).Dequantize();
        var ids = new long[] { 0, 7, 49, 7, 13, 1, 2, 3, 4, 5, 6, 48 };
        using var session = new ModelSession(q);
        var y = session.Run(new Dictionary<string, NamedArray> { ["ids"] = new("ids", [2, 6], ids) })[0].AsFloat();
        for (int i = 0; i < ids.Length; i++)
            for (int d = 0; d < width; d++) Assert.Equal(expected[d * vocab + ids[i]], y[i * width + d], 6);
        Assert.Equal(ParameterCount.Of(m.Proto), ParameterCount.Of(q.Proto));
    }

    [Fact]
    public void GathersOverComputedOrTinyTensorsAreLeftAloneAndOddRowsAreSkippedWithTheReason()
    {
        var q = ModelQuantizer.Quantize(Embedding(40, 30), new QuantizationOptions { Mode = QuantizationMode.WeightOnly, OpTypes = ["MatMul", "Gather"], Bits = 4, BlockSize = 16 });
        Assert.Equal(1, Count(q, "GatherBlockQuantized"));
        var odd = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(Embedding(40, 31), new QuantizationOptions { Mode = QuantizationMode.WeightOnly, OpTypes = ["Gather"] }));
        Assert.Equal("QuantizationNothingToQuantize", odd.ErrorId);
        Assert.Contains("do not fill whole bytes", odd.Message);
        var standard = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(Embedding(40, 32), new QuantizationOptions { Mode = QuantizationMode.WeightOnly, OpTypes = ["Gather"], Format = WeightOnlyFormat.Standard }));
        Assert.Equal("QuantizationOpTypeUnsupported", standard.ErrorId);
    }

    [Fact]
    public void HeadBitsGiveTheOutputHeadItsOwnWidth()
    {
        var mlp = TestModels.Mlp(inputs: 32, hidden: 64, classes: 4);
        var q = ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = QuantizationMode.WeightOnly, HeadBits = 8 });
        var bits = q.Proto.Graph.Node.Where(n => n.OpType == "MatMulNBits").ToDictionary(n => n.Name, n => n.Attribute.Single(a => a.Name == "bits").I);
        Assert.Equal(8, bits.Single(kv => kv.Key.StartsWith("fc2", StringComparison.Ordinal)).Value); // fc2.matmul -> Add -> logits
        Assert.All(bits.Where(kv => !kv.Key.StartsWith("fc2", StringComparison.Ordinal)), kv => Assert.Equal(4, kv.Value));
        Assert.Contains("(output head)", q.Report!.Entries.Single(e => e.Target == "fc2.matmul").Detail);
        Assert.Equal("8", q.History[^1].Parameters["HeadBits"]);

        var noHead = new GraphBuilder("nohead").Input("x", DT.Float, "batch", 32).Output("y", DT.Float, "batch", 16);
        var h = noHead.Node("MatMul", ["x", noHead.Initializer("w", [32, 16], TestModels.RandomWeights(new Random(1), 512, 0.2f))]);
        noHead.Node("Relu", [h], ["y"]);
        var r = ModelQuantizer.Quantize(noHead.BuildModel(), new QuantizationOptions { Mode = QuantizationMode.WeightOnly, HeadBits = 8 });
        Assert.Contains(r.Report!.Warnings, n => n.Contains("-HeadBits found no output head", StringComparison.Ordinal));
    }

    [Fact]
    public void CalibrationDataGivesEachLayerItsOutputErrorAndGptqLowersIt()
    {
        var mlp = TestModels.Mlp(inputs: 64, hidden: 128, classes: 8);
        var rng = new Random(3);
        var x = new float[256 * 64];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() * 2 - 1) * (1 + i % 64 % 7);
        var data = new DataSet("calibration", [new NamedArray("features", [256, 64], x)]);
        var rtn = ModelQuantizer.Quantize(mlp, WeightOnly(data: data));
        var gptq = ModelQuantizer.Quantize(mlp, WeightOnly(new GptqAlgorithm(), data));
        foreach (var (r, g) in rtn.Report!.Entries.Zip(gptq.Report!.Entries))
        {
            Assert.Equal(r.Target, g.Target);
            Assert.NotNull(r.Error);
            Assert.True(g.Error < r.Error, $"{r.Target}: GPTQ {g.Error} vs RTN {r.Error}");
            Assert.Contains("output error", g.Detail);
        }
        Assert.True(gptq.Report.Metrics["ReconstructionErrorMean"] < rtn.Report.Metrics["ReconstructionErrorMean"]);
        Assert.Equal("GPTQ", gptq.History[^1].Parameters["Algorithm"]);
        Assert.True(QuantizerTests.Compare(mlp, gptq).Cosine >= 0.99);
    }

    [Fact]
    public void GptqWithoutDataAndSettingsOfAnotherAlgorithmAreRefused()
    {
        var mlp = TestModels.Mlp();
        var e = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(mlp, WeightOnly(new GptqAlgorithm())));
        Assert.Equal("QuantizationCalibrationDataMissing", e.ErrorId);
        Assert.Equal("QuantizationParameterNotApplicable", Assert.Throws<EngineException>(() => WeightOnlyAlgorithms.Create(["RTN"], new Dictionary<string, object> { ["Damping"] = 2.0 })).ErrorId);
        Assert.Equal("QuantizationParameterNotApplicable", Assert.Throws<EngineException>(() => WeightOnlyAlgorithms.Create(null, new Dictionary<string, object> { ["ActOrder"] = true })).ErrorId);
        Assert.Equal("QuantizationParameterNotApplicable", Assert.Throws<EngineException>(() =>
            ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = QuantizationMode.Dynamic, Algorithm = new HqqAlgorithm() })).ErrorId);
        Assert.Equal("QuantizationDampingInvalid", Assert.Throws<EngineException>(() =>
            ModelQuantizer.Quantize(mlp, WeightOnly(WeightOnlyAlgorithms.Create(["GPTQ"], new Dictionary<string, object> { ["Damping"] = 0.0 }), new DataSet("d", [new NamedArray("features", [2, 8], new float[16])])))).ErrorId);
        Assert.Equal("QuantizationParameterNotApplicable", Assert.Throws<EngineException>(() =>
            ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = QuantizationMode.WeightOnly, CalibrationBatchSize = 4 })).ErrorId);
        var gptq = Assert.IsType<GptqAlgorithm>(WeightOnlyAlgorithms.Create(["gptq"], new Dictionary<string, object> { ["Damping"] = 2.5, ["ActOrder"] = true }));
        Assert.Equal(2.5, gptq.Settings.DampingPercent);
        Assert.True(gptq.Settings.ActOrder);
    }

    [Fact]
    public void CalibrationDataThatDoesNotMatchTheInputsIsRefusedBeforeAnythingRuns()
    {
        var mlp = TestModels.Mlp(inputs: 8);
        var wrongWidth = new DataSet("wide.npz", [new NamedArray("features", [4, 9], new float[36])]);
        Assert.Equal("DataShapeMismatch", Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(mlp, WeightOnly(new GptqAlgorithm(), wrongWidth))).ErrorId);
        var wrongType = new DataSet("ints.npz", [new NamedArray("features", [4, 8], new long[32])]);
        var e = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(mlp, WeightOnly(new GptqAlgorithm(), wrongType)));
        Assert.Equal("DataTypeMismatch", e.ErrorId);
        Assert.Contains("'features'", e.Message);
    }

    [Fact]
    public void MalformedNodesAreSkippedWithAReasonNotACrash()
    {
        var b = new GraphBuilder("broken").Input("x", DT.Float, "batch", 16).Output("y", DT.Float, "batch", 16);
        var w = b.Initializer("w", [16, 16], TestModels.RandomWeights(new Random(1), 256, 0.2f));
        b.Graph.Node.Add(new NodeProto { OpType = "MatMul", Name = "lonely", Input = { "x" }, Output = { "dead" } });
        b.Graph.Node.Add(new NodeProto { OpType = "Gemm", Name = "mute", Input = { "x", w } });
        b.Node("MatMul", ["x", w], ["y"], name: "fine");
        var model = b.BuildModel("broken");
        foreach (var mode in new[] { QuantizationMode.WeightOnly, QuantizationMode.Dynamic })
        {
            var q = ModelQuantizer.Quantize(model, new QuantizationOptions { Mode = mode });
            Assert.Contains(q.Report!.Entries, e => e.Target == "lonely" && e.Action == "Skipped");
            Assert.Contains(q.Report.Entries, e => e.Target == "mute" && e.Action == "Skipped");
            Assert.Contains(q.Report.Entries, e => e.Target == "fine" && e.Action == "Quantized");
        }
    }

    [Fact]
    public void NonFiniteWeightIsAnEngineErrorNotAnAggregate()
    {
        var b = new GraphBuilder("nan").Input("x", DT.Float, "batch", 256).Output("y", DT.Float, "batch", 64);
        var values = TestModels.RandomWeights(new Random(2), 256 * 64, 0.1f);
        values[200 * 64 + 5] = float.NaN;
        b.Node("MatMul", ["x", b.Initializer("bad.weight", [256, 64], values)], ["y"], name: "mm");
        foreach (var algorithm in new WeightOnlyAlgorithm?[] { null, new HqqAlgorithm() })
        {
            var e = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(b.BuildModel(), WeightOnly(algorithm)));
            Assert.Equal("QuantizationNonFiniteValues", e.ErrorId);
            Assert.Contains("bad.weight", e.Message);
        }
    }
}
