using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Engine.Tests.Quantization;

/// <summary>AWQ (scales folded exactly, lower layer errors than RTN, combined with GPTQ) and the weight-only accuracy budget.</summary>
public class AwqAndBudgetTests
{
    static DataSet Rows(DataSet data, int start, int count) => new(data.Source, data.Arrays.Select(a => a.Slice(start, count)).ToList());

    static double Increase(OnnxModel reference, OnnxModel q, DataSet test) =>
        ModelComparer.Compare(reference, q, new InputSource { Data = test, BatchSize = 32 }).Single().PerplexityRise!.Value * 100; // percent

    [SharedFact]
    public void AwqFoldsItsScalesExactlyAndBeatsRoundToNearestOnTinyLm()
    {
        var model = ModelIO.Load(SharedFiles.Model("tiny_lm.onnx"));
        var calibration = DataSet.Load(SharedFiles.Data("tiny_lm_calib.npz"));
        var test = Rows(DataSet.Load(SharedFiles.Data("tiny_lm_test.npz")), 0, 64);
        OnnxModel Quantize(WeightOnlyAlgorithm? a, int bits) => ModelQuantizer.Quantize(model, new QuantizationOptions
        {
            Mode = QuantizationMode.WeightOnly, Bits = bits, BlockSize = 128, Algorithm = a, CalibrationData = calibration,
        });
        // At 8 bits the rounding is negligible: what is left is the scaling, which must be exact in float.
        var awq8 = Quantize(new AwqAlgorithm(), 8);
        Assert.InRange(Increase(model, awq8, test), -0.05, 0.05);
        Assert.Contains(awq8.Report!.Notes, n => n.Contains("folded into what produces them", StringComparison.Ordinal));
        var rtn = Quantize(null, 4);
        var awq = Quantize(new AwqAlgorithm(), 4);
        Assert.Contains(awq.Proto.Graph.Node, n => n.OpType == "Mul" && n.Name.EndsWith("_awq_mul", StringComparison.Ordinal)); // GELU before down: an inserted Mul
        Assert.True(awq.Report!.Metrics["ReconstructionErrorMean"] < 0.9 * rtn.Report!.Metrics["ReconstructionErrorMean"]);
        double rtnIncrease = Increase(model, rtn, test), awqIncrease = Increase(model, awq, test);
        Assert.True(awqIncrease < rtnIncrease, $"AWQ +{awqIncrease:F3} % vs RTN +{rtnIncrease:F3} %");
        var both = Quantize(WeightOnlyAlgorithms.Create(["AWQ", "GPTQ"]), 4);
        Assert.Equal("AWQ+GPTQ", both.History[^1].Parameters["Algorithm"]);
        Assert.True(Increase(model, both, test) < awqIncrease);
    }

    [Fact]
    public void AlgorithmCombinationsAreAScalingAlgorithmThenOneThatChoosesCodes()
    {
        Assert.IsType<HqqAlgorithm>(Assert.IsType<AwqAlgorithm>(WeightOnlyAlgorithms.Create(["awq", "hqq"])).Codes);
        foreach (var bad in new[] { new[] { "GPTQ", "AWQ" }, ["RTN", "HQQ"], ["AWQ", "AWQ"], ["AWQ", "GPTQ", "RTN"] })
            Assert.Equal("QuantizationAlgorithmCombinationInvalid", Assert.Throws<EngineException>(() => WeightOnlyAlgorithms.Create(bad)).ErrorId);
        Assert.Equal("QuantizationAlgorithmUnknown", Assert.Throws<EngineException>(() => WeightOnlyAlgorithms.Create(["SmoothQuant"])).ErrorId);
        Assert.Equal(["RTN", "HQQ", "GPTQ", "AWQ"], WeightOnlyAlgorithms.Names);
        var mlp = TestModels.Mlp();
        Assert.Equal("QuantizationCalibrationDataMissing", Assert.Throws<EngineException>(() =>
            ModelQuantizer.Quantize(mlp, new QuantizationOptions { Mode = QuantizationMode.WeightOnly, Algorithm = new AwqAlgorithm() })).ErrorId);
    }

    [SharedFact]
    public void PerplexityBudgetIsMetOnValidationDataWithTheCandidatesReported()
    {
        var model = ModelIO.Load(SharedFiles.Model("tiny_llama.onnx"));
        var calibration = Rows(DataSet.Load(SharedFiles.Data("tiny_lm_calib.npz")), 0, 32);
        var all = DataSet.Load(SharedFiles.Data("tiny_lm_test.npz"));
        var validation = Rows(all, 0, 32);
        var q = ModelQuantizer.Quantize(model, new QuantizationOptions
        {
            Mode = QuantizationMode.WeightOnly, Bits = 4, BlockSize = 128, CalibrationData = calibration,
            Budget = QualityBudget.MaxPerplexityRise(0.003), ValidationData = validation,
        });
        var m = q.Report!.Metrics;
        Assert.True(m["ValidationFigure"] <= 0.003, $"validation +{m["ValidationFigure"]:P3}");
        Assert.Equal(m["ValidationFigure"] * 100, Increase(model, q, validation), 3); // the figure is what the written model does
        // 29 layers with one quantized choice each: 29 sensitivities, then a few whole candidates.
        Assert.InRange(m["BudgetEvaluations"], 30, 29 + BudgetSearch.Rounds + 29);
        var candidates = q.Report.Entries.Where(e => e.Action == "Candidate").ToList();
        Assert.Contains(candidates, c => c.Detail.Contains("chosen", StringComparison.Ordinal) && c.Detail.Contains("Pareto", StringComparison.Ordinal));
        Assert.Contains(q.Report.Notes, n => n.Contains("optimistic", StringComparison.Ordinal));
        var layers = q.Report.Entries.Where(e => e.Action is "Quantized" or "Kept" && e.Bytes is not null).ToList();
        Assert.Equal(29, layers.Count);
        Assert.Contains(layers, l => l.Action == "Quantized");
        Assert.All(layers, l => Assert.Contains("chosen by -MaxPerplexityRise 0.003", l.Detail));
    }

    [Fact]
    public void BudgetsRefuseMissingValidationDataUnlabelledDataAndBudgetsNoLayerFits()
    {
        var mlp = TestModels.Mlp(inputs: 16, hidden: 32, classes: 4);
        var features = new NamedArray("features", [16, 16], TestModels.RandomWeights(new Random(9), 256, 1f));
        var labelled = new DataSet("labelled", [features, new NamedArray("y", [16], Enumerable.Range(0, 16).Select(i => (long)(i % 4)).ToArray())]);
        var unlabelled = new DataSet("unlabelled", [features]);
        QuantizationOptions Budget(QualityBudget b, DataSet? v) => new() { Mode = QuantizationMode.WeightOnly, Budget = b, ValidationData = v };
        Assert.Equal("QuantizationValidationDataMissing", Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(mlp, Budget(QualityBudget.MinCosine(0.99), null))).ErrorId);
        Assert.Equal("QuantizationValidationLabelsMissing", Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(mlp, Budget(QualityBudget.MaxAccuracyDrop(0.01), unlabelled))).ErrorId);
        Assert.Equal("QuantizationBudgetNotMeasurable", Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(mlp, Budget(QualityBudget.MaxPerplexityRise(0.01), labelled))).ErrorId);
        Assert.Equal("QuantizationBudgetInvalid", Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(mlp, Budget(QualityBudget.MaxAccuracyDrop(1.01), labelled))).ErrorId);
        Assert.Equal("QuantizationParameterNotApplicable", Assert.Throws<EngineException>(() =>
            ModelQuantizer.Quantize(mlp, Budget(QualityBudget.MinCosine(0.9), unlabelled) with { MixedPrecision = true })).ErrorId);
        // A cosine of exactly 1 needs every layer float: refused, not returned unchanged as if compressed.
        var e = Assert.Throws<EngineException>(() => ModelQuantizer.Quantize(mlp, Budget(QualityBudget.MinCosine(1.0), unlabelled)));
        Assert.Equal("QuantizationBudgetUnreachable", e.ErrorId);
        Assert.Contains("Nothing was written", e.Message);
        // A reachable accuracy budget on labelled data: met, and the result is smaller than float.
        var q = ModelQuantizer.Quantize(mlp, Budget(QualityBudget.MaxAccuracyDrop(0.1), labelled));
        Assert.True(q.Report!.Metrics["ValidationFigure"] <= 0.1);
        Assert.True(q.SerializedSize < mlp.SerializedSize);
    }
}
