using System.Diagnostics;
using ModelCompression.Native.Data;
using ModelCompression.Native.Distillation;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;

// Distils wine_mlp.onnx and breast_cancer_mlp.onnx into small MLP students (the acceptance task) for several seeds and
// prints test accuracy and wall time. With an output folder, it also writes each task (data, cached teacher logits,
// the students' initial weights) as .npz for bench/Distillation/torch_distill.py, which trains the same students
// the same way in PyTorch.  Usage: dotnet run -c Release --project bench/Distillation [-- outDir]
// With "lm" first: the language-model bench of LmBench.cs (tiny_lm, ModelCompression and PyTorch side by side);
// with "llama" first: LlamaBench.cs (a pruned tiny_llama, both sides starting from the same ONNX student).
string root = AppContext.BaseDirectory;
while (!File.Exists(Path.Combine(root, "ModelCompression.psd1"))) root = Path.GetDirectoryName(root) ?? throw new InvalidOperationException("repo root not found");
string shared = Path.GetFullPath(Path.Combine(root, "..", "shared"));
if (args.Length > 0 && args[0] == "lm")
{
    LmBench.Run(shared, root, args[1..]);
    return;
}
if (args.Length > 0 && args[0] == "llama")
{
    LlamaBench.Run(shared, root, args[1..]);
    return;
}
string? outDir = args.Length > 0 ? Directory.CreateDirectory(args[0]).FullName : null;
int[] seeds = [1, 2, 3, 4, 5, 11];
Console.WriteLine($"processors {Environment.ProcessorCount}; GEMM kernel {ModelCompression.Native.Kernels.Gemm.KernelName}");
{
    // one short untimed run first, so that the timed runs measure steady-state code rather than the JIT's first tier
    var warmTeacher = ModelIO.Load(Path.Combine(shared, "models", "wine_mlp.onnx"));
    var sw0 = Stopwatch.StartNew();
    Distiller.Distill(warmTeacher, StudentModels.Mlp(warmTeacher, [256], 99), DataSet.Load(Path.Combine(shared, "data", "wine_train.npz")), null, new DistillationOptions { Epochs = 20, BatchSize = 16 });
    Console.WriteLine($"warm-up (cold start, JIT included): 20 wine epochs in {sw0.Elapsed.TotalSeconds:F3} s");
}

foreach (var (name, hidden, epochs, lr) in new (string, int[], int, double)[] { ("wine", [256], 60, 1e-2), ("breast_cancer", [64, 32], 40, 3e-3) })
{
    var teacher = ModelIO.Load(Path.Combine(shared, "models", name + "_mlp.onnx"));
    var train = DataSet.Load(Path.Combine(shared, "data", name + "_train.npz"));
    var test = DataSet.Load(Path.Combine(shared, "data", name + "_test.npz"));
    double teacherAcc = Accuracy(teacher, test);
    long teacherParams = teacher.Initializers.Sum(TensorData.ElementCount);
    var accs = new List<double>(); var times = new List<double>(); var trainTimes = new List<double>();
    var arrays = new List<NamedArray>();
    foreach (int seed in seeds)
    {
        var student = StudentModels.Mlp(teacher, hidden, seed);
        if (seed == seeds[0]) Console.WriteLine($"{name}: teacher {teacherParams:N0} parameters, test accuracy {teacherAcc:P2}; student {student.Initializers.Sum(TensorData.ElementCount):N0} parameters; {epochs} epochs, batch 16, Adam lr {lr} cosine, T=4, alpha=0.7");
        foreach (var t in student.Initializers) arrays.Add(new NamedArray($"s{seed}_{t.Name}", t.Dims.ToArray(), TensorData.ToFloat(t)));
        var sw = Stopwatch.StartNew();
        var result = Distiller.Distill(teacher, student, train, null, new DistillationOptions
        {
            Epochs = epochs, BatchSize = 16, Seed = seed, Optimizer = new OptimizerSettings { LearningRate = lr, Schedule = LearningRateSchedule.Cosine },
        });
        times.Add(sw.Elapsed.TotalSeconds);
        trainTimes.Add(result.TrainingSeconds);
        accs.Add(Accuracy(result.Student, test));
        Console.WriteLine($"  seed {seed}: test accuracy {accs[^1]:P2}; wall {times[^1]:F3} s (training loop {trainTimes[^1]:F3} s, teacher {result.TeacherSeconds:F3} s)");
    }
    Console.WriteLine($"  mean test accuracy {accs.Average():P2} (min {accs.Min():P2}); median wall {Median(times):F3} s, median training loop {Median(trainTimes):F3} s");
    if (outDir is not null)
    {
        using var session = new ModelSession(teacher);
        var inputs = ModelInputs.Bind(teacher, train);
        var logits = session.Run(inputs)[0];
        arrays.Add(new NamedArray("x_train", train.Features[0].Shape, train.Features[0].AsFloat()));
        arrays.Add(new NamedArray("y_train", [train.Rows], train.Labels!));
        arrays.Add(new NamedArray("teacher_train", logits.Shape, logits.AsFloat()));
        arrays.Add(new NamedArray("x_test", test.Features[0].Shape, test.Features[0].AsFloat()));
        arrays.Add(new NamedArray("y_test", [test.Rows], test.Labels!));
        arrays.Add(new NamedArray("config", [4], new float[] { epochs, 16, (float)lr, hidden.Length }));
        string file = Path.Combine(outDir, name + "_task.npz");
        if (File.Exists(file)) File.Delete(file);
        Npy.WriteNpz(file, arrays);
        Console.WriteLine($"  wrote {file}");
    }
}

static double Median(List<double> v) { var s = v.Order().ToList(); return s[s.Count / 2]; }

static double Accuracy(OnnxModel model, DataSet data)
{
    using var session = new ModelSession(model);
    var logits = session.Run(ModelInputs.Bind(model, data))[0];
    var v = logits.AsFloat(); int classes = (int)logits.Shape[1]; var y = data.Labels!;
    int correct = 0;
    for (int r = 0; r < y.Length; r++)
    {
        int best = 0;
        for (int c = 1; c < classes; c++) if (v[r * classes + c] > v[r * classes + best]) best = c;
        if (best == y[r]) correct++;
    }
    return (double)correct / y.Length;
}
