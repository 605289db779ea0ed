using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Runtime;
using Xunit.Abstractions;
using static ModelCompression.Engine.Tests.Pruning.PruningTestHelpers;

namespace ModelCompression.Engine.Tests.Pruning;

/// <summary>Heads, hidden size and depth of transformers: built in code (every attention style) and the shared tiny_bert and tiny_lm.</summary>
public class TransformerPruningTests(ITestOutputHelper output)
{
    void Print(OnnxModel m)
    {
        foreach (var n in m.Report!.Notes) output.WriteLine(n);
        foreach (var e in m.Report.Entries) output.WriteLine($"  {e.Target} [{e.OpType}] {e.Action}: {(e.Detail.Length > 240 ? e.Detail[..240] + "..." : e.Detail)}");
    }

    public static TheoryData<AttentionStyle, bool> Styles() => new()
    {
        { AttentionStyle.Separate, true }, { AttentionStyle.Separate, false }, { AttentionStyle.Fused, true },
        { AttentionStyle.ContribAttention, false }, { AttentionStyle.ContribMultiHead, false },
    };

    [Theory]
    [MemberData(nameof(Styles))]
    public void HalfOfEveryPartGoesAndTheModelKeepsItsSignature(AttentionStyle style, bool computedShapes)
    {
        var model = TransformerModels.Build(new TransformerSpec { Attention = style, ComputedShapes = computedShapes });
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0 });
        Print(pruned);
        var m = pruned.Report!.Metrics;
        Assert.Equal((8, 4), ((int)m["HeadsBefore"], (int)m["HeadsAfter"]));       // 2 blocks x 4 heads
        Assert.Equal((16, 8), ((int)m["HiddenBefore"], (int)m["HiddenAfter"]));
        Assert.Equal((64, 32), ((int)m["FfnBefore"], (int)m["FfnAfter"]));
        Assert.Equal("/head/MatMul", Assert.Single(pruned.Report.Entries, e => e.Action == "Skipped").Target);   // it writes the logits
        Assert.Equal([32L, 8], Tensor(pruned, "emb.weight").Dims);
        Assert.Equal([1L, 64, 32], OutputShape(pruned, 16)[..1].Concat(OutputShape(pruned, 64)[1..]).ToArray());
        Assert.Equal(model.Proto.Graph.Input.Select(i => i.ToString()), pruned.Proto.Graph.Input.Select(i => i.ToString()));
        Assert.Equal(model.Proto.Graph.Output.Select(o => o.ToString()), pruned.Proto.Graph.Output.Select(o => o.ToString()));
        // Everything but the vocabulary, the 64x64 causal mask and some biases shrinks by a half or a quarter.
        Assert.True(pruned.Report.Metrics["ParametersAfter"] < 0.6 * pruned.Report.Metrics["ParametersBefore"], $"parameters {pruned.Report.Metrics["ParametersAfter"]}");
        if (style is AttentionStyle.ContribAttention or AttentionStyle.ContribMultiHead)
            Assert.All(pruned.Proto.Graph.Node.Where(n => n.Domain == "com.microsoft"), n => Assert.Equal(2, GraphIndex.IntAttr(n, "num_heads", 0)));
    }

    [Theory]
    [MemberData(nameof(Styles))]
    public void DeadHeadsAndNeuronsAreRemovedWithoutChangingTheOutputs(AttentionStyle style, bool computedShapes)
    {
        // Heads 1 and 3 of every block read nothing (zero Q/K/V columns) and write nothing (zero output-projection
        // rows); half the FFN neurons are zero. Removing exactly those must leave every output as it was.
        var spec = new TransformerSpec { Attention = style, ComputedShapes = computedShapes };
        var model = TransformerModels.Build(spec);
        int d = spec.Hidden, dh = d / spec.Heads;
        var deadHeads = new[] { 1, 3 };
        var headCols = deadHeads.SelectMany(h => Enumerable.Range(h * dh, dh)).ToArray();
        var deadNeurons = Enumerable.Range(0, spec.Ffn).Where(i => i % 2 == 1).ToArray();
        var dead = Edit(model, (name, dims, v) =>
        {
            if (name.EndsWith(".o.weight")) ZeroRows(v, dims, headCols);
            else if (name.EndsWith(".in_proj_weight") || name.EndsWith(".qkv.weight")) ZeroColumns(v, dims, [.. headCols, .. headCols.Select(c => c + d), .. headCols.Select(c => c + 2 * d)]);
            else if (name.EndsWith(".in_proj_bias") || name.EndsWith(".qkv.bias")) foreach (int c in headCols) v[c] = v[c + d] = v[c + 2 * d] = 0;
            else if (name.EndsWith(".q.weight") || name.EndsWith(".k.weight") || name.EndsWith(".v.weight")) ZeroColumns(v, dims, headCols);
            else if (name.EndsWith(".q.bias") || name.EndsWith(".k.bias") || name.EndsWith(".v.bias")) foreach (int c in headCols) v[c] = 0;
            else if (name.EndsWith(".up.weight")) ZeroColumns(v, dims, deadNeurons);
            else if (name.EndsWith(".up.bias")) foreach (int c in deadNeurons) v[c] = 0;
        });
        var pruned = ModelPruner.Prune(dead, new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0, Targets = [PrunedPart.Heads, PrunedPart.Ffn] });
        Print(pruned);
        Assert.Equal(4, (int)pruned.Report!.Metrics["HeadsAfter"]);
        var f = CompareSynthetic(dead, pruned, 12);
        output.WriteLine($"max abs error {f.MaxAbsError:E2}");
        Assert.True(f.MaxAbsError < 1e-4, $"max abs error {f.MaxAbsError}");
        Assert.True(pruned.SerializedSize < dead.SerializedSize);
    }

    [Fact]
    public void DeadHiddenChannelsWithoutNormalizationAreRemovedExactly()
    {
        // Without normalizations the residual stream's channels are independent: channels that no writer fills
        // (embedding, positions, output and down projections all zero there) carry zeros and go without a trace.
        var spec = new TransformerSpec { Norm = NormStyle.None };
        var model = TransformerModels.Build(spec);
        var deadChannels = Enumerable.Range(0, spec.Hidden).Where(i => i % 2 == 0).ToArray();
        var dead = Edit(model, (name, dims, v) =>
        {
            if (name is "emb.weight" || name.EndsWith(".o.weight") || name.EndsWith(".down.weight")) ZeroColumns(v, dims, deadChannels);
            else if (name is "pos") ZeroColumns(v, dims, deadChannels);
            else if (name.EndsWith(".o.bias") || name.EndsWith(".down.bias")) foreach (int c in deadChannels) v[c] = 0;
        });
        var pruned = ModelPruner.Prune(dead, new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0, Targets = [PrunedPart.Hidden] });
        Print(pruned);
        Assert.Equal(8, (int)pruned.Report!.Metrics["HiddenAfter"]);
        Assert.Equal([32L, 8], Tensor(pruned, "emb.weight").Dims);
        Assert.Equal([1L, 64, 8], Tensor(pruned, "pos").Dims);
        Assert.Equal([8L, 32], Tensor(pruned, "head.weight").Dims);
        var f = CompareSynthetic(dead, pruned, 12);
        Assert.True(f.MaxAbsError < 1e-4, $"max abs error {f.MaxAbsError}");
    }

    [Theory]
    [InlineData(NormStyle.Fused, false)]
    [InlineData(NormStyle.Decomposed, false)]
    [InlineData(NormStyle.Fused, true)]
    public void HiddenChannelsFollowNormalizationsAndTheReportSaysTheyAreNotExact(NormStyle norm, bool postNorm)
    {
        var model = TransformerModels.Build(new TransformerSpec { Norm = norm, PostNorm = postNorm });
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.25, Structured = true, MinElements = 0, Targets = [PrunedPart.Hidden] });
        Print(pruned);
        Assert.Equal(12, (int)pruned.Report!.Metrics["HiddenAfter"]);
        Assert.Contains(pruned.Report.Notes, n => n.StartsWith("Not exact", StringComparison.Ordinal) && n.Contains(norm == NormStyle.Fused ? "LayerNormalization" : "ReduceMean"));
        Assert.Contains(pruned.Report.Entries, e => e.Action == "Pruned" && e.Detail.Contains("not exact for the kept channels"));
        var f = CompareSynthetic(model, pruned, 12);
        output.WriteLine($"cosine after removing a quarter of the hidden size (no fine-tuning): {f.Cosine:F3}");
        Assert.True(f.Cosine > 0.3, $"cosine {f.Cosine}");
    }

    /// <summary>An RMS normalization has no bias input: its refit is a scale alone, fitted through the origin, and no bias is added.</summary>
    [Fact]
    public void RmsNormalizationsAreRefittedWithAScaleAlone()
    {
        var model = TransformerModels.Build(new TransformerSpec { Norm = NormStyle.Rms });
        var rng = new Random(3);
        var tokens = Enumerable.Range(0, 16 * 32).Select(_ => (long)rng.Next(32)).ToArray();
        var data = new DataSet("tokens", [new NamedArray("input_ids", [16, 32], tokens)]);
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.25, Structured = true, MinElements = 0, Targets = [PrunedPart.Hidden], Criterion = PruningCriterion.Activation, CalibrationData = data });
        Print(pruned);
        var norms = pruned.Proto.Graph.Node.Where(n => n.OpType == "SimplifiedLayerNormalization").ToList();
        Assert.Equal(5, norms.Count);
        Assert.All(norms, n => Assert.Equal(2, n.Input.Count));
        Assert.All(norms, n => Assert.EndsWith(".refit_scale", n.Input[1], StringComparison.Ordinal));
        var f = CompareSynthetic(model, pruned, 12);
        output.WriteLine($"cosine after removing a quarter of the hidden size, RMS norms refitted: {f.Cosine:F3}");
        Assert.True(f.Cosine > 0.5, $"cosine {f.Cosine}");
    }

    [Fact]
    public void RateZeroReturnsTheGraphAsItCame()
    {
        var model = TransformerModels.Build(new TransformerSpec { Attention = AttentionStyle.Fused });
        var same = ModelPruner.Prune(model, new PruningOptions { Rate = 0, Structured = true, MinElements = 0 });
        Assert.True(same.Proto.Graph.Equals(model.Proto.Graph), "the graph changed");
        Assert.Contains(same.Report!.Entries, e => e.Action == "Kept" && e.Detail.StartsWith("Heads: kept 4 of 4 heads; rate 0", StringComparison.Ordinal));
        // Parts left out by -Target are kept and say so.
        var ffn = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0, Targets = [PrunedPart.Ffn] });
        Assert.Contains(ffn.Report!.Entries, e => e.Action == "Kept" && e.Detail.Contains("-Target leaves Heads out"));
        Assert.Equal(16, (int)ffn.Report.Metrics["HiddenAfter"]);
    }

    [Fact]
    public void PerPartRatesOverrideTheRate()
    {
        var model = TransformerModels.Build(new TransformerSpec());
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, HeadRate = 0.25, HiddenRate = 0, Structured = true, MinElements = 0 });
        var m = pruned.Report!.Metrics;
        Assert.Equal((6, 16, 32), ((int)m["HeadsAfter"], (int)m["HiddenAfter"], (int)m["FfnAfter"]));
        var onlyHeads = ModelPruner.Prune(model, new PruningOptions { HeadRate = 0.5, Structured = true, MinElements = 0 });
        Assert.Equal((4, 16, 64), ((int)onlyHeads.Report!.Metrics["HeadsAfter"], (int)onlyHeads.Report.Metrics["HiddenAfter"], (int)onlyHeads.Report.Metrics["FfnAfter"]));
    }

    [Fact]
    public void ActivationScoresFromCalibrationDataPickTheHeadsThatMatter()
    {
        // Heads 0 and 2 write almost nothing (output-projection rows scaled down 1000x) although their Q/K/V weights
        // are as large as the others': magnitude cannot see it, activations at the output projection can.
        var spec = new TransformerSpec();
        var model = TransformerModels.Build(spec);
        int dh = spec.Hidden / spec.Heads;
        var quiet = Edit(model, (name, dims, v) =>
        {
            if (!name.EndsWith(".o.weight")) return;
            foreach (int h in new[] { 0, 2 }) for (int r = h * dh; r < (h + 1) * dh; r++) for (int c = 0; c < dims[1]; c++) v[r * dims[1] + c] *= 1e-3f;
        });
        var rng = new Random(3);
        var data = new DataSet("calibration", [new NamedArray("input_ids", [16, 12], Enumerable.Range(0, 16 * 12).Select(_ => (long)rng.Next(spec.Vocab)).ToArray())]);
        var pruned = ModelPruner.Prune(quiet, new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0, Targets = [PrunedPart.Heads], Criterion = PruningCriterion.Activation, CalibrationData = data });
        Print(pruned);
        var f = CompareSynthetic(quiet, pruned, 12);
        output.WriteLine($"cosine {f.Cosine:F5}, max abs error {f.MaxAbsError:E2}");
        Assert.True(f.Cosine > 0.9999, $"cosine {f.Cosine}");
        Assert.Equal([8L, 16], Tensor(pruned, "blocks.0.o.weight").Dims);
    }

    [Fact]
    public void RemovingABlockByNameMakesItsOutputItsInput()
    {
        // Block 1 adds nothing (zero output and down projections): removing it must not change the outputs.
        var model = TransformerModels.Build(new TransformerSpec { Blocks = 3 });
        var idle = Edit(model, (name, dims, v) =>
        {
            if (name.StartsWith("blocks.1.o.", StringComparison.Ordinal) || name.StartsWith("blocks.1.down.", StringComparison.Ordinal)) Array.Clear(v);
        });
        var pruned = ModelPruner.Prune(idle, new PruningOptions { RemoveBlockNames = ["blocks.1"] });
        Print(pruned);
        Assert.Equal(["blocks.0", "blocks.1", "blocks.2"], pruned.Report!.Entries.Where(e => e.OpType == "Block").Select(e => e.Target));
        Assert.Equal(1, (int)pruned.Report.Metrics["BlocksRemoved"]);
        Assert.DoesNotContain(pruned.Proto.Graph.Node, n => n.Name.StartsWith("/blocks.1/", StringComparison.Ordinal));
        Assert.DoesNotContain(pruned.Proto.Graph.Initializer, t => t.Name.StartsWith("blocks.1.", StringComparison.Ordinal));
        Assert.Equal("Depth", pruned.History[^1].Parameters["Method"]);
        var f = CompareSynthetic(idle, pruned, 12);
        Assert.True(f.MaxAbsError < 1e-5, $"max abs error {f.MaxAbsError}");
    }

    [Fact]
    public void RemoveBlocksPicksTheBlocksThatChangeTheirInputLeastThenPrunesTheWidth()
    {
        var model = TransformerModels.Build(new TransformerSpec { Blocks = 3 });
        var idle = Edit(model, (name, dims, v) =>
        {
            if (name.StartsWith("blocks.2.o.", StringComparison.Ordinal) || name.StartsWith("blocks.2.down.", StringComparison.Ordinal)) Array.Clear(v);
        });
        var rng = new Random(4);
        var data = new DataSet("calibration", [new NamedArray("input_ids", [8, 12], Enumerable.Range(0, 96).Select(_ => (long)rng.Next(32)).ToArray())]);
        var pruned = ModelPruner.Prune(idle, new PruningOptions { RemoveBlocks = 1, CalibrationData = data, Structured = true, Rate = 0.5, MinElements = 0 });
        Print(pruned);
        var removed = pruned.Report!.Entries.Single(e => e.Action == "Removed");
        Assert.Equal("blocks.2", removed.Target);
        Assert.Contains("cosine between its input and output 1.0000", removed.Detail);
        Assert.Equal(8, (int)pruned.Report.Metrics["HeadsBefore"]);   // the heads of the two blocks left
        Assert.Equal([1L, 64, 32], OutputShape(pruned));
    }

    [Fact]
    public void DepthErrorsNameTheBlocks()
    {
        var model = TransformerModels.Build(new TransformerSpec());
        var e = Assert.Throws<EngineException>(() => ModelPruner.Prune(model, new PruningOptions { RemoveBlockNames = ["block.7"] }));
        Assert.Equal("PruningBlockNotFound", e.ErrorId);
        Assert.Contains("blocks.0, blocks.1", e.Message);
        Assert.Equal("PruningTooManyBlocks", Assert.Throws<EngineException>(() => ModelPruner.Prune(model, new PruningOptions { RemoveBlockNames = ["blocks.*"] })).ErrorId);
        var data = new DataSet("calibration", [new NamedArray("input_ids", [2, 4], new long[8])]);
        Assert.Equal("PruningTooManyBlocks", Assert.Throws<EngineException>(() => ModelPruner.Prune(model, new PruningOptions { RemoveBlocks = 2, CalibrationData = data })).ErrorId);
        Assert.Equal("PruningNoBlocks", Assert.Throws<EngineException>(() => ModelPruner.Prune(TestModels.Mlp(), new PruningOptions { RemoveBlockNames = ["x"] })).ErrorId);
    }

    [Fact]
    public void NewOptionsThatDoNotApplyAreRefused()
    {
        var data = new DataSet("d", [new NamedArray("input_ids", [1, 4], new long[4])]);
        (PruningOptions Options, string Id)[] cases =
        [
            (new() { Rate = 0.5, Targets = [PrunedPart.Heads] }, "PruningOptionConflict"),
            (new() { Rate = 0.5, HeadRate = 0.5 }, "PruningOptionConflict"),
            (new() { Structured = true, Targets = [PrunedPart.Ffn], HeadRate = 0.5 }, "PruningOptionConflict"),
            (new() { Structured = true, HiddenRate = 1.5 }, "PruningRateOutOfRange"),
            (new() { Structured = true }, "PruningRateRequired"),
            (new() { }, "PruningRateRequired"),
            (new() { RemoveBlocks = 0, CalibrationData = data }, "PruningRemoveBlocksInvalid"),
            (new() { RemoveBlocks = 1 }, "PruningCalibrationDataRequired"),
            (new() { RemoveBlocks = 1, RemoveBlockNames = ["a"], CalibrationData = data }, "PruningOptionConflict"),
            (new() { Rate = 0.5, RemoveBlockNames = ["a"] }, "PruningOptionConflict"),
            (new() { Pattern = new SparsityPattern(2, 4), RemoveBlockNames = ["a"] }, "PruningOptionConflict"),
            (new() { RemoveBlockNames = ["a"], Scope = PruningScope.Global }, "PruningOptionConflict"),
            (new() { RemoveBlockNames = ["a"], CalibrationData = data, Criterion = PruningCriterion.Activation }, "PruningOptionConflict"),
            (new() { RemoveBlockNames = ["a"], CalibrationData = data }, "PruningOptionConflict"),
        ];
        foreach (var (options, id) in cases)
            Assert.Equal(id, Assert.Throws<EngineException>(options.Validate).ErrorId);
    }

    [SharedFact]
    public void TinyLmAtHalfWidthIsBelowHalfTheFileAndStillALanguageModel()
    {
        var model = ModelIO.Load(SharedFiles.Model("tiny_lm.onnx"));
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true });
        Print(pruned);
        var m = pruned.Report!.Metrics;
        Assert.Equal((16, 8, 256, 128, 4096, 2048), ((int)m["HeadsBefore"], (int)m["HeadsAfter"], (int)m["HiddenBefore"], (int)m["HiddenAfter"], (int)m["FfnBefore"], (int)m["FfnAfter"]));
        double ratio = (double)pruned.SerializedSize / model.SerializedSize;
        output.WriteLine($"size {model.SerializedSize:N0} -> {pruned.SerializedSize:N0} ({ratio:F3}x)");
        Assert.True(ratio <= 0.5, $"size ratio {ratio}");
        Assert.Equal(OutputShape(model), OutputShape(pruned));
        double before = Perplexity(model, 32), after = Perplexity(pruned, 32);
        output.WriteLine($"perplexity on 32 test windows: {before:F2} -> {after:F2} (no distillation)");
        Assert.InRange(before, 3.5, 4.5);
        Assert.InRange(after, before, 256);
    }

    [SharedFact]
    public void CalibrationDataRefitsTheNormalizationsOverThePrunedHiddenSize()
    {
        // Half the hidden size, scored on 8 calibration windows; every LayerNormalization then gets a scale and bias
        // fitted to its original outputs. Without the refit these 16 test windows measured 26.6 (with it, 22.3).
        var model = ModelIO.Load(SharedFiles.Model("tiny_lm.onnx"));
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true, Targets = [PrunedPart.Hidden], Criterion = PruningCriterion.Activation, CalibrationData = Calibration(8) });
        Print(pruned);
        double after = Perplexity(pruned, 16);
        output.WriteLine($"perplexity on 16 test windows after removing half the hidden size: {after:F2}");
        var norms = pruned.Proto.Graph.Node.Where(n => n.OpType == "LayerNormalization").ToList();
        Assert.Equal(9, norms.Count);
        Assert.All(norms, n => Assert.EndsWith(".refit_scale", n.Input[1], StringComparison.Ordinal));
        Assert.Contains(pruned.Report!.Notes, n => n.StartsWith("9 normalization(s) over pruned channels got their scale and bias refitted", StringComparison.Ordinal));
        Assert.InRange(after, 4, 25);
    }

    [SharedFact]
    public void TinyBertAtHalfWidthKeepsItsOutputAndItsSharedWeights()
    {
        var model = ModelIO.Load(SharedFiles.Model("tiny_bert.onnx"));
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true });
        Print(pruned);
        double ratio = (double)pruned.SerializedSize / model.SerializedSize;
        output.WriteLine($"size {model.SerializedSize:N0} -> {pruned.SerializedSize:N0} ({ratio:F3}x)");
        Assert.True(ratio <= 0.55, $"size ratio {ratio}");
        Assert.Equal(OutputShape(model, 16), OutputShape(pruned, 16));
        Assert.DoesNotContain(pruned.Report!.Notes, n => n.Contains("split into"));    // the four layers still share their weights
        Assert.Equal(8, (int)pruned.Report.Metrics["HeadsAfter"]);     // 4 layers x 4 heads, tied: one decision for all
        var same = ModelPruner.Prune(model, new PruningOptions { Rate = 0, Structured = true });
        Assert.Equal(0, CompareSynthetic(model, same, 16).MaxAbsError);
    }

    [SharedFact]
    public void TinyLmLosesTheBlockThatChangesItsInputLeast()
    {
        var model = ModelIO.Load(SharedFiles.Model("tiny_lm.onnx"));
        var pruned = ModelPruner.Prune(model, new PruningOptions { RemoveBlocks = 1, CalibrationData = Calibration(16) });
        Print(pruned);
        Assert.Equal(4, pruned.Report!.Entries.Count(e => e.OpType == "Block"));
        Assert.Single(pruned.Report.Entries, e => e.Action == "Removed");
        double after = Perplexity(pruned, 16);
        output.WriteLine($"perplexity on 16 test windows without {pruned.Report.Entries.Single(e => e.Action == "Removed").Target}: {after:F2}");
        Assert.InRange(after, 3.5, 256);
    }

    /// <summary>The first windows of tiny_lm's calibration set.</summary>
    static DataSet Calibration(int rows)
    {
        var all = DataSet.Load(SharedFiles.Data("tiny_lm_calib.npz"));
        return new DataSet(all.Source, all.Arrays.Select(a => a.Slice(0, rows)).ToList());
    }

    /// <summary>exp(mean cross-entropy) of a byte-level language model on the first rows of tiny_lm_test.npz.</summary>
    internal static double Perplexity(OnnxModel model, int rows)
    {
        var data = DataSet.Load(SharedFiles.Data("tiny_lm_test.npz"));
        var x = data.Arrays.Single(a => a.Name == "x").Slice(0, rows).Rename("input_ids");
        var y = data.Arrays.Single(a => a.Name == "y").Slice(0, rows).AsInt64();
        using var session = new ModelSession(model);
        var logits = session.Run(new Dictionary<string, NamedArray> { ["input_ids"] = x })[0].AsFloat();
        int v = (int)(logits.Length / y.Length);
        double nll = 0;
        for (int i = 0; i < y.Length; i++)
        {
            var row = logits.AsSpan(i * v, v);
            float max = System.Numerics.Tensors.TensorPrimitives.Max(row);
            double sum = 0;
            foreach (float l in row) sum += Math.Exp(l - max);
            nll += Math.Log(sum) + max - row[(int)y[i]];
        }
        return Math.Exp(nll / y.Length);
    }

    /// <summary>A copy of the model whose float initializers <paramref name="edit"/> may change in place (name, dims, values).</summary>
    internal static OnnxModel Edit(OnnxModel model, Action<string, long[], float[]> edit)
    {
        var proto = model.Proto.Clone();
        var inits = proto.Graph.Initializer;
        for (int i = 0; i < inits.Count; i++)
        {
            if (inits[i].DataType != (int)TensorProto.Types.DataType.Float) continue;
            var v = TensorData.ToFloat(inits[i]);
            var dims = inits[i].Dims.ToArray();
            edit(inits[i].Name, dims, v);
            inits[i] = TensorData.FromFloat(inits[i].Name, dims, v);
        }
        return new OnnxModel(proto, model.SourcePath, []);
    }

    /// <summary>Zeroes columns (last axis) of a weight.</summary>
    internal static void ZeroColumns(float[] v, long[] dims, IEnumerable<int> columns)
    {
        int cols = (int)dims[^1];
        foreach (int c in columns) for (int r = 0; r < v.Length / cols; r++) v[r * cols + c] = 0;
    }

    /// <summary>Zeroes rows (first axis) of a 2-D weight.</summary>
    internal static void ZeroRows(float[] v, long[] dims, IEnumerable<int> rows)
    {
        int cols = (int)dims[1];
        foreach (int r in rows) Array.Clear(v, r * cols, cols);
    }
}
