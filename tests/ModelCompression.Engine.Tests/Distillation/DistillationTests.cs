using System.Diagnostics;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Distillation;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;
using Xunit.Abstractions;
using static ModelCompression.Native.Onnx.GraphBuilder;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Distillation;

public class DistillationTests(ITestOutputHelper output)
{
    internal static OnnxModel Student(int inputs, int[] hidden, int classes, int seed = 11)
        => StudentModels.Mlp("features", inputs, hidden, "logits", classes, seed);

    static long Parameters(OnnxModel m) => m.Initializers.Sum(TensorData.ElementCount);

    static double Accuracy(OnnxModel model, DataSet data)
    {
        using var session = new ModelSession(model);
        var inputs = ModelInputs.Bind(model, data);
        var logits = session.Run(inputs)[0];
        var v = logits.AsFloat();
        int classes = (int)logits.Shape[1];
        var y = data.Labels!;
        int correct = 0;
        for (int r = 0; r < y.Length; r++)
        {
            int best = 0;
            for (int c = 1; c < classes; c++) if (v[r * classes + c] > v[r * classes + best]) best = c;
            if (best == y[r]) correct++;
        }
        return (double)correct / y.Length;
    }

    [SharedTheory]
    [InlineData("wine", new[] { 256 }, 3, 60, 1e-2, 2)]
    [InlineData("breast_cancer", new[] { 64, 32 }, 2, 40, 3e-3, 1)]
    public void QuarterSizeStudentComesWithinOneAndHalfPointsOfTheTeacher(string name, int[] hidden, int classes, int epochs, double learningRate, int seed)
    {
        var teacher = ModelIO.Load(SharedFiles.Model(name + "_mlp.onnx"));
        var train = DataSet.Load(SharedFiles.Data(name + "_train.npz"));
        var test = DataSet.Load(SharedFiles.Data(name + "_test.npz"));
        // students of 4.4k (wine, 6 % of the teacher) and 4.1k (breast cancer, 6 %) parameters; over seeds 1-5 and 11,
        // docs/performance.md lists how often each reaches the bar (wine's 54 test rows make one miss 1.85 points)
        var student = StudentModels.Mlp(teacher, hidden, seed);
        Assert.Equal(classes, (int)student.Proto.Graph.Output[0].Type.TensorType.Shape.Dim[1].DimValue);
        Assert.True(Parameters(student) * 4 <= Parameters(teacher), $"student {Parameters(student)} vs teacher {Parameters(teacher)} parameters");

        var sw = Stopwatch.StartNew();
        var result = Distiller.Distill(teacher, student, train, test, new DistillationOptions
        {
            Epochs = epochs, BatchSize = 16, Seed = seed, Optimizer = new OptimizerSettings { LearningRate = learningRate, Schedule = LearningRateSchedule.Cosine },
        });
        double seconds = sw.Elapsed.TotalSeconds;
        double teacherAcc = Accuracy(teacher, test), studentAcc = Accuracy(result.Student, test);
        output.WriteLine($"{name}: teacher {Parameters(teacher)} params acc {teacherAcc:P2}; student {Parameters(student)} params acc {studentAcc:P2}; {seconds:F2} s (teacher {result.TeacherSeconds:F2} s)");
        foreach (var e in result.Epochs.Where(e => e.Epoch % 10 == 0)) output.WriteLine(e.ToString());
        Assert.True(studentAcc >= teacherAcc - 0.015, $"student {studentAcc:P2} vs teacher {teacherAcc:P2}");
        // the engine's own validation accuracy agrees with ONNX Runtime running the exported student
        Assert.Equal(studentAcc, result.Epochs[^1].ValidationAccuracy!.Value, 6);
        Assert.Equal(teacherAcc, result.TeacherValidationAccuracy!.Value, 6);
        // history and report
        Assert.Equal("Distillation", result.Student.History[^1].Name);
        Assert.Equal(epochs, result.Student.Report!.Metrics["Epochs"]);
        Assert.True(result.Student.Report.Metrics.ContainsKey($"Epoch{epochs}.ValidationAccuracy"));
        Assert.Equal(epochs, result.Student.Report.Entries.Count);
        Assert.True(result.Epochs[^1].TrainingLoss < result.Epochs[0].TrainingLoss);
    }

    static (DataSet Train, DataSet Valid) Synthetic(int rows, int inputs, int seed, string name = "features")
    {
        var rng = new Random(seed);
        DataSet Make(int n) => new("synthetic", [new NamedArray(name, [n, inputs], TestModels.RandomWeights(rng, n * inputs, 1.5f))]);
        return (Make(rows), Make(rows / 2));
    }

    [Fact]
    public void SameSeedGivesIdenticalWeightsAndAnotherSeedDoesNot()
    {
        var teacher = TestModels.Mlp(inputs: 8, hidden: 32, classes: 3, seed: 4);
        var (train, valid) = Synthetic(96, 8, 1);
        var student = Student(8, [8], 3);
        var options = new DistillationOptions { Epochs = 3, BatchSize = 16, Seed = 5 };
        byte[] Weights(DistillationOptions o) => ModelIO.ToBytes(Distiller.Distill(teacher, student, train, valid, o).Student);
        var a = Weights(options);
        var b = Weights(options);
        var c = Weights(options with { Seed = 6 });
        var initA = ModelIO.FromBytes(a).Initializers.Select(t => t.RawData.ToByteArray()).ToList();
        var initB = ModelIO.FromBytes(b).Initializers.Select(t => t.RawData.ToByteArray()).ToList();
        var initC = ModelIO.FromBytes(c).Initializers.Select(t => t.RawData.ToByteArray()).ToList();
        Assert.Equal(initA, initB);
        Assert.NotEqual(initA, initC);
        // the input model is untouched
        Assert.Equal(Student(8, [8], 3).Initializers.Select(t => t.RawData.ToByteArray()), student.Initializers.Select(t => t.RawData.ToByteArray()));
    }

    [Fact]
    public void ConvStudentLearnsFromConvTeacher()
    {
        // teacher: conv(16)-bn-relu-conv(16, stride 2)-relu-gap-gemm(4), He-initialized so its outputs vary from image to image;
        // data: random images built here. Student: conv(6)-bn-relu-maxpool-conv(8)-relu-gap-gemm, about a sixth of the teacher's parameters.
        var trng = new Random(21);
        var tb = new GraphBuilder("convteacher").Input("x", DT.Float, "batch", 3, 16, 16).Output("y", DT.Float, "batch", 4);
        var th = tb.Node("Conv", ["x", tb.Initializer("t1.w", [16, 3, 3, 3], TestModels.RandomWeights(trng, 432, 0.47f)), tb.Initializer("t1.b", [16], TestModels.RandomWeights(trng, 16, 0.1f))],
            attributes: [Attr("pads", new long[] { 1, 1, 1, 1 })]);
        th = tb.Node("BatchNormalization", [th, tb.Initializer("tbn.s", [16], Enumerable.Repeat(1f, 16).ToArray()), tb.Initializer("tbn.b", [16], TestModels.RandomWeights(trng, 16, 0.2f)),
            tb.Initializer("tbn.m", [16], new float[16]), tb.Initializer("tbn.v", [16], Enumerable.Repeat(0.6f, 16).ToArray())]);
        th = tb.Node("Relu", [th]);
        th = tb.Node("Conv", [th, tb.Initializer("t2.w", [16, 16, 3, 3], TestModels.RandomWeights(trng, 2304, 0.2f))], attributes: [Attr("pads", new long[] { 1, 1, 1, 1 }), Attr("strides", new long[] { 2, 2 })]);
        th = tb.Node("Relu", [th]);
        th = tb.Node("Flatten", [tb.Node("GlobalAveragePool", [th])]);
        tb.Node("Gemm", [th, tb.Initializer("tfc.w", [16, 4], TestModels.RandomWeights(trng, 64, 1.5f)), tb.Initializer("tfc.b", [4], new float[4])], ["y"]);
        var teacher = tb.BuildModel("convteacher");
        // images: a random level per channel, a random horizontal ramp per channel, and noise, so that the teacher's
        // pooled features (and so its classes) differ from image to image
        var rng = new Random(3);
        DataSet Images(int n)
        {
            var x = new float[n * 768];
            for (int i = 0; i < n; i++)
                for (int c = 0; c < 3; c++)
                {
                    float level = (float)(rng.NextDouble() * 4 - 2), ramp = (float)(rng.NextDouble() * 2 - 1);
                    for (int p = 0; p < 256; p++) x[i * 768 + c * 256 + p] = level + ramp * ((p % 16) - 7.5f) / 8 + (float)(rng.NextDouble() - 0.5);
                }
            return new("images", [new NamedArray("x", [n, 3, 16, 16], x)]);
        }
        var train = Images(160); var valid = Images(64);
        var b = new GraphBuilder("convstudent").Input("x", DT.Float, "batch", 3, 16, 16).Output("y", DT.Float, "batch", 4);
        var srng = new Random(9);
        var h = b.Node("Conv", ["x", b.Initializer("c1.w", [6, 3, 3, 3], TestModels.RandomWeights(srng, 162, 0.47f)), b.Initializer("c1.b", [6], new float[6])],
            attributes: [Attr("pads", new long[] { 1, 1, 1, 1 })]);
        h = b.Node("BatchNormalization", [h, b.Initializer("bn.s", [6], Enumerable.Repeat(1f, 6).ToArray()), b.Initializer("bn.b", [6], new float[6]),
            b.Initializer("bn.m", [6], new float[6]), b.Initializer("bn.v", [6], Enumerable.Repeat(1f, 6).ToArray())]);
        h = b.Node("Relu", [h]);
        h = b.Node("MaxPool", [h], attributes: [Attr("kernel_shape", new long[] { 2, 2 }), Attr("strides", new long[] { 2, 2 })]);
        h = b.Node("Conv", [h, b.Initializer("c2.w", [8, 6, 3, 3], TestModels.RandomWeights(srng, 432, 0.33f))], attributes: [Attr("pads", new long[] { 1, 1, 1, 1 })]);
        h = b.Node("Relu", [h]);
        h = b.Node("GlobalAveragePool", [h]);
        h = b.Node("Flatten", [h]);
        b.Node("Gemm", [h, b.Initializer("fc.w", [4, 8], TestModels.RandomWeights(srng, 32, 0.8f)), b.Initializer("fc.b", [4], new float[4])], ["y"], attributes: [Attr("transB", 1L)]);
        var student = b.BuildModel("convstudent");

        // the teacher's classes vary over the validation images (so agreement measures something)
        using (var ts = new ModelSession(teacher))
        {
            var logits = ts.Run(new Dictionary<string, NamedArray> { ["x"] = valid.Arrays[0] })[0].AsFloat();
            var counts = new int[4];
            for (int r = 0; r < 64; r++) counts[Enumerable.Range(0, 4).MaxBy(c => logits[r * 4 + c])]++;
            output.WriteLine("teacher classes on validation: " + string.Join(" ", counts));
            Assert.True(counts.Count(c => c >= 6) >= 2, "the teacher predicts at least two classes often");
        }
        var before = ModelComparer.Compare(teacher, student, new InputSource { Data = valid })[0];
        Assert.True(Parameters(student) * 4 <= Parameters(teacher));
        var result = Distiller.Distill(teacher, student, train, valid, new DistillationOptions
        {
            Epochs = 15, BatchSize = 16, Temperature = 2, Optimizer = new OptimizerSettings { LearningRate = 1e-2, Schedule = LearningRateSchedule.Cosine },
        });
        var after = ModelComparer.Compare(teacher, result.Student, new InputSource { Data = valid })[0];
        output.WriteLine($"teacher agreement before {before.Top1Agreement:P1} cosine {before.Cosine:F3}; after {after.Top1Agreement:P1} cosine {after.Cosine:F3}");
        foreach (var e in result.Epochs) output.WriteLine(e.ToString());
        Assert.True(result.Epochs[^1].ValidationLoss < 0.5 * result.Epochs[0].ValidationLoss, "validation loss halves");
        Assert.True(after.Top1Agreement >= 0.9 && after.Top1Agreement > before.Top1Agreement!.Value + 0.2, $"agreement {before.Top1Agreement:P1} -> {after.Top1Agreement:P1}");
        // the BatchNormalization, with its trained running statistics, was folded into the Conv before it
        Assert.DoesNotContain(result.Student.Proto.Graph.Node, n => n.OpType == "BatchNormalization");
        Assert.Contains(result.Student.Report!.Entries, e => e.OpType == "BatchNormalization" && e.Action == "Folded");
        Assert.Equal(6, result.Student.Initializers.Single(t => t.Name == "c1.b").Dims[0]);
    }

    static OnnxModel TokenModel(int vocabulary, int width, int seed, string name)
    {
        // ids[batch, 6] -> Gather(embedding) -> ReduceMean over the sequence -> Tanh -> Gemm -> logits[batch, 3]
        var rng = new Random(seed);
        var b = new GraphBuilder(name).Input("ids", DT.Int64, "batch", 6).Output("logits", DT.Float, "batch", 3);
        var e = b.Node("Gather", [b.Initializer("embedding", [vocabulary, width], TestModels.RandomWeights(rng, vocabulary * width, 1.5f)), "ids"]);
        var m = b.Node("Tanh", [b.Node("ReduceMean", [e], attributes: [Attr("axes", new long[] { 1 }), Attr("keepdims", 0L)])]);
        b.Node("Gemm", [m, b.Initializer("fc.w", [width, 3], TestModels.RandomWeights(rng, width * 3, 2f)), b.Initializer("fc.b", [3], new float[3])], ["logits"]);
        return b.BuildModel(name);
    }

    [Fact]
    public void TokenStudentWithAnEmbeddingLearnsFromATokenTeacher()
    {
        var teacher = TokenModel(40, 24, 1, "teacher");
        var student = TokenModel(40, 6, 2, "student");
        var rng = new Random(3);
        DataSet Ids(int n) => new("ids", [new NamedArray("ids", [n, 6], Enumerable.Range(0, n * 6).Select(_ => (long)rng.Next(40)).ToArray())]);
        var train = Ids(256); var valid = Ids(64);
        var before = ModelComparer.Compare(teacher, student, new InputSource { Data = valid })[0].Top1Agreement!.Value;
        var result = Distiller.Distill(teacher, student, train, valid, new DistillationOptions { Epochs = 15, BatchSize = 16, Optimizer = new OptimizerSettings { LearningRate = 2e-2 } });
        var after = ModelComparer.Compare(teacher, result.Student, new InputSource { Data = valid })[0].Top1Agreement!.Value;
        output.WriteLine($"agreement {before:P1} -> {after:P1}");
        Assert.True(after >= 0.8 && after > before + 0.2, $"agreement {before:P1} -> {after:P1}");
    }

    [Fact]
    public void BatchNormFoldingKeepsTheOutputsInOnnxRuntime()
    {
        // TestModels.ConvNet: Conv(bias) -> BatchNormalization -> Relu -> Conv(no bias) ...; plus a Conv without bias before a second BN
        var model = TestModels.ConvNet();
        var proto = model.Proto.Clone();
        var entries = new List<ReportEntry>();
        Assert.Equal(1, BatchNormFolding.Fold(proto, entries));
        Assert.DoesNotContain(proto.Graph.Node, n => n.OpType == "BatchNormalization");
        var folded = new OnnxModel(proto, null, []);
        var f = ModelComparer.Compare(model, folded, new InputSource { Synthesis = new SynthesisOptions { BatchSize = 4 } })[0];
        Assert.True(f.MaxAbsError < 1e-4, $"max abs error {f.MaxAbsError}");

        var b = new GraphBuilder("nobias").Input("x", DT.Float, "batch", 2, 5, 5).Output("y", DT.Float);
        var rng = new Random(4);
        var h = b.Node("Conv", ["x", b.Initializer("w", [3, 2, 3, 3], TestModels.RandomWeights(rng, 54, 0.5f))]);
        b.Node("BatchNormalization", [h, b.Initializer("s", [3], [1.5f, 0.5f, 2f]), b.Initializer("bb", [3], [0.1f, -0.2f, 0.3f]),
            b.Initializer("m", [3], [0.2f, -0.1f, 0.05f]), b.Initializer("v", [3], [0.8f, 1.2f, 2f])], ["y"]);
        var m2 = b.BuildModel();
        var p2 = m2.Proto.Clone();
        Assert.Equal(1, BatchNormFolding.Fold(p2));
        var f2 = ModelComparer.Compare(m2, new OnnxModel(p2, null, []), new InputSource { Synthesis = new SynthesisOptions { BatchSize = 3 } })[0];
        Assert.True(f2.MaxAbsError < 1e-4, $"max abs error {f2.MaxAbsError}");

        // a Conv whose output is also used elsewhere is left alone
        var c = new GraphBuilder("shared").Input("x", DT.Float, "batch", 2, 5, 5).Output("y", DT.Float).Output("z", DT.Float);
        var hc = c.Node("Conv", ["x", c.Initializer("w", [3, 2, 3, 3], TestModels.RandomWeights(rng, 54, 0.5f))]);
        c.Node("BatchNormalization", [hc, c.Initializer("s", [3], [1f, 1f, 1f]), c.Initializer("bb", [3], new float[3]),
            c.Initializer("m", [3], new float[3]), c.Initializer("v", [3], [1f, 1f, 1f])], ["y"]);
        c.Node("Relu", [hc], ["z"]);
        Assert.Equal(0, BatchNormFolding.Fold(c.BuildModel().Proto.Clone()));
    }

    [Fact]
    public void BadInputIsRefusedBeforeTraining()
    {
        var teacher = TestModels.Mlp(inputs: 8, classes: 3);
        var (train, _) = Synthetic(32, 8, 1);
        var opts = new DistillationOptions { Epochs = 1 };
        EngineException Fails(OnnxModel t, OnnxModel s, DataSet d, DistillationOptions? o = null) =>
            Assert.Throws<EngineException>(() => Distiller.Distill(t, s, d, null, o ?? opts));

        Assert.Equal("DistillationInputMismatch", Fails(teacher, Student(9, [4], 3), train).ErrorId);
        Assert.Equal("DistillationOutputMismatch", Fails(teacher, Student(8, [4], 5), train).ErrorId);
        var (wide, _) = Synthetic(32, 7, 1);
        Assert.Equal("DataShapeMismatch", Fails(teacher, Student(8, [4], 3), wide).ErrorId);
        var labelled = new DataSet("labels", [train.Arrays[0], new NamedArray("y", [32], Enumerable.Range(0, 32).Select(i => (long)(i % 4)).ToArray())]);
        var e = Fails(teacher, Student(8, [4], 3), labelled);
        Assert.Equal("LabelOutOfRange", e.ErrorId);
        Assert.Contains("label 3", e.Message);
        Assert.Equal("AlphaOutOfRange", Fails(teacher, Student(8, [4], 3), train, opts with { Alpha = 1.5 }).ErrorId);
        Assert.Equal("TemperatureOutOfRange", Fails(teacher, Student(8, [4], 3), train, opts with { Temperature = 0 }).ErrorId);
        Assert.Equal("DistillationNothingToTrain", Fails(teacher, Student(8, [], 3), train, opts with { Freeze = ["fc0.weight", "fc0.bias"] }).ErrorId);

        var sb = new GraphBuilder("odd").Input("features", DT.Float, "batch", 8).Output("logits", DT.Float, "batch", 3);
        sb.Node("TopK", ["features", sb.InitializerInt64("k", [1], [3])], ["logits", "idx"]);
        Assert.Equal("TrainingOpUnsupported", Fails(teacher, sb.BuildModel(), train).ErrorId);
    }

    [Fact]
    public void CancellationReturnsNothingUnlessPartialIsAsked()
    {
        var teacher = TestModels.Mlp(inputs: 8, hidden: 32, classes: 3);
        var (train, valid) = Synthetic(64, 8, 2);
        var student = Student(8, [8], 3);
        using (var cts = new CancellationTokenSource())
        {
            Assert.ThrowsAny<OperationCanceledException>(() => Distiller.Distill(teacher, student, train, valid,
                new DistillationOptions { Epochs = 50 }, p => { if (p.Metrics?.Epoch == 2) cts.Cancel(); }, cts.Token));
        }
        using (var cts = new CancellationTokenSource())
        {
            var result = Distiller.Distill(teacher, student, train, valid, new DistillationOptions { Epochs = 50, Partial = true },
                p => { if (p.Metrics?.Epoch == 2) cts.Cancel(); }, cts.Token);
            Assert.True(result.Cancelled);
            Assert.Equal(2, result.Epochs.Count);
            Assert.InRange(result.BestEpoch, 1, 2);
            Assert.Equal("true", result.Student.History[^1].Parameters["Partial"]);
        }
    }

    [Fact]
    public void PatienceStopsEarlyAndKeepsTheBestWeights()
    {
        var teacher = TestModels.Mlp(inputs: 8, hidden: 32, classes: 3);
        var (train, valid) = Synthetic(64, 8, 3);
        // a learning rate far too high makes the validation loss bounce, so patience has something to do
        var result = Distiller.Distill(teacher, Student(8, [16], 3), train, valid, new DistillationOptions
        {
            Epochs = 60, BatchSize = 8, Patience = 2, Optimizer = new OptimizerSettings { Kind = OptimizerKind.Sgd, LearningRate = 0.5, Momentum = 0.9, ClipNorm = 5 },
        });
        Assert.True(result.StoppedEarly);
        Assert.True(result.Epochs.Count < 60);
        double bestLoss = result.Epochs.Min(e => e.ValidationLoss!.Value);
        Assert.Equal(bestLoss, result.Epochs[result.BestEpoch - 1].ValidationLoss!.Value);
        // the returned weights are that epoch's: their validation agreement with the teacher is what was measured then
        var agreement = ModelComparer.Compare(teacher, result.Student, new InputSource { Data = valid })[0].Top1Agreement;
        Assert.Equal(result.Epochs[result.BestEpoch - 1].TeacherAgreement!.Value, agreement!.Value, 6);
    }

    [Fact]
    public void MseLossDistilsRegressionOutputs()
    {
        var teacher = Student(6, [32, 32], 2, seed: 8);   // He-initialized: outputs with real spread
        var (train, valid) = Synthetic(128, 6, 4);
        var result = Distiller.Distill(teacher, Student(6, [16], 2), train, valid, new DistillationOptions
        {
            Epochs = 25, BatchSize = 16, Loss = DistillationLoss.MSE, Optimizer = new OptimizerSettings { LearningRate = 1e-2 },
        });
        // R² of the student's outputs against the teacher's, both run in ONNX Runtime
        var inputs = ModelInputs.Bind(teacher, valid);
        float[] Run(OnnxModel m) { using var s = new ModelSession(m); return s.Run(inputs)[0].AsFloat(); }
        var t = Run(teacher); var st = Run(result.Student);
        double mean = t.Average(), variance = t.Sum(v => (v - mean) * (v - mean)) / t.Length;
        double mse = t.Zip(st).Sum(p => (p.First - p.Second) * (p.First - p.Second)) / t.Length;
        double r2 = 1 - mse / variance;
        output.WriteLine($"R² {r2:F4}; loss {result.Epochs[0].ValidationLoss:F4} -> {result.Epochs[^1].ValidationLoss:F4}");
        Assert.Equal(mse, result.Epochs[^1].ValidationLoss!.Value, 4);
        Assert.True(r2 > 0.8, $"R² {r2}");
    }

    [Fact]
    public void MaxStepsBoundsTrainingAndValidationIntervalSetsTheRecords()
    {
        var teacher = TestModels.Mlp(inputs: 8, hidden: 32, classes: 3);
        var (train, valid) = Synthetic(96, 8, 5);   // 6 steps per epoch at batch 16
        var student = Student(8, [8], 3);
        var o = new DistillationOptions { BatchSize = 16 };

        var steps = Distiller.Distill(teacher, student, train, valid, o with { MaxSteps = 5 });
        Assert.Equal(5, steps.Steps);
        var record = Assert.Single(steps.Epochs);   // no epoch bound of its own: one partial epoch
        Assert.Equal((1, 5L), (record.Epoch, record.Step));
        Assert.Equal("5", steps.Student.History[^1].Parameters["MaxSteps"]);
        Assert.False(steps.Student.History[^1].Parameters.ContainsKey("Epochs"));

        var epochs = Distiller.Distill(teacher, student, train, valid, o with { Epochs = 2, MaxSteps = 100 });
        Assert.Equal(12, epochs.Steps);
        Assert.Equal([6L, 12L], epochs.Epochs.Select(e => e.Step));

        var interval = Distiller.Distill(teacher, student, train, valid, o with { Epochs = 2, ValidationInterval = 4 });
        Assert.Equal([4L, 8L, 12L], interval.Epochs.Select(e => e.Step));
        Assert.Equal([1, 2, 2], interval.Epochs.Select(e => e.Epoch));
        Assert.All(interval.Epochs, e => Assert.NotNull(e.ValidationLoss));
        Assert.True(interval.Student.Report!.Metrics.ContainsKey("Step8.ValidationLoss"));
        Assert.Equal(["step 4", "step 8", "step 12"], interval.Student.Report.Entries.Select(e => e.Target));
        Assert.Equal(12, interval.Student.Report.Metrics["Steps"]);

        // An interval that does not divide the run: the last steps still end in a record.
        var uneven = Distiller.Distill(teacher, student, train, valid, o with { Epochs = 2, ValidationInterval = 5 });
        Assert.Equal([5L, 10L, 12L], uneven.Epochs.Select(e => e.Step));

        Assert.Equal("MaxStepsOutOfRange", Assert.Throws<EngineException>(() => Distiller.Distill(teacher, student, train, null, o with { MaxSteps = 0 })).ErrorId);
        Assert.Equal("ValidationIntervalOutOfRange", Assert.Throws<EngineException>(() => Distiller.Distill(teacher, student, train, null, o with { ValidationInterval = -1 })).ErrorId);
        Assert.Equal("SequenceLengthNeedsTokenData", Assert.Throws<EngineException>(() => Distiller.Distill(teacher, student, train, null, o with { SequenceLength = 16 })).ErrorId);
        Assert.Equal("BatchSizeOutOfRange", Assert.Throws<EngineException>(() => (o with { BatchSize = 1_000_000, SequenceLength = 1 << 20 }).Validate()).ErrorId);
    }
}
