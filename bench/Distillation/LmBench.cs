using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ModelCompression.Native.Data;
using ModelCompression.Native.Distillation;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;

/// <summary>
/// Language-model distillation side by side with PyTorch (issue 11): tiny_lm.onnx (teacher) is pruned to the peer
/// recipe's student (half the heads and half the FFN neurons of every block, by weight norm), then distilled on random
/// windows of 128 tokens from tiny_lm_train.npy, 32 per step, KL on the logits at every position, AdamW lr 5e-4,
/// weight decay 0.01, with the test perplexity after every 200 steps. Both sides run in this one command, one after
/// the other: ModelCompression's Distiller here, then bench/Distillation/torch_lm_distill.py (PyTorch written for this
/// bench, which loads the teacher's weights exported here, prunes it itself and checks it keeps the same heads and
/// neurons). Then, with "ours" in the arguments, the same student is also distilled with Invoke-Distillation's
/// defaults (what the issue's pipeline runs), and with "pipeline" the issue's whole pipeline runs on the engine:
/// Invoke-ModelPruning -Structured -Rate 0.5's student, distilled with the defaults, quantized 4-bit weight-only.
///   dotnet run -c Release --project bench/Distillation -- lm [steps=600] [interval=200] [threads=2] [ours] [pipeline] [no-torch]
/// </summary>
static class LmBench
{
    public static void Run(string shared, string root, string[] args)
    {
        int steps = args.Length > 0 && int.TryParse(args[0], out int s) ? s : 600;
        int interval = args.Length > 1 && int.TryParse(args[1], out int iv) ? iv : 200;
        int threads = args.Length > 2 && int.TryParse(args[2], out int th) ? th : 2;
        bool ours = args.Contains("ours"), torch = !args.Contains("no-torch"), pipeline = args.Contains("pipeline");
        ModelCompression.Native.Kernels.Gemm.MaxThreads = threads;
        var teacher = ModelIO.Load(Path.Combine(shared, "models", "tiny_lm.onnx"));
        var test = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_test.npz"));
        string trainPath = Path.Combine(shared, "data", "tiny_lm_train.npy");
        var (student, kept) = TinyLmStudent.Build(teacher, 0.5);
        long tp = teacher.Initializers.Sum(TensorData.ElementCount), sp = student.Initializers.Sum(TensorData.ElementCount);
        double pplTeacher = Perplexity(teacher, test), pplPruned = Perplexity(student, test);
        Console.WriteLine($"processors {Environment.ProcessorCount}, threads {threads}; GEMM {ModelCompression.Native.Kernels.Gemm.KernelName}; load average {LoadAverage()}");
        Console.WriteLine($"teacher tiny_lm: {tp:N0} parameters, test perplexity {pplTeacher:F3} (ONNX Runtime)");
        Console.WriteLine($"student (half the heads and FFN neurons): {sp:N0} parameters ({(double)sp / tp:F2}x), test perplexity {pplPruned:F3}");

        string task = Directory.CreateTempSubdirectory("lm-bench-").FullName;
        try
        {
            ExportTask(teacher, kept, Path.Combine(task, "task.npz"));
            var peerOptions = new DistillationOptions
            {
                SequenceLength = 128, BatchSize = 32, MaxSteps = steps, ValidationInterval = interval, Temperature = 1, Alpha = 1,
                Optimizer = new OptimizerSettings { LearningRate = 5e-4, WeightDecay = 0.01 },
            };
            var mine = Distil("ModelCompression, peer recipe", teacher, student, trainPath, test, peerOptions);
            Dictionary<string, JsonElement>? peer = null;
            if (torch) peer = RunTorch(root, "torch_lm_distill.py", Path.Combine(task, "task.npz"), trainPath, Path.Combine(shared, "data", "tiny_lm_test.npz"),
                steps.ToString(CultureInfo.InvariantCulture), interval.ToString(CultureInfo.InvariantCulture), threads.ToString(CultureInfo.InvariantCulture));
            (string Name, double[] Ppl, double SecondsPerStep)? defaults = null;
            if (ours) defaults = Distil("ModelCompression, Invoke-Distillation defaults", teacher, student, trainPath, test,
                new DistillationOptions { SequenceLength = 128, MaxSteps = steps, ValidationInterval = interval });
            if (pipeline) Pipeline(teacher, test, shared, trainPath, steps, interval, pplTeacher);

            var rows = new List<(string, double[], double)> { mine };
            if (peer is not null) rows.Add(PeerRow(peer, "peer recipe"));
            if (defaults is { } d) rows.Add(d);
            PrintTable(steps, interval, pplTeacher, pplPruned, rows);
            Console.WriteLine($"load average at the end {LoadAverage()}");
        }
        finally { Directory.Delete(task, true); }
    }

    internal static (string Name, double[] Ppl, double SecondsPerStep) Distil(string name, OnnxModel teacher, OnnxModel student, string trainPath, DataSet test, DistillationOptions options)
    {
        using var tokens = TokenStream.Open(trainPath);
        long allocated = GC.GetTotalAllocatedBytes(precise: true);
        int collections = GC.CollectionCount(2);
        var wall = Stopwatch.StartNew();
        var result = Distiller.Distill(teacher, student, tokens, test, options, p =>
        {
            if (p.Metrics is { } m) Console.WriteLine($"  {name}: step {m.Step}: training loss {m.TrainingLoss:F4}, test perplexity {m.ValidationPerplexity:F3} ({m.Seconds:F1} s)");
        });
        allocated = GC.GetTotalAllocatedBytes(precise: true) - allocated;
        var t = result.Timing;
        double per = t.Total / result.Steps;
        Console.WriteLine($"  {name}: {result.Steps} steps, {per:F3} s/step (data {t.Data / result.Steps:F3}, teacher {t.Teacher / result.Steps:F3}, forward {t.Forward / result.Steps:F3}, loss {t.Loss / result.Steps:F3}, backward {t.Backward / result.Steps:F3}, optimizer {t.Optimizer / result.Steps:F3}); wall {wall.Elapsed.TotalSeconds:F0} s");
        Console.WriteLine($"  managed allocations {allocated / result.Steps / 1024.0:F0} KB per step (evaluations and the exported model included), {GC.CollectionCount(2) - collections} full collections");
        Console.WriteLine("  student ops, s/step forward + backward: " + string.Join(", ", result.OpTimings.Take(8).Select(o => $"{o.OpType} {o.ForwardSeconds / result.Steps:F3}+{o.BackwardSeconds / result.Steps:F3}")));
        double check = Perplexity(result.Student, test);
        Console.WriteLine($"  exported student in ONNX Runtime: test perplexity {check:F3} (engine's own figure {result.Epochs[^1].ValidationPerplexity:F3})");
        return (name, result.Epochs.Select(e => e.ValidationPerplexity!.Value).ToArray(), per);
    }

    /// <summary>
    /// The issue's pipeline as the engine runs it: Invoke-ModelPruning -Structured -Rate 0.5 (heads, hidden size and FFN
    /// neurons, magnitude scores), Invoke-Distillation with its defaults on windows of 128 tokens, then 4-bit weight-only
    /// quantization; perplexity and file size at each stage. Then the same with a recipe that keeps more of the model's
    /// function for the same file budget: half the heads and FFN neurons and a quarter of the hidden channels, scored on
    /// the calibration windows (-HeadRate 0.5 -FfnRate 0.5 -HiddenRate 0.25 -Criterion Activation -CalibrationData).
    /// </summary>
    static void Pipeline(OnnxModel teacher, DataSet test, string shared, string trainPath, int steps, int interval, double pplTeacher)
    {
        var calibration = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_calib.npz"));
        var variants = new (string Name, PruningOptions Options)[]
        {
            ("-Structured -Rate 0.5", new PruningOptions { Structured = true, Rate = 0.5 }),
            ("-Structured -HeadRate 0.5 -FfnRate 0.5 -HiddenRate 0.25 -Criterion Activation", new PruningOptions
            {
                Structured = true, HeadRate = 0.5, FfnRate = 0.5, HiddenRate = 0.25, Criterion = PruningCriterion.Activation, CalibrationData = calibration,
            }),
        };
        long tp = teacher.Initializers.Sum(TensorData.ElementCount);
        foreach (var (name, options) in variants)
        {
            var pruned = ModelPruner.Prune(teacher, options);
            long pp = pruned.Initializers.Sum(TensorData.ElementCount);
            Console.WriteLine();
            Console.WriteLine($"pipeline: Invoke-ModelPruning {name}: {pp:N0} parameters ({(double)pp / tp:F2}x), {pruned.SerializedSize / 1e6:F2} MB ({(double)pruned.SerializedSize / teacher.SerializedSize:F3}x), test perplexity {Perplexity(pruned, test):F3}");
            using var tokens = TokenStream.Open(trainPath);
            var result = Distiller.Distill(teacher, pruned, tokens, test, new DistillationOptions { SequenceLength = 128, MaxSteps = steps, ValidationInterval = interval }, p =>
            {
                if (p.Metrics is { } m) Console.WriteLine($"  pipeline: step {m.Step}: test perplexity {m.ValidationPerplexity:F3}");
            });
            double distilled = Perplexity(result.Student, test);
            Console.WriteLine($"  pipeline: Invoke-Distillation (defaults): {result.Timing.Total / result.Steps:F3} s/step; test perplexity {distilled:F3} (teacher {pplTeacher:F3}, {distilled / pplTeacher - 1:+0.0%;-0.0%})");
            var small = ModelQuantizer.Quantize(result.Student, new QuantizationOptions { Mode = QuantizationMode.WeightOnly });
            double quantized = Perplexity(small, test);
            Console.WriteLine($"  pipeline: Invoke-ModelQuantization -Mode WeightOnly: {small.SerializedSize / 1e6:F2} MB ({(double)small.SerializedSize / teacher.SerializedSize:F3}x of the teacher's file), test perplexity {quantized:F3} ({quantized / pplTeacher - 1:+0.0%;-0.0%})");
        }
    }

    /// <summary>exp(mean cross-entropy of the next byte) over the test windows, by ONNX Runtime.</summary>
    public static double Perplexity(OnnxModel model, DataSet test)
    {
        using var session = new ModelSession(model);
        var x = test.Arrays.Single(a => a.Name == "x"); var y = test.Labels!;
        int rows = (int)x.Rows, seq = (int)x.Shape[1];
        double nll = 0;
        for (int r0 = 0; r0 < rows; r0 += 32)
        {
            int n = Math.Min(32, rows - r0);
            var logits = session.Run(ModelInputs.Bind(model, new DataSet(test.Source, [x.Slice(r0, n)])))[0];
            var v = logits.AsFloat(); int vocab = (int)logits.Shape[2];
            for (int i = 0; i < n * seq; i++)
            {
                nll += Softmax.CrossEntropy(v.AsSpan(i * vocab, vocab), (int)y[(long)r0 * seq + i]);
            }
        }
        return Math.Exp(nll / ((double)rows * seq));
    }

    /// <summary>The teacher's weights by module name (MatMul weights as "blocks.0.q.w", [in, out]) and the kept heads and neurons, for the PyTorch side.</summary>
    static void ExportTask(OnnxModel teacher, TinyLmStudent.Kept kept, string file)
    {
        var g = teacher.Proto.Graph;
        var weightOf = g.Node.Where(n => n.OpType == "MatMul" && g.Initializer.Any(t => t.Name == n.Input[1]))
            .ToDictionary(n => n.Input[1], n => n.Name.Trim('/').Replace("/MatMul", "").Replace('/', '.') + ".w", StringComparer.Ordinal);
        var arrays = g.Initializer.Where(t => t.DataType == 1)
            .Select(t => new NamedArray(weightOf.GetValueOrDefault(t.Name, t.Name), t.Dims.ToArray(), TensorData.ToFloat(t))).ToList();
        for (int b = 0; b < kept.Heads.Length; b++)
        {
            arrays.Add(new NamedArray($"kept.{b}.heads", [kept.Heads[b].Length], kept.Heads[b].Select(v => (long)v).ToArray()));
            arrays.Add(new NamedArray($"kept.{b}.neurons", [kept.Neurons[b].Length], kept.Neurons[b].Select(v => (long)v).ToArray()));
        }
        Npy.WriteNpz(file, arrays);
    }

    /// <summary>Runs a PyTorch peer of bench/Distillation with <paramref name="args"/>; its "RESULT {json}" line, the rest echoed.</summary>
    internal static Dictionary<string, JsonElement>? RunTorch(string root, string script, params string[] args)
    {
        var psi = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardOutput = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(root, "bench", "Distillation", script));
        foreach (var a in args) psi.ArgumentList.Add(a);
        // Debian's OpenBLAS runs some 30 times slower with these set (they come from this machine's environment)
        psi.Environment.Remove("OPENBLAS_CORETYPE");
        psi.Environment.Remove("OPENBLAS_L2_SIZE");
        Dictionary<string, JsonElement>? result = null;
        try
        {
            using var p = Process.Start(psi)!;
            for (string? line = p.StandardOutput.ReadLine(); line is not null; line = p.StandardOutput.ReadLine())
            {
                if (line.StartsWith("RESULT ", StringComparison.Ordinal)) result = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(line[7..]);
                else Console.WriteLine("  " + line);
            }
            p.WaitForExit();
            if (p.ExitCode != 0) Console.WriteLine($"  PyTorch side exited with {p.ExitCode}");
        }
        catch (System.ComponentModel.Win32Exception e) { Console.WriteLine($"  PyTorch side not run: {e.Message}"); }
        return result;
    }

    /// <summary>The PyTorch side's figures from its RESULT line, as a row of <see cref="PrintTable"/>.</summary>
    internal static (string Name, double[] Ppl, double SecondsPerStep) PeerRow(Dictionary<string, JsonElement> peer, string recipe) =>
        ($"PyTorch {peer["torch"].GetString()}, {peer["threads"].GetInt32()} threads, {recipe}", peer["ppl"].EnumerateArray().Select(p => p.GetDouble()).ToArray(), peer["seconds_per_step"].GetDouble());

    /// <summary>The summary table: perplexity at each record and seconds per step of each side.</summary>
    internal static void PrintTable(int steps, int interval, double pplTeacher, double pplPruned, IReadOnlyList<(string Name, double[] Ppl, double SecondsPerStep)> rows)
    {
        static string F3(double v) => v.ToString("F3", CultureInfo.InvariantCulture);
        Console.WriteLine();
        Console.WriteLine($"| side | perplexity after {string.Join(" / ", Enumerable.Range(1, rows[0].Ppl.Length).Select(i => Math.Min(i * interval, steps)))} steps | s/step (teacher included) |");
        Console.WriteLine("| --- | --- | ---: |");
        Console.WriteLine($"| teacher / pruned student | {F3(pplTeacher)} / {F3(pplPruned)} | |");
        foreach (var (name, ppl, seconds) in rows) Console.WriteLine($"| {name} | {string.Join(" / ", ppl.Select(F3))} | {F3(seconds)} |");
    }

    internal static string LoadAverage() => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";
}
