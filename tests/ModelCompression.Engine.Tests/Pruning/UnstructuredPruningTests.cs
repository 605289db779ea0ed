using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Pruning;
using Xunit.Abstractions;
using static ModelCompression.Engine.Tests.Pruning.PruningTestHelpers;

namespace ModelCompression.Engine.Tests.Pruning;

public class UnstructuredPruningTests(ITestOutputHelper output)
{
    [Fact]
    public void PerLayerMagnitudeZeroesTheSmallestHalfOfEachLayer()
    {
        var model = TestModels.Mlp(inputs: 8, hidden: 16, classes: 3);
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, MinElements = 0 });
        foreach (var name in new[] { "fc0.weight", "fc1.weight", "fc2.weight" })
        {
            var before = Floats(model, name);
            var after = Floats(pruned, name);
            Assert.Equal(Math.Round(before.Length * 0.5, MidpointRounding.AwayFromZero), after.Count(v => v == 0));
            float largestRemoved = before.Where((v, i) => after[i] == 0).Max(Math.Abs);
            float smallestKept = before.Where((v, i) => after[i] != 0).Min(Math.Abs);
            Assert.True(largestRemoved <= smallestKept);
            Assert.All(after.Where(v => v != 0), v => Assert.Contains(v, before));
        }
        Assert.Equal(Floats(model, "fc0.bias"), Floats(pruned, "fc0.bias"));
        Assert.Equal(0, Floats(model, "fc0.weight").Count(v => v == 0));
        Assert.Equal("Pruning", pruned.History[^1].Name);
        Assert.Equal(3, OutputShape(pruned)[^1]);
    }

    /// <summary>The report's non-zero counts, kept as the weights are rewritten, agree with a count over the result, zeros already there included.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void NonZeroCountsInTheReportMatchTheWeights(bool pattern)
    {
        var model = ModelPruner.Prune(TestModels.Mlp(inputs: 8, hidden: 16, classes: 3), new PruningOptions { Rate = 0.3, MinElements = 0, OpTypes = ["MatMul"], ExcludeNodes = ["fc2*"] });
        var options = pattern ? new PruningOptions { Pattern = new SparsityPattern(2, 4), MinElements = 0 } : new PruningOptions { Rate = 0.6, Scope = PruningScope.Global, MinElements = 0 };
        var pruned = ModelPruner.Prune(model, options);
        Assert.Equal(ModelPruner.NonZeroWeights(model.Proto.Graph), pruned.Report!.Metrics["NonZeroParametersBefore"]);
        Assert.Equal(ModelPruner.NonZeroWeights(pruned.Proto.Graph), pruned.Report.Metrics["NonZeroParametersAfter"]);
        Assert.True(pruned.Report.Metrics["NonZeroParametersAfter"] < pruned.Report.Metrics["NonZeroParametersBefore"]);
    }

    [Fact]
    public void MinElementsOpTypeAndExcludeNodeSelectTheLayers()
    {
        var model = TestModels.Mlp(inputs: 8, hidden: 16, classes: 3);
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, MinElements = 200, ExcludeNodes = ["fc0*"] });
        Assert.DoesNotContain(0f, Floats(pruned, "fc0.weight"));   // excluded
        Assert.Contains(0f, Floats(pruned, "fc1.weight"));         // 256 elements
        Assert.DoesNotContain(0f, Floats(pruned, "fc2.weight"));   // 48 < 200
        Assert.Contains(pruned.Report!.Entries, e => e.Target == "fc0.matmul" && e.Action == "Skipped" && e.Detail.Contains("ExcludeNode"));
        Assert.Contains(pruned.Report!.Entries, e => e.Target == "fc2.matmul" && e.Detail.Contains("MinElements"));

        var conv = TestModels.ConvNet();
        var onlyGemm = ModelPruner.Prune(conv, new PruningOptions { Rate = 0.5, MinElements = 0, OpTypes = ["gemm"] });
        Assert.DoesNotContain(0f, Floats(onlyGemm, "conv1.weight"));
        Assert.Equal(16, Floats(onlyGemm, "fc.weight").Count(v => v == 0));
    }

    [Fact]
    public void RandomCriterionIsReproducibleWithItsSeed()
    {
        var model = TestModels.Mlp(hidden: 32);
        var a = ModelPruner.Prune(model, new PruningOptions { Rate = 0.3, Criterion = PruningCriterion.Random, Seed = 7, MinElements = 0 });
        var b = ModelPruner.Prune(model, new PruningOptions { Rate = 0.3, Criterion = PruningCriterion.Random, Seed = 7, MinElements = 0 });
        var c = ModelPruner.Prune(model, new PruningOptions { Rate = 0.3, Criterion = PruningCriterion.Random, Seed = 8, MinElements = 0 });
        Assert.Equal(Floats(a, "fc1.weight"), Floats(b, "fc1.weight"));
        Assert.NotEqual(Floats(a, "fc1.weight"), Floats(c, "fc1.weight"));
        Assert.Equal(Math.Round(32 * 32 * 0.3), Floats(a, "fc1.weight").Count(v => v == 0));
        // Random is not magnitude: some removed weights are larger than some kept ones.
        var before = Floats(model, "fc1.weight");
        var after = Floats(a, "fc1.weight");
        Assert.True(before.Where((v, i) => after[i] == 0).Max(Math.Abs) > before.Where((v, i) => after[i] != 0).Min(Math.Abs));
    }

    [SharedTheory]
    [InlineData("wine")]
    [InlineData("breast_cancer")]
    public void GlobalMagnitudeHalfKeepsTestAccuracyAndHitsTheRate(string name)
    {
        var model = ModelIO.Load(SharedFiles.Model(name + "_mlp.onnx"));
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Scope = PruningScope.Global });
        double sparsity = pruned.Report!.Metrics["Sparsity"];
        var f = Compare(model, pruned, name + "_test.npz");
        output.WriteLine($"{name}: sparsity {sparsity:P2}, accuracy {f.ReferenceAccuracy:P2} -> {f.DifferenceAccuracy:P2}, cosine {f.Cosine:F4}");
        foreach (var e in pruned.Report.Entries) output.WriteLine($"  {e.Target} {e.Action}: {e.Detail}");
        Assert.InRange(sparsity, 0.495, 0.505);
        Assert.True(f.DifferenceAccuracy >= f.ReferenceAccuracy - 0.01, $"accuracy {f.ReferenceAccuracy} -> {f.DifferenceAccuracy}");
        // Layers are not pruned uniformly under one global threshold, but every selected layer is pruned.
        Assert.All(pruned.Report.Entries.Where(e => e.Action == "Pruned"), e => Assert.DoesNotContain("sparsity 0.00", e.Detail));

        // With -MinElements 0 every Gemm weight, the output layer included, is in the ranking: 50% of all of them.
        var all = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Scope = PruningScope.Global, MinElements = 0 });
        var weights = all.Proto.Graph.Initializer.Where(t => t.Dims.Count == 2).ToList();
        double overall = (double)weights.Sum(t => TensorData.CountZeros(t)) / weights.Sum(t => TensorData.ElementCount(t));
        var fa = Compare(model, all, name + "_test.npz");
        output.WriteLine($"{name} (all layers): sparsity {overall:P2}, accuracy {fa.ReferenceAccuracy:P2} -> {fa.DifferenceAccuracy:P2}");
        Assert.InRange(overall, 0.495, 0.505);
        Assert.True(fa.DifferenceAccuracy >= fa.ReferenceAccuracy - 0.01, $"accuracy {fa.ReferenceAccuracy} -> {fa.DifferenceAccuracy}");
    }

    [SharedTheory]
    [InlineData("wine")]
    [InlineData("breast_cancer")]
    public void TwoFourPatternHoldsInEveryGroup(string name)
    {
        var model = ModelIO.Load(SharedFiles.Model(name + "_mlp.onnx"));
        var pruned = ModelPruner.Prune(model, new PruningOptions { Pattern = SparsityPattern.Parse("2:4") });
        // Gemm weights are [out, in] (transB=1): groups of 4 consecutive inputs within each row.
        int checkedGroups = 0;
        foreach (var t in pruned.Proto.Graph.Initializer.Where(t => t.Dims.Count == 2 && t.Dims[0] * t.Dims[1] >= PruningOptions.DefaultMinElements))
        {
            var w = Floats(pruned, t.Name);
            int rows = (int)t.Dims[0], cols = (int)t.Dims[1];
            for (int r = 0; r < rows; r++)
                for (int s = 0; s < cols; s += 4, checkedGroups++)
                    Assert.True(Enumerable.Range(s, Math.Min(4, cols - s)).Count(j => w[r * cols + j] != 0) <= 2, $"{t.Name} row {r} group {s}");
        }
        Assert.True(checkedGroups > 1000);
        var f = Compare(model, pruned, name + "_test.npz");
        output.WriteLine($"{name} 2:4: sparsity {pruned.Report!.Metrics["Sparsity"]:P2}, accuracy {f.ReferenceAccuracy:P2} -> {f.DifferenceAccuracy:P2}");
        Assert.InRange(pruned.Report.Metrics["Sparsity"], 0.49, 0.51);
        Assert.True(f.DifferenceAccuracy >= f.ReferenceAccuracy - 0.05);
    }

    [Fact]
    public void NmGroupsRunAlongTheInputDimensionOfMatMulAndConv()
    {
        var mlp = ModelPruner.Prune(TestModels.Mlp(inputs: 8, hidden: 16), new PruningOptions { Pattern = new SparsityPattern(1, 4), MinElements = 0 });
        var w = Floats(mlp, "fc1.weight"); // MatMul [K=16, N=16]: groups along K, i.e. down each column
        for (int n = 0; n < 16; n++)
            for (int k = 0; k < 16; k += 4)
                Assert.Equal(1, Enumerable.Range(k, 4).Count(i => w[i * 16 + n] != 0));

        var conv = ModelPruner.Prune(TestModels.ConvNet(), new PruningOptions { Pattern = new SparsityPattern(2, 4), MinElements = 0, OpTypes = ["Conv"] });
        var c = Floats(conv, "conv2.weight"); // [8, 8, 3, 3]: groups of 4 input channels at each kernel position
        for (int o = 0; o < 8; o++)
            for (int s = 0; s < 9; s++)
                for (int ci = 0; ci < 8; ci += 4)
                    Assert.Equal(2, Enumerable.Range(ci, 4).Count(i => c[o * 72 + i * 9 + s] != 0));
    }

    [SharedFact]
    public void ActivationCriterionUsesCalibrationActivations()
    {
        var model = ModelIO.Load(SharedFiles.Model("breast_cancer_mlp.onnx"));
        var data = DataSet.Load(SharedFiles.Data("breast_cancer_train.npz"));
        var wanda = ModelPruner.Prune(model, new PruningOptions { Rate = 0.7, Criterion = PruningCriterion.Activation, CalibrationData = data });
        var magnitude = ModelPruner.Prune(model, new PruningOptions { Rate = 0.7 });
        var fw = Compare(model, wanda, "breast_cancer_test.npz");
        var fm = Compare(model, magnitude, "breast_cancer_test.npz");
        output.WriteLine($"70% per layer: activation cosine {fw.Cosine:F4} acc {fw.DifferenceAccuracy:P2}; magnitude cosine {fm.Cosine:F4} acc {fm.DifferenceAccuracy:P2}");
        Assert.InRange(wanda.Report!.Metrics["Sparsity"], 0.695, 0.705);
        Assert.NotEqual(Floats(wanda, "fc2.weight").Select(v => v == 0), Floats(magnitude, "fc2.weight").Select(v => v == 0));
        Assert.True(fw.DifferenceAccuracy >= fw.ReferenceAccuracy - 0.05);
    }

    [SharedFact]
    public void ActivationBeatsMagnitudeOnTheTransformerAtHalfSparsity()
    {
        // tiny_bert (random weights): calibrate on 32 x 16 random token ids, compare on another.
        var model = ModelIO.Load(SharedFiles.Model("tiny_bert.onnx"));
        var rng = new Random(5);
        DataSet Tokens(string name) => new(name, [new NamedArray("input_ids", [32, 16], Enumerable.Range(0, 32 * 16).Select(_ => (long)rng.Next(5000)).ToArray())]);
        var calibration = Tokens("calibration");
        var evaluation = new Native.Data.InputSource { Data = Tokens("evaluation") };
        var wanda = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Criterion = PruningCriterion.Activation, CalibrationData = calibration });
        var magnitude = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5 });
        var fw = Native.Runtime.ModelComparer.Compare(model, wanda, evaluation).Single();
        var fm = Native.Runtime.ModelComparer.Compare(model, magnitude, evaluation).Single();
        output.WriteLine($"tiny_bert 50% per layer: activation cosine {fw.Cosine:F4} top-1 {fw.Top1Agreement:P1}; magnitude cosine {fm.Cosine:F4} top-1 {fm.Top1Agreement:P1}");
        Assert.True(fw.Cosine > fm.Cosine, $"activation {fw.Cosine} vs magnitude {fm.Cosine}");
    }

    [Fact]
    public void BadOptionsAreRefusedWithStableIds()
    {
        var model = TestModels.Mlp();
        void Refused(string id, PruningOptions o) => Assert.Equal(id, Assert.Throws<EngineException>(() => ModelPruner.Prune(model, o)).ErrorId);
        Refused("PruningRateOutOfRange", new PruningOptions { Rate = 1.0 });
        Refused("PruningRateOutOfRange", new PruningOptions { Rate = -0.1 });
        Refused("PruningRateRequired", new PruningOptions());
        Assert.Equal("PruningPatternInvalid", Assert.Throws<EngineException>(() => SparsityPattern.Parse("4:4")).ErrorId);
        Assert.Equal("PruningPatternInvalid", Assert.Throws<EngineException>(() => SparsityPattern.Parse("two:4")).ErrorId);
        Refused("PruningOptionConflict", new PruningOptions { Rate = 0.5, Pattern = new SparsityPattern(2, 4) });
        Refused("PruningOptionConflict", new PruningOptions { Rate = 0.5, Seed = 3 });
        Refused("PruningOptionConflict", new PruningOptions { Rate = 0.5, CalibrationData = new DataSet("x", [new NamedArray("features", [1, 8], new float[8])]) });
        Refused("PruningOptionConflict", new PruningOptions { Pattern = new SparsityPattern(2, 4), Scope = PruningScope.Global });
        Refused("PruningCalibrationDataRequired", new PruningOptions { Rate = 0.5, Criterion = PruningCriterion.Activation });
        Refused("PruningOpTypeUnsupported", new PruningOptions { Rate = 0.5, OpTypes = ["LSTM"] });
        Refused("PruningNothingToPrune", new PruningOptions { Rate = 0.5 }); // every weight is below the default MinElements
    }
}
