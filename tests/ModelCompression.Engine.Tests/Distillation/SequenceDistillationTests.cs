using System.Diagnostics;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Distillation;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;
using Xunit.Abstractions;

namespace ModelCompression.Engine.Tests.Distillation;

/// <summary>Distilling a language model (tiny_lm: [batch, seq] token ids in, [batch, seq, 256] logits out).</summary>
public class SequenceDistillationTests(ITestOutputHelper output)
{
    static readonly Lazy<OnnxModel> Teacher = new(() => ModelIO.Load(SharedFiles.Model("tiny_lm.onnx")));

    /// <summary>tiny_lm pruned by Invoke-ModelPruning -Structured -Rate 0.5: a damaged student.</summary>
    static readonly Lazy<OnnxModel> Pruned = new(() => ModelPruner.Prune(Teacher.Value, new PruningOptions { Structured = true, Rate = 0.5 }));

    /// <summary>Rows [start, start+count) of the held-out windows (x, y: int64 [256, 128]).</summary>
    static DataSet TestRows(int start, int count)
    {
        var test = DataSet.Load(SharedFiles.Data("tiny_lm_test.npz"));
        return new DataSet("tiny_lm_test", test.Arrays.Select(a => a.Slice(start, count)).ToList());
    }

    /// <summary>exp(mean cross-entropy of the next token), and how often the most likely token is the next one, by ONNX Runtime.</summary>
    static (double Perplexity, double Accuracy) NextToken(OnnxModel model, DataSet data)
    {
        using var session = new ModelSession(model);
        var logits = session.Run(ModelInputs.Bind(model, data))[0];
        var v = logits.AsFloat(); var y = data.Labels!;
        int vocab = (int)logits.Shape[^1];
        double nll = 0; int hits = 0;
        for (int i = 0; i < y.Length; i++)
        {
            var row = v.AsSpan(i * vocab, vocab);
            nll += Softmax.CrossEntropy(row, (int)y[i]);
            if (System.Numerics.Tensors.TensorPrimitives.IndexOfMax(row) == y[i]) hits++;
        }
        return (Math.Exp(nll / y.Length), (double)hits / y.Length);
    }

    static double Perplexity(OnnxModel model, DataSet data) => NextToken(model, data).Perplexity;

    [SharedFact]
    public void AFewStepsOnTokenWindowsLowerThePrunedStudentsTestPerplexity()
    {
        var valid = TestRows(0, 16);
        double teacherPpl = Perplexity(Teacher.Value, valid), before = Perplexity(Pruned.Value, valid);
        using var tokens = TokenStream.Open(SharedFiles.Data("tiny_lm_train.npy"));
        var sw = Stopwatch.StartNew();
        var result = Distiller.Distill(Teacher.Value, Pruned.Value, tokens, valid, new DistillationOptions
        {
            // a small learning rate: this student is only mildly damaged, and large first Adam steps set it back (4.60 -> 4.84 at 1e-3)
            SequenceLength = 64, BatchSize = 8, MaxSteps = 12, ValidationInterval = 12, Temperature = 1, Alpha = 1,
            Optimizer = new OptimizerSettings { LearningRate = 2e-4 },
        });
        double after = Perplexity(result.Student, valid);
        output.WriteLine($"teacher {teacherPpl:F3}; pruned {before:F3} -> {after:F3} after {result.Steps} steps in {sw.Elapsed.TotalSeconds:F1} s; "
            + $"{result.Timing.Total / result.Steps:F3} s/step (teacher {result.Timing.Teacher / result.Steps:F3})");
        Assert.Equal(12, result.Steps);
        Assert.True(after < before - 0.1, $"test perplexity {before:F3} -> {after:F3}");
        // the engine's own perplexity (its forward pass) is what ONNX Runtime gets from the exported student
        Assert.Equal(after, result.Epochs.Single().ValidationPerplexity!.Value, 3);
        Assert.Equal(teacherPpl, result.TeacherValidationPerplexity!.Value, 3);
        // the causal mask stayed a constant; the stage says how it trained
        Assert.Equal(TensorData.ToFloat(Teacher.Value.Initializers.Single(t => t.Name == "mask")), TensorData.ToFloat(result.Student.Initializers.Single(t => t.Name == "mask")));
        Assert.Contains(result.Student.Report!.Notes, n => n.Contains("'mask'") && n.Contains("attention mask"));
        var stage = result.Student.History[^1];
        Assert.Equal(("64", "12"), (stage.Parameters["SequenceLength"], stage.Parameters["MaxSteps"]));
        Assert.True(result.Timing.Teacher > 0 && result.Timing.Backward > 0);
    }

    [SharedFact]
    public void LabelsPerPositionInADataFileTrainTheSameWay()
    {
        // rows of windows with their next tokens ([rows, 128] each) instead of a token stream: the teacher's outputs are cached
        var train = TestRows(16, 16);
        var valid = TestRows(0, 8);
        var result = Distiller.Distill(Teacher.Value, Pruned.Value, train, valid, new DistillationOptions { Epochs = 1, BatchSize = 8, Temperature = 1 });
        Assert.Equal(2, result.Steps);
        // perplexity and next-token accuracy over all positions, as ONNX Runtime gets them from the exported student
        var (perplexity, accuracy) = NextToken(result.Student, valid);
        Assert.Equal(perplexity, result.Epochs.Single().ValidationPerplexity!.Value, 3);
        Assert.Equal(accuracy, result.Epochs.Single().ValidationAccuracy!.Value, 6);
    }

    [SharedFact]
    public void LanguageModelMistakesAreRefusedBeforeTraining()
    {
        using var tmp = new TempDir();
        var teacher = Teacher.Value;
        var o = new DistillationOptions { SequenceLength = 32, BatchSize = 2, MaxSteps = 1 };
        using var tokens = TokenStream.Open(SharedFiles.Data("tiny_lm_train.npy"));
        EngineException Fails(Action a) => Assert.Throws<EngineException>(a);
        string Tokens(string name, params long[] ids)
        {
            TokenStreamTests.WriteNpy(tmp.File(name), "<i8", $"({ids.Length},)", System.Runtime.InteropServices.MemoryMarshal.AsBytes(ids.AsSpan()).ToArray());
            return tmp.File(name);
        }

        Assert.Equal("TokenDataNeedsSequenceLength", Fails(() => Distiller.Distill(teacher, teacher, tokens, null, o with { SequenceLength = null })).ErrorId);
        Assert.Equal("SequenceLengthNeedsTokenData", Fails(() => Distiller.Distill(teacher, teacher, TestRows(0, 4), null, o)).ErrorId);
        var oneD = DataSet.Load(Tokens("ids.npy", Enumerable.Range(0, 300).Select(i => (long)(i % 256)).ToArray()));
        Assert.Equal("TokenDataNeedsSequenceLength", Fails(() => Distiller.Distill(teacher, teacher, oneD, null, o with { SequenceLength = null })).ErrorId);
        Assert.Equal("MaxStepsOutOfRange", Fails(() => Distiller.Distill(teacher, teacher, tokens, null, o with { MaxSteps = 0 })).ErrorId);
        Assert.Equal("ShuffleNotApplicable", Fails(() => Distiller.Distill(teacher, teacher, tokens, null, o with { Shuffle = false })).ErrorId);
        var e = Fails(() => Distiller.Distill(teacher, teacher, tokens, null, o with { SequenceLength = 200 }));
        Assert.Equal("SequenceLengthUnsupported", e.ErrorId);
        Assert.Contains("200", e.Message);
        using (var far = TokenStream.Open(Tokens("far.npy", Enumerable.Range(0, 300).Select(i => (long)(i == 150 ? 256 : i % 256)).ToArray())))
            Assert.Equal("TokenIdOutOfRange", Fails(() => Distiller.Distill(teacher, teacher, far, null, o)).ErrorId);
        using (var few = TokenStream.Open(Tokens("few.npy", 1, 2, 3)))
            Assert.Equal("TokenDataTooShort", Fails(() => Distiller.Distill(teacher, teacher, few, null, o)).ErrorId);
        var mlp = TestModels.Mlp();
        Assert.Equal("TokenDataInputMismatch", Fails(() => Distiller.Distill(mlp, mlp, tokens, null, o)).ErrorId);

        // labels: one per row where the output has one per position; out of the vocabulary
        var x = TestRows(0, 4).Arrays.Single(a => a.Name == "x");
        var perRow = new DataSet("per-row", [x, new NamedArray("y", [4], new long[] { 1, 2, 3, 4 })]);
        Assert.Equal("LabelShapeMismatch", Fails(() => Distiller.Distill(teacher, teacher, perRow, null, o with { SequenceLength = null })).ErrorId);
        var labels = new long[4 * 128]; labels[130] = 999;
        var outside = new DataSet("outside", [x, new NamedArray("y", [4, 128], labels)]);
        e = Fails(() => Distiller.Distill(teacher, teacher, outside, null, o with { SequenceLength = null }));
        Assert.Equal("LabelOutOfRange", e.ErrorId);
        Assert.Contains("row 1, position 2", e.Message);
    }
}
