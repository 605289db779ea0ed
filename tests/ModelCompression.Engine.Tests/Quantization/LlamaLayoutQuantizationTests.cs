using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;
using ModelCompression.Engine.Tests.Runtime;

namespace ModelCompression.Engine.Tests.Quantization;

/// <summary>
/// Quantization on the language-model layouts users have: the Optimum cache layout (tiny_llama_kv.onnx, calibrated with
/// token windows alone), the model builder's (GroupQueryAttention, SkipSimplifiedLayerNormalization), a model that
/// already holds MatMulNBits, and the segmented statistics pass of models too large for one session.
/// </summary>
[Collection(nameof(ProcessWideLimits))]
public class LlamaLayoutQuantizationTests
{
    static DataSet Rows(DataSet data, int start, int count) => new(data.Source, data.Arrays.Select(a => a.Slice(start, count)).ToList());
    static DataSet Calibration => Rows(DataSet.Load(SharedFiles.Data("tiny_lm_calib.npz")), 0, 16);
    static DataSet Test => Rows(DataSet.Load(SharedFiles.Data("tiny_lm_test.npz")), 0, 16);

    static OutputFidelity Compare(OnnxModel a, OnnxModel b) => ModelComparer.Compare(a, b, new InputSource { Data = Test, BatchSize = 8 }).Single();

    public static TheoryData<string> Modes() => new() { "Dynamic", "Static", "Float16", "RTN", "HQQ", "GPTQ", "AWQ", "AWQ,GPTQ" };

    static QuantizationOptions Options(string mode) => mode switch
    {
        "Dynamic" => new() { Mode = QuantizationMode.Dynamic },
        "Static" => new() { Mode = QuantizationMode.Static, CalibrationData = Rows(Calibration, 0, 4), OpTypes = ["MatMul"] },
        "Float16" => new() { Mode = QuantizationMode.Float16 },
        var algorithm => new() { Mode = QuantizationMode.WeightOnly, BlockSize = 32, Algorithm = WeightOnlyAlgorithms.Create(algorithm.Split(',')), CalibrationData = Calibration },
    };

    [SharedTheory]
    [MemberData(nameof(Modes))]
    public void EveryModeQuantizesTheCacheLayoutFromTokenWindowsAlone(string mode)
    {
        var kv = ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx"));
        var q = ModelQuantizer.Quantize(kv, Options(mode));
        var f = Compare(kv, q);
        Assert.True(f.PerplexityRise < (mode == "Static" ? 0.2 : 0.03), $"{mode}: +{f.PerplexityRise:P3}");
        Assert.True(f.Top1Agreement > 0.8, $"{mode}: top-1 {f.Top1Agreement}");
        Assert.Equal(DecoderContract.Of(kv)!.Cache.Count, DecoderContract.Of(q)!.Cache.Count);
    }

    [SharedTheory]
    [InlineData("Dynamic")]
    [InlineData("RTN")]
    [InlineData("HQQ")]
    [InlineData("GPTQ")]
    [InlineData("AWQ")]
    public void TheBuilderLayoutQuantizesAndAModelHoldingMatMulNBitsKeepsThem(string mode)
    {
        var gqa = BuilderLayoutTests.TinyLlamaGqa();
        var q = ModelQuantizer.Quantize(gqa, Options(mode));
        var f = Compare(gqa, q);
        Assert.True(f.PerplexityRise < 0.03, $"{mode}: +{f.PerplexityRise:P3}");
        if (mode != "AWQ") return;
        // Norms fused by the builder take AWQ's scales (SimplifiedLayerNormalization, SkipSimplifiedLayerNormalization).
        Assert.Contains(q.Report!.Notes, n => n.Contains("folded into what produces them", StringComparison.Ordinal));
        // Quantizing it again (weight-only) leaves its MatMulNBits as they are, says so, and quantizes what is still float.
        var partly = ModelQuantizer.Quantize(gqa, Options("RTN") with { ExcludeNodes = ["*head*"] });
        var again = ModelQuantizer.Quantize(partly, Options("RTN"));
        Assert.Contains(again.Report!.Notes, n => n.Contains("already hold block-quantized weights", StringComparison.Ordinal));
        Assert.Single(again.Report.Entries, e => e.Action == "Quantized");
        Assert.Equal("QuantizationNothingToQuantize", Assert.Throws<Native.EngineException>(() => ModelQuantizer.Quantize(again, Options("RTN"))).ErrorId);
        Assert.Equal("ModelAlreadyQuantized", Assert.Throws<Native.EngineException>(() => ModelQuantizer.Quantize(again, Options("Dynamic"))).ErrorId);
    }

    [SharedFact]
    public void GptqInSegmentsMatchesOneSession()
    {
        var kv = ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx"));
        var whole = ModelQuantizer.Quantize(kv, Options("AWQ,GPTQ"));
        long saved = ActivationProbe.SegmentBytes;
        try
        {
            ActivationProbe.SegmentBytes = 256 << 10; // a few layers per segment
            Assert.True(ActivationProbe.NeedsSegments(kv));
            var segmented = ModelQuantizer.Quantize(kv, Options("AWQ,GPTQ"));
            var f = ModelComparer.Compare(whole, segmented, new InputSource { Data = Test, BatchSize = 8 }).Single();
            Assert.True(f.Cosine > 0.9999, $"cosine {f.Cosine}");
            Assert.Equal(whole.Report!.Metrics["NodesQuantized"], segmented.Report!.Metrics["NodesQuantized"]);
        }
        finally { ActivationProbe.SegmentBytes = saved; }
    }
}
