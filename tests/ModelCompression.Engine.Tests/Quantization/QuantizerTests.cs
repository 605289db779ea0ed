using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;
using static ModelCompression.Native.Onnx.GraphBuilder;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Quantization;

public class QuantizerTests
{
    internal static readonly InputSource Tokens = new() { Synthesis = new SynthesisOptions { BatchSize = 2, DefaultDimension = 64 }, SyntheticBatches = 3 };

    internal static OutputFidelity Compare(OnnxModel a, OnnxModel b, InputSource? inputs = null) =>
        ModelComparer.Compare(a, b, inputs ?? new InputSource { Synthesis = new SynthesisOptions { BatchSize = 8 }, SyntheticBatches = 2 }).Single();

    static int Count(OnnxModel m, string op) => m.Proto.Graph.Node.Count(n => n.OpType == op);

    [Fact]
    public void DynamicRewritesMlpIntoTheFusablePatternAndKeepsOutputs()
    {
        var mlp = TestModels.Mlp(inputs: 32, hidden: 64);
        var q = ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = QuantizationMode.Dynamic });
        Assert.Equal(0, Count(q, "MatMul"));
        Assert.Equal(3, Count(q, "MatMulInteger"));
        Assert.Equal(3, Count(q, "DynamicQuantizeLinear"));
        Assert.Equal(6, Count(mlp, "MatMul") + Count(mlp, "Add")); // input untouched
        Assert.DoesNotContain(q.Proto.Graph.Initializer, t => t.Name == "fc0.weight"); // float weight gone
        Assert.Equal(DT.Int8, (DT)q.Proto.Graph.Initializer.First(t => t.Name.StartsWith("fc0.weight_quantized", StringComparison.Ordinal)).DataType);
        Assert.Equal("Quantize", q.History[^1].Name);
        Assert.Equal(3, q.Report!.Metrics["Quantized.MatMul"]);
        Assert.True(Compare(mlp, q).Cosine >= 0.999);
    }

    [Fact]
    public void OnnxRuntimeFusesTheDynamicPatternIntoDynamicQuantizeMatMul()
    {
        var q = ModelQuantizer.Quantize(TestModels.Mlp(inputs: 32, hidden: 64), new QuantizationOptions { Mode = QuantizationMode.Dynamic, PerChannel = true });
        var fused = GraphOptimizer.Optimize(q, "All");
        Assert.Equal(0, Count(fused, "MatMulInteger"));
        Assert.Equal(3, Count(fused, "DynamicQuantizeMatMul"));
    }

    [Fact]
    public void ConvStaysFloatInDynamicModeWithANote()
    {
        var net = TestModels.ConvNet();
        var q = ModelQuantizer.Quantize(net, new QuantizationOptions { Mode = QuantizationMode.Dynamic });
        Assert.Equal(2, Count(q, "Conv"));
        Assert.Equal(1, Count(q, "MatMulInteger"));
        Assert.Contains(q.Report!.Entries, e => e.OpType == "Conv" && e.Action == "Skipped");
        Assert.Contains(q.Report.Notes, n => n.Contains("Static", StringComparison.Ordinal));
        Assert.True(Compare(net, q).Cosine >= 0.99);
        var e = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(net, new QuantizationOptions { Mode = QuantizationMode.Dynamic, OpTypes = ["Conv"] }));
        Assert.Equal("QuantizationOpTypeUnsupported", e.ErrorId);
    }

    [Fact]
    public void SharedWeightsThroughIdentityAreQuantizedOnce()
    {
        var b = new GraphBuilder("tied").Input("x", DT.Float, "batch", 16).Output("y", DT.Float, "batch", 16);
        var w = b.Initializer("w", [16, 16], TestModels.RandomWeights(new Random(1), 256, 0.3f));
        var alias = b.Node("Identity", [w], name: "alias");
        var h = b.Node("MatMul", ["x", w], name: "first");
        b.Node("MatMul", [h, alias], ["y"], name: "second");
        var m = b.BuildModel("tied");
        var q = ModelQuantizer.Quantize(m, new QuantizationOptions { Mode = QuantizationMode.Dynamic });
        Assert.Single(q.Proto.Graph.Initializer, t => t.DataType == (int)DT.Int8 && t.Dims.Count == 2);
        Assert.Equal(0, Count(q, "Identity"));
        Assert.True(Compare(m, q).Cosine >= 0.999);
    }

    [Fact]
    public void ExcludedNodesStayFloatAndForceRequantizes()
    {
        var mlp = TestModels.Mlp();
        var q = ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = QuantizationMode.Dynamic, ExcludeNodes = ["FC2.*"] });
        Assert.Equal(1, Count(q, "MatMul"));
        Assert.Contains(q.Report!.Entries, e => e.Target == "fc2.matmul" && e.Action == "Skipped" && e.Detail.Contains("ExcludeNode", StringComparison.Ordinal));
        var again = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(q, new QuantizationOptions { Mode = QuantizationMode.Dynamic }));
        Assert.Equal("ModelAlreadyQuantized", again.ErrorId);
        var forced = ModelQuantizer.Quantize(q, new QuantizationOptions { Mode = QuantizationMode.Dynamic, Force = true });
        Assert.Equal(0, Count(forced, "MatMul"));
        Assert.Equal(2, forced.History.Count);
        Assert.True(Compare(mlp, forced).Cosine >= 0.999);
    }

    [Fact]
    public void NonFiniteWeightIsRefusedNamingTheTensor()
    {
        var b = new GraphBuilder("nan").Input("x", DT.Float, "batch", 4).Output("y", DT.Float, "batch", 2);
        var values = new float[8];
        values[3] = float.NaN;
        var w = b.Initializer("bad.weight", [4, 2], values);
        b.Node("MatMul", ["x", w], ["y"], name: "mm");
        var e = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(b.BuildModel(), new QuantizationOptions { Mode = QuantizationMode.Dynamic }));
        Assert.Equal("QuantizationNonFiniteValues", e.ErrorId);
        Assert.Contains("bad.weight", e.Message);
    }

    [Theory]
    [InlineData(QuantizationMode.Dynamic, "Bits")]
    [InlineData(QuantizationMode.WeightOnly, "PerChannel")]
    [InlineData(QuantizationMode.Float16, "Symmetric")]
    [InlineData(QuantizationMode.Dynamic, "CalibrationMethod")]
    public void OptionsThatDoNotApplyToTheModeAreRefused(QuantizationMode mode, string parameter)
    {
        var o = parameter switch
        {
            "Bits" => new QuantizationOptions { Mode = mode, Bits = 4 },
            "PerChannel" => new QuantizationOptions { Mode = mode, PerChannel = true },
            "Symmetric" => new QuantizationOptions { Mode = mode, Symmetric = true },
            _ => new QuantizationOptions { Mode = mode, CalibrationMethod = CalibrationMethod.MinMax },
        };
        var e = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(TestModels.Mlp(), o));
        Assert.Equal("QuantizationParameterNotApplicable", e.ErrorId);
        Assert.Contains("-" + parameter, e.Message);
    }

    [Fact]
    public void OutOfRangeOptionsAreRefused()
    {
        Assert.Equal("QuantizationBlockSizeInvalid", Assert.Throws<EngineException>(() => new QuantizationOptions { Mode = QuantizationMode.WeightOnly, BlockSize = 48 }.Validate()).ErrorId);
        Assert.Equal("QuantizationBitsInvalid", Assert.Throws<EngineException>(() => new QuantizationOptions { Mode = QuantizationMode.WeightOnly, Bits = 3 }.Validate()).ErrorId);
        Assert.Equal("QuantizationWeightTypeInvalid", Assert.Throws<EngineException>(() => new QuantizationOptions { Mode = QuantizationMode.Dynamic, WeightType = QuantType.Int4 }.Validate()).ErrorId);
        Assert.Equal("QuantizationCalibrationDataMissing", Assert.Throws<EngineException>(() => new QuantizationOptions { Mode = QuantizationMode.Static }.Validate()).ErrorId);
    }

    [Fact]
    public void ModelWithNothingToQuantizeIsRefusedWithTheReason()
    {
        var b = new GraphBuilder("act").Input("x", DT.Float, 4, 4).Input("y", DT.Float, 4, 4).Output("z", DT.Float, 4, 4);
        b.Node("MatMul", ["x", "y"], ["z"], name: "mm");
        var e = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(b.BuildModel(), new QuantizationOptions { Mode = QuantizationMode.Dynamic }));
        Assert.Equal("QuantizationNothingToQuantize", e.ErrorId);
        Assert.Contains("not a constant", e.Message);
    }

    [Theory]
    [InlineData(4, WeightOnlyFormat.MatMulNBits, true)]
    [InlineData(4, WeightOnlyFormat.MatMulNBits, false)]
    [InlineData(8, WeightOnlyFormat.MatMulNBits, false)]
    [InlineData(4, WeightOnlyFormat.Standard, true)]
    [InlineData(4, WeightOnlyFormat.Standard, false)]
    [InlineData(8, WeightOnlyFormat.Standard, true)]
    public void WeightOnlyMatchesFloatInOnnxRuntime(int bits, WeightOnlyFormat format, bool symmetric)
    {
        // K = 40 is not a multiple of the block (16): exercises padding.
        var mlp = TestModels.Mlp(inputs: 40, hidden: 48, classes: 5);
        var q = ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = QuantizationMode.WeightOnly, Bits = bits, BlockSize = 16, Format = format, Symmetric = symmetric });
        Assert.Equal(0, Count(q, "MatMul") - (format == WeightOnlyFormat.Standard ? 3 : 0));
        if (format == WeightOnlyFormat.MatMulNBits) Assert.Equal(3, Count(q, "MatMulNBits"));
        else Assert.Equal(21, q.Proto.OpsetImport.Single(o => o.Domain == "").Version);
        var f = Compare(mlp, q);
        Assert.True(f.Cosine >= (bits == 4 ? 0.99 : 0.9999), $"cosine {f.Cosine}");
    }

    [Fact]
    public void OptimizeBasicFoldsBatchNormIntoConv()
    {
        var net = TestModels.ConvNet();
        var o = GraphOptimizer.Optimize(net, "Basic");
        Assert.Equal(0, Count(o, "BatchNormalization"));
        Assert.Equal("Optimize", o.History[^1].Name);
        Assert.True(Compare(net, o).Cosine >= 0.99999);
        Assert.Equal("GraphOptimizationLevelInvalid", Assert.Throws<EngineException>(() => GraphOptimizer.Optimize(net, "Fast")).ErrorId);
    }

    // ---- acceptance on the shared models ----

    [SharedFact]
    public void TinyBertDynamicIsSmallAndFaithful()
    {
        var bert = ModelIO.Load(SharedFiles.Model("tiny_bert.onnx"));
        var q = ModelQuantizer.Quantize(bert, new QuantizationOptions { Mode = QuantizationMode.Dynamic });
        double ratio = (double)q.SerializedSize / bert.SerializedSize;
        Assert.True(ratio <= 0.30, $"size ratio {ratio:F3}");
        var f = Compare(bert, q, Tokens);
        Assert.True(f.Cosine >= 0.99, $"cosine {f.Cosine}");
    }

    [SharedTheory]
    [InlineData(WeightOnlyFormat.MatMulNBits)]
    [InlineData(WeightOnlyFormat.Standard)]
    public void TinyBertWeightOnly4BitBlock32(WeightOnlyFormat format)
    {
        var bert = ModelIO.Load(SharedFiles.Model("tiny_bert.onnx"));
        var q = ModelQuantizer.Quantize(bert, new QuantizationOptions { Mode = QuantizationMode.WeightOnly, Bits = 4, BlockSize = 32, Format = format });
        double weightRatio = q.Report!.Metrics["WeightBytesAfter"] / q.Report.Metrics["WeightBytesBefore"];
        Assert.True(weightRatio <= 0.16, $"MatMul weight bytes ratio {weightRatio:F4}");
        var f = Compare(bert, q, Tokens);
        Assert.True(f.Cosine >= 0.98, $"cosine {f.Cosine}");
    }

    public static TheoryData<string, QuantizationMode> MlpModes() => new()
    {
        { "wine", QuantizationMode.Dynamic }, { "breast_cancer", QuantizationMode.Dynamic },
        { "wine", QuantizationMode.WeightOnly }, { "breast_cancer", QuantizationMode.WeightOnly },
    };

    [SharedTheory]
    [MemberData(nameof(MlpModes))]
    public void MlpAccuracyWithinOnePoint(string name, QuantizationMode mode)
    {
        var m = ModelIO.Load(SharedFiles.Model(name + "_mlp.onnx"));
        var data = DataSet.Load(SharedFiles.Data(name + "_test.npz"));
        var options = mode == QuantizationMode.WeightOnly
            ? new QuantizationOptions { Mode = mode, OpTypes = ["Gemm"] }
            : new QuantizationOptions { Mode = mode };
        var q = ModelQuantizer.Quantize(m, options);
        var f = ModelComparer.Compare(m, q, new InputSource { Data = data }).Single();
        Assert.NotNull(f.ReferenceAccuracy);
        Assert.True(f.DifferenceAccuracy >= f.ReferenceAccuracy - 0.01, $"accuracy {f.ReferenceAccuracy} -> {f.DifferenceAccuracy}");
    }
}
