using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Engine.Tests.Quantization;

/// <summary>8-bit blocks, per-layer precision (a map and the mixed preset), each layer's bytes in the report, and the refusals.</summary>
public class PrecisionTests
{
    static QuantizationOptions WeightOnly(int? bits = null, IReadOnlyList<LayerPrecisionRule>? rules = null, WeightOnlyFormat? format = null) =>
        new() { Mode = QuantizationMode.WeightOnly, Bits = bits, LayerPrecision = rules, Format = format };

    static Dictionary<string, long> BitsByNode(OnnxModel q) =>
        q.Proto.Graph.Node.Where(n => n.OpType == "MatMulNBits").ToDictionary(n => n.Name, n => n.Attribute.Single(a => a.Name == "bits").I);

    [Theory]
    [InlineData(WeightOnlyFormat.MatMulNBits)]
    [InlineData(WeightOnlyFormat.Standard)]
    public void EightBitBlocksRunInOnnxRuntimeAndStayCloserThanFour(WeightOnlyFormat format)
    {
        var mlp = TestModels.Mlp(inputs: 64, hidden: 128, classes: 8);
        var eight = ModelQuantizer.Quantize(mlp, WeightOnly(8, format: format));
        var four = ModelQuantizer.Quantize(mlp, WeightOnly(4, format: format));
        double c8 = QuantizerTests.Compare(mlp, eight).Cosine, c4 = QuantizerTests.Compare(mlp, four).Cosine;
        Assert.True(c8 > 0.9999, $"8-bit cosine {c8}");
        Assert.True(1 - c8 < 0.1 * (1 - c4), $"8-bit {c8} vs 4-bit {c4}");
        Assert.True(eight.SerializedSize > four.SerializedSize);
        if (format == WeightOnlyFormat.MatMulNBits) Assert.All(BitsByNode(eight).Values, b => Assert.Equal(8, b));
        else Assert.Contains(eight.Proto.Graph.Initializer, t => t.DataType == (int)Native.Onnx.Proto.TensorProto.Types.DataType.Int8 && t.Dims.Count == 2);
    }

    [Fact]
    public void LayerPrecisionMapSetsEachLayerAndTheReportListsPrecisionBytesAndError()
    {
        var mlp = TestModels.Mlp(inputs: 64, hidden: 128, classes: 8);
        var calibration = new DataSet("calib", [new NamedArray("features", [32, 64], TestModels.RandomWeights(new Random(4), 32 * 64, 1f))]);
        var q = ModelQuantizer.Quantize(mlp, WeightOnly(4, [new("fc0.*", LayerPrecision.Parse("8", 32)), new("fc1.matmul", LayerPrecision.Parse("4/64", 32)), new("fc2*", LayerPrecision.Float)])
            with { CalibrationData = calibration });
        var bits = BitsByNode(q);
        Assert.Equal(8, bits.Single(kv => kv.Key.StartsWith("fc0", StringComparison.Ordinal)).Value);
        Assert.Equal(4, bits.Single(kv => kv.Key.StartsWith("fc1", StringComparison.Ordinal)).Value);
        Assert.Equal(64, q.Proto.Graph.Node.Single(n => n.Name.StartsWith("fc1", StringComparison.Ordinal) && n.OpType == "MatMulNBits").Attribute.Single(a => a.Name == "block_size").I);
        Assert.Contains(q.Proto.Graph.Node, n => n.Name == "fc2.matmul" && n.OpType == "MatMul");
        var entries = q.Report!.Entries.ToDictionary(e => e.Target);
        Assert.Equal("Kept", entries["fc2.matmul"].Action);
        Assert.Contains("-LayerPrecision 'fc0.*'", entries["fc0.matmul"].Detail);
        Assert.Equal(128 * (64 + 2 * 4), entries["fc0.matmul"].Bytes); // 8-bit codes + a float scale per block of 32
        Assert.Equal(128 * (64 + 2 * 4), entries["fc1.matmul"].Bytes);  // 4-bit codes of 128 rows + a float scale per block of 64
        Assert.Equal(128 * 8 * 4, entries["fc2.matmul"].Bytes);         // float
        Assert.NotNull(entries["fc1.matmul"].Error);
        Assert.True(QuantizerTests.Compare(mlp, q).Cosine > 0.995);
    }

    [Fact]
    public void LayerPrecisionRefusesPatternsThatNameNoLayerOpsWithoutTheFormAndBadValues()
    {
        var mlp = TestModels.Mlp(inputs: 32, hidden: 64);
        Assert.Equal("QuantizationLayerPatternUnmatched", Assert.Throws<EngineException>(() =>
            ModelQuantizer.Quantize(mlp, WeightOnly(rules: [new("attention.*", LayerPrecision.Parse("8", 32))]))).ErrorId);
        // The Add of a layer has no weight-only form at any width: said so rather than "no layer".
        var e = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(mlp, WeightOnly(rules: [new("fc0.add", LayerPrecision.Parse("8", 32))])));
        Assert.Equal("QuantizationBitsUnsupported", e.ErrorId);
        Assert.Contains("Add 'fc0.add'", e.Message);
        foreach (var bad in new[] { "3", "4/48", "16", "eight", "4/512" })
            Assert.Equal("QuantizationLayerPrecisionInvalid", Assert.Throws<EngineException>(() => LayerPrecision.Parse(bad, 32)).ErrorId);
        Assert.Equal("QuantizationParameterNotApplicable", Assert.Throws<EngineException>(() =>
            ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = QuantizationMode.Dynamic, LayerPrecision = [new("fc0*", LayerPrecision.Float)] })).ErrorId);
    }

    [Fact]
    public void TheMoreSpecificPatternWins()
    {
        var mlp = TestModels.Mlp(inputs: 32, hidden: 64);
        var q = ModelQuantizer.Quantize(mlp, WeightOnly(4, [new("*", LayerPrecision.Parse("8", 32)), new("fc1*", LayerPrecision.Parse("4", 32)), new("fc1.matmul", LayerPrecision.Float)]));
        var bits = BitsByNode(q);
        Assert.Equal(8, bits.Single(kv => kv.Key.StartsWith("fc0", StringComparison.Ordinal)).Value);
        Assert.Equal(8, bits.Single(kv => kv.Key.StartsWith("fc2", StringComparison.Ordinal)).Value);
        Assert.DoesNotContain(bits.Keys, k => k.StartsWith("fc1", StringComparison.Ordinal));
    }

    [SharedFact]
    public void MixedPresetGivesTheHeadAndTheFirstAndLastBlocksValueAndDownProjectionsEightBits()
    {
        var model = ModelIO.Load(SharedFiles.Model("tiny_llama.onnx"));
        var q = ModelQuantizer.Quantize(model, new QuantizationOptions { Mode = QuantizationMode.WeightOnly, MixedPrecision = true, OpTypes = ["MatMul", "Gather"] });
        var report = q.Report!.Entries.Where(e => e.Action == "Quantized").ToDictionary(e => e.Target);
        bool Eight(string name) => report[name].Detail.StartsWith("8-bit", StringComparison.Ordinal);
        Assert.True(Eight("/m/head/MatMul"));
        Assert.True(Eight("/m/emb/Gather"));
        // 4 blocks: llama.cpp's rule (i < n/8, i >= 7n/8, every third between) with the first and last: blocks 0, 2, 3.
        foreach (int block in new[] { 0, 2, 3 })
        {
            Assert.True(Eight($"/m/blocks.{block}/v/MatMul"), $"v of block {block}");
            Assert.True(Eight($"/m/blocks.{block}/down/MatMul"), $"down of block {block}");
        }
        Assert.False(Eight("/m/blocks.1/v/MatMul"));
        foreach (var role in new[] { "q", "k", "o", "gate", "up" }) Assert.False(Eight($"/m/blocks.0/{role}/MatMul"), role);
        Assert.Contains("value projection of block 1 of 4", report["/m/blocks.0/v/MatMul"].Detail);
        Assert.Contains("down projection of block 4 of 4", report["/m/blocks.3/down/MatMul"].Detail);
    }
}
