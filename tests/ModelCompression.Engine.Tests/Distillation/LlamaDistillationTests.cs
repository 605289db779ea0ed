using System.Diagnostics;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Distillation;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;
using Xunit.Abstractions;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Distillation;

/// <summary>
/// Distilling a Llama-style model in both of its layouts: tiny_llama.onnx (token ids in, logits out) and
/// tiny_llama_kv.onnx (Optimum's decoder-with-past: attention mask, positions and a key/value cache besides the ids).
/// Token windows feed the cache layout with a mask of ones, positions 0..n-1 and an empty cache, and only the logits
/// are distilled, so both layouts must train to the same student.
/// </summary>
public class LlamaDistillationTests(ITestOutputHelper output)
{
    static readonly Lazy<OnnxModel> Plain = new(() => ModelIO.Load(SharedFiles.Model("tiny_llama.onnx")));
    static readonly Lazy<OnnxModel> Cached = new(() => ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx")));

    static float[] Logits(OnnxModel model, DataSet data)
    {
        using var session = new ModelSession(model);
        return session.Run(ModelInputs.Bind(model, data))[0].AsFloat();
    }

    [SharedFact]
    public void BothLayoutsDistilToTheSameStudentAndLowerItsPerplexity()
    {
        var test = DataSet.Load(SharedFiles.Data("tiny_lm_test.npz"));
        var valid = new DataSet("tiny_lm_test", test.Arrays.Select(a => a.Slice(0, 8)).ToList());
        var windows = new DataSet("windows", [test.Arrays.Single(a => a.Name == "x").Slice(8, 4)]);
        // -Structured -Rate 0.5 on each layout: the same damaged student (half the hidden channels)
        var pruning = new PruningOptions { Structured = true, Rate = 0.5 };
        var plainStudent = ModelPruner.Prune(Plain.Value, pruning);
        var cachedStudent = ModelPruner.Prune(Cached.Value, pruning);
        var options = new DistillationOptions { SequenceLength = 64, BatchSize = 8, MaxSteps = 4, ValidationInterval = 4, Seed = 5 };
        using var tokens = TokenStream.Open(SharedFiles.Data("tiny_lm_train.npy"));
        var sw = Stopwatch.StartNew();
        // each teacher in the other layout: a model derives its own mask, positions and cache from the windows
        var a = Distiller.Distill(Cached.Value, plainStudent, tokens, valid, options);
        var b = Distiller.Distill(Plain.Value, cachedStudent, tokens, valid, options);
        output.WriteLine($"two runs of {options.MaxSteps} steps in {sw.Elapsed.TotalSeconds:F1} s");

        var before = Logits(plainStudent, windows);
        var la = Logits(a.Student, windows);
        var lb = Logits(b.Student, windows);
        double moved = before.Zip(la).Max(p => Math.Abs(p.First - p.Second));
        double apart = la.Zip(lb).Max(p => Math.Abs(p.First - p.Second));
        output.WriteLine($"logits moved by up to {moved:F3}; the two layouts' students differ by {apart:G3}");
        Assert.True(moved > 0.1, "training changed the student");
        Assert.True(apart <= 1e-4, $"max abs difference {apart}");

        // the cache student keeps its contract (mask, positions, cache in; logits and the grown cache out)
        Assert.Equal(Cached.Value.Proto.Graph.Input.Select(i => i.Name), b.Student.Proto.Graph.Input.Select(i => i.Name));
        Assert.Equal(Cached.Value.Proto.Graph.Output.Select(i => i.Name), b.Student.Proto.Graph.Output.Select(i => i.Name));
        var pruned = ModelComparer.Compare(Plain.Value, plainStudent, new InputSource { Data = valid })[0];
        var distilled = ModelComparer.Compare(Plain.Value, b.Student, new InputSource { Data = valid })[0];
        output.WriteLine($"perplexity: teacher {pruned.ReferencePerplexity:F3}, pruned {pruned.DifferencePerplexity:F3}, distilled {distilled.DifferencePerplexity:F3}");
        Assert.True(distilled.DifferencePerplexity < 0.8 * pruned.DifferencePerplexity, "perplexity falls");
        // the engine's own figures are what ONNX Runtime gets from the exported students
        Assert.Equal(distilled.DifferencePerplexity!.Value, b.Epochs.Single().ValidationPerplexity!.Value, 3);
        Assert.Equal(a.Epochs.Single().ValidationPerplexity!.Value, b.Epochs.Single().ValidationPerplexity!.Value, 4);
        Assert.Equal(pruned.ReferencePerplexity!.Value, b.TeacherValidationPerplexity!.Value, 3);
        // the rotary cos/sin caches are positions' rotations, not weights: they come out as they went in
        foreach (var table in new[] { "m.cos_cached", "m.sin_cached" })
            Assert.Equal(TensorData.ToFloat(cachedStudent.Initializers.Single(t => t.Name == table)), TensorData.ToFloat(b.Student.Initializers.Single(t => t.Name == table)));
        Assert.Contains(b.Student.Report!.Notes, n => n.Contains("'m.cos_cached', 'm.sin_cached' hold rotary position tables"));
    }

    [Fact]
    public void RotaryTablesAreConstantsAndAnEmbeddingIsNot()
    {
        // positions gather rows of cos/sin tables that rotate x; tokens gather rows of an embedding whose first row is zero (a padding id)
        int positions = 6, width = 4;
        var cos = new float[positions * width]; var sin = new float[positions * width];
        for (int p = 0; p < positions; p++)
            for (int i = 0; i < width; i++) { cos[p * width + i] = MathF.Cos(p / (1f + i)); sin[p * width + i] = MathF.Sin(p / (1f + i)); }
        var embedding = TestModels.RandomWeights(new Random(3), positions * width, 1f);
        Array.Clear(embedding, 0, width);
        var b = new GraphBuilder("rotary").Input("ids", DT.Int64, 1, 3).Output("y", DT.Float);
        var pos = b.InitializerInt64("positions", [1, 3], [0, 1, 2]);
        var x = b.Node("Gather", [b.Initializer("emb", [positions, width], embedding), "ids"]);
        var c = b.Node("Gather", [b.Initializer("cos", [positions, width], cos), pos]);
        var s = b.Node("Gather", [b.Initializer("sin", [positions, width], sin), pos]);
        b.Node("Add", [b.Node("Mul", [x, c]), b.Node("Mul", [x, s])], ["y"]);
        var graph = TrainingGraph.Load(b.BuildModel());
        Assert.All(graph.Parameters.Where(p => p.Name is "cos" or "sin"), p => Assert.True(p.IsRotaryTable && !p.Trainable));
        Assert.True(graph.Parameters.Single(p => p.Name == "emb").Trainable);
        Assert.True(TrainingGraph.IsRotaryPair(cos, sin));
        Assert.False(TrainingGraph.IsRotaryPair(cos, embedding));
        Assert.False(TrainingGraph.IsRotaryPair(sin, cos));
    }

    [SharedFact]
    public void TheCacheLayoutTrainsLikeThePlainOneInTheTrainingEngine()
    {
        var ids = DataSet.Load(SharedFiles.Data("tiny_lm_test.npz")).Arrays.Single(a => a.Name == "x").Slice(0, 2).AsInt64();
        var contract = DecoderContract.Of(Cached.Value)!;
        var inputs = contract.Derive(2, 128).ToDictionary(kv => kv.Key,
            kv => kv.Value.Data is float[] f ? Tensor.Float(kv.Value.Shape.Select(d => (int)d).ToArray(), f) : Tensor.Int64(kv.Value.Shape.Select(d => (int)d).ToArray(), kv.Value.AsInt64()));
        inputs["input_ids"] = Tensor.Int64([2, 128], ids);
        var plain = TrainingGraph.Load(Plain.Value);
        var cached = TrainingGraph.Load(Cached.Value);
        var expected = plain.Forward(new Dictionary<string, Tensor> { ["input_ids"] = Tensor.Int64([2, 128], ids) }, training: true)[0].Data.ToArray();
        var actual = cached.Forward(inputs, training: true)[0].Data;
        Assert.True(expected.Zip(actual).Max(p => Math.Abs(p.First - p.Second)) <= 1e-5);
        // the gradients of the logits reach the same weights (none reaches a cache input, which is no parameter)
        var grad = Tensor.Float([2, 128, 256], Enumerable.Range(0, 2 * 128 * 256).Select(i => (i % 7 - 3) * 1e-3f).ToArray());
        plain.Backward(new Dictionary<string, Tensor> { ["logits"] = grad });
        cached.Backward(new Dictionary<string, Tensor> { ["logits"] = grad });
        var norms = plain.Parameters.Where(p => p.Trainable).Select(p => p.Grad.Sum(g => (double)g * g)).Order().ToArray();
        var cachedNorms = cached.Parameters.Where(p => p.Trainable).Select(p => p.Grad.Sum(g => (double)g * g)).Order().ToArray();
        Assert.Equal(norms.Length, cachedNorms.Length);
        for (int i = 0; i < norms.Length; i++) Assert.Equal(norms[i], cachedNorms[i], 1e-9 + 1e-5 * norms[i]);
    }

    [SharedFact]
    public void TheBuilderLayoutIsRefusedByItsFusedOps()
    {
        // ONNX Runtime GenAI's layout fuses attention and normalization into contrib ops the engine cannot differentiate
        var builder = new OnnxModel(LlamaModels.TinyLlamaBuilderLayout(Cached.Value), null, []);
        using var tokens = TokenStream.Open(SharedFiles.Data("tiny_lm_train.npy"));
        var e = Assert.Throws<EngineException>(() => Distiller.Distill(Cached.Value, builder, tokens, null, new DistillationOptions { SequenceLength = 16, MaxSteps = 1 }));
        Assert.Equal("TrainingOpUnsupported", e.ErrorId);
        Assert.Contains("com.microsoft.GroupQueryAttention", e.Message);
    }

    [Fact]
    public void ACacheTheTrainingEngineCannotTakeIsRefusedBeforeTraining()
    {
        // a decoder-with-past model whose cache is float16: the training engine computes in float
        var b = new GraphBuilder("half-cache").Input("input_ids", DT.Int64, "batch", "seq")
            .Input("past_key_values.0.key", DT.Float16, "batch", 1, "past", 4).Input("past_key_values.0.value", DT.Float16, "batch", 1, "past", 4)
            .Output("logits", DT.Float, "batch", "seq", 8).Output("present.0.key", DT.Float16, "batch", 1, "total", 4).Output("present.0.value", DT.Float16, "batch", 1, "total", 4);
        b.Node("Gather", [b.Initializer("table", [8, 8], new float[64]), "input_ids"], ["logits"]);
        b.Node("Identity", ["past_key_values.0.key"], ["present.0.key"]);
        b.Node("Identity", ["past_key_values.0.value"], ["present.0.value"]);
        var model = b.BuildModel();
        using var tmp = new TempDir();
        var ids = Enumerable.Range(0, 64).Select(i => (long)(i % 8)).ToArray();
        TokenStreamTests.WriteNpy(tmp.File("ids.npy"), "<i8", "(64,)", System.Runtime.InteropServices.MemoryMarshal.AsBytes(ids.AsSpan()).ToArray());
        using var tokens = TokenStream.Open(tmp.File("ids.npy"));
        var e = Assert.Throws<EngineException>(() => Distiller.Distill(model, model, tokens, null, new DistillationOptions { SequenceLength = 8, MaxSteps = 1 }));
        Assert.Equal("DistillationInputTypeUnsupported", e.ErrorId);
        Assert.Contains("past_key_values.0.key", e.Message);
    }
}
