using System.Globalization;
using System.Text.Json;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Distillation;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Runtime;

/// <summary>
/// Llama distillation side by side with PyTorch (issue 16's target): tiny_llama.onnx (teacher) pruned with
/// <c>Invoke-ModelPruning -Structured -HeadRate 0.5 -FfnRate 0.5</c>, then distilled with <c>Invoke-Distillation
/// -SequenceLength 128</c> and its defaults (32 windows per step of tiny_lm_train.npy, T = 4, Alpha 0.7, Adam 1e-3) for
/// 600 steps, with the test perplexity (tiny_lm_test.npz) every 200 steps. The PyTorch side
/// (bench/Distillation/torch_llama_distill.py) reads the same pruned ONNX student (head counts and FFN widths from its
/// weights), checks that it computes what ONNX Runtime computes on a few windows, and runs the same recipe on the same
/// data and steps. A student file may be given instead of pruning here (a student of either layout pruned elsewhere,
/// or bench/Distillation/prune_llama_by_hand.py's while the engine cannot prune grouped-query attention).
///   dotnet run -c Release --project bench/Distillation -- llama [steps=600] [interval=200] [threads=2] [student.onnx] [no-torch]
/// </summary>
static class LlamaBench
{
    public static void Run(string shared, string root, string[] args)
    {
        var numbers = args.Select(a => int.TryParse(a, out int v) ? v : (int?)null).Where(v => v is not null).Select(v => v!.Value).ToArray();
        int steps = numbers.ElementAtOrDefault(0) is > 0 and var s ? s : 600;
        int interval = numbers.ElementAtOrDefault(1) is > 0 and var iv ? iv : 200;
        int threads = numbers.ElementAtOrDefault(2) is > 0 and var th ? th : 2;
        string? studentPath = args.FirstOrDefault(a => a.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase));
        ModelCompression.Native.Kernels.Gemm.MaxThreads = threads;
        var teacher = ModelIO.Load(Path.Combine(shared, "models", "tiny_llama.onnx"));
        var test = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_test.npz"));
        string trainPath = Path.Combine(shared, "data", "tiny_lm_train.npy");
        OnnxModel student;
        if (studentPath is not null) student = ModelIO.Load(Path.GetFullPath(studentPath));
        else
        {
            try { student = ModelPruner.Prune(teacher, new PruningOptions { Structured = true, HeadRate = 0.5, FfnRate = 0.5 }); }
            catch (EngineException e)
            {
                Console.WriteLine($"Invoke-ModelPruning -Structured -HeadRate 0.5 -FfnRate 0.5 cannot prune tiny_llama here ({e.Message}).");
                Console.WriteLine("Give a pruned student file instead, for example: /usr/bin/python3 bench/Distillation/prune_llama_by_hand.py ../shared/models/tiny_llama.onnx student.onnx");
                return;
            }
        }
        long tp = teacher.Initializers.Sum(TensorData.ElementCount), sp = student.Initializers.Sum(TensorData.ElementCount);
        double pplTeacher = LmBench.Perplexity(teacher, test), pplPruned = LmBench.Perplexity(student, test);
        Console.WriteLine($"processors {Environment.ProcessorCount}, threads {threads}; GEMM {ModelCompression.Native.Kernels.Gemm.KernelName}; load average {LmBench.LoadAverage()}");
        Console.WriteLine($"teacher tiny_llama: {tp:N0} parameters, test perplexity {pplTeacher:F3} (ONNX Runtime)");
        Console.WriteLine($"student {studentPath ?? "-Structured -HeadRate 0.5 -FfnRate 0.5"}: {sp:N0} parameters ({(double)sp / tp:F2}x), test perplexity {pplPruned:F3}");

        string task = Directory.CreateTempSubdirectory("llama-bench-").FullName;
        try
        {
            string studentFile = Path.Combine(task, "student.onnx");
            ModelIO.Save(student, studentFile);
            WriteCheck(teacher, student, test, Path.Combine(task, "check.npz"));
            var mine = LmBench.Distil("ModelCompression, Invoke-Distillation -SequenceLength 128", teacher, student, trainPath, test,
                new DistillationOptions { SequenceLength = 128, MaxSteps = steps, ValidationInterval = interval });
            Dictionary<string, JsonElement>? peer = null;
            if (!args.Contains("no-torch"))
            {
                string I(int v) => v.ToString(CultureInfo.InvariantCulture);
                string[] peerArgs = [Path.Combine(shared, "models", "tiny_llama.onnx"), studentFile, trainPath, Path.Combine(shared, "data", "tiny_lm_test.npz"),
                    I(steps), I(interval), I(threads), "--check", Path.Combine(task, "check.npz")];
                peer = LmBench.RunTorch(root, "torch_llama_distill.py", peerArgs);
            }
            var rows = new List<(string, double[], double)> { mine };
            if (peer is not null)
                rows.Add(LmBench.PeerRow(peer, "same recipe" + (peer["same_start"].ValueKind == JsonValueKind.True ? "" : " (START DIFFERS)")));
            LmBench.PrintTable(steps, interval, pplTeacher, pplPruned, rows);
            Console.WriteLine($"load average at the end {LmBench.LoadAverage()}");
        }
        finally { Directory.Delete(task, true); }
    }

    /// <summary>Both models' logits from ONNX Runtime on two test windows, for the PyTorch side's check that it starts from the same point.</summary>
    static void WriteCheck(OnnxModel teacher, OnnxModel student, DataSet test, string file)
    {
        var x = test.Arrays.Single(a => a.Name == "x").Slice(0, 2);
        NamedArray Logits(OnnxModel model, string name)
        {
            using var session = new ModelSession(model);
            var logits = session.Run(ModelInputs.Bind(model, new DataSet(test.Source, [x])))[0];
            return new NamedArray(name, logits.Shape, logits.AsFloat());
        }
        Npy.WriteNpz(file, [x.Rename("x"), Logits(teacher, "teacher"), Logits(student, "student")]);
    }
}
