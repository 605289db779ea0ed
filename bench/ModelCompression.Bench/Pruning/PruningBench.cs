using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Bench;

/// <summary>
/// Pruning benchmarks. `pruning-latency [sharedRoot]`: size and latency of structured-pruned models against their
/// originals, measured interleaved in one process (tiny_bert 50% of the FFN neurons; wine_mlp at 50% and 75%).
/// `pruning-large [millionParameters]`: global 50% magnitude pruning of a generated model against copying its file.
/// </summary>
static class PruningBench
{
    public static int Latency(string[] args)
    {
        string shared = args.Length > 0 ? args[0] : Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "../../../../../../shared"));
        int rounds = args.Length > 1 ? int.Parse(args[1]) : 15;
        Console.WriteLine("structured pruning: latency of original vs pruned, interleaved, ONNX Runtime CPU, 1 intra-op thread");
        Console.WriteLine($"{"model",-28} {"size MB",14} {"params",20} {"median ms",18} {"speed-up",9}");

        var bert = ModelIO.Load(Path.Combine(shared, "models", "tiny_bert.onnx"));
        var bertInputs = InputSynthesizer.Synthesize(bert, new SynthesisOptions { BatchSize = 8, DefaultDimension = 128 });
        Row("tiny_bert FFN 50% [8x128]", bert, ModelPruner.Prune(bert, new PruningOptions { Rate = 0.5, Structured = true }), bertInputs, rounds);

        var wine = ModelIO.Load(Path.Combine(shared, "models", "wine_mlp.onnx"));
        var data = DataSet.Load(Path.Combine(shared, "data", "wine_train.npz"));
        var rows = data.MapToInputs(InputSynthesizer.Inputs(wine)).ToDictionary(kv => kv.Key, kv => kv.Value.Slice(0, 64));
        foreach (double rate in new[] { 0.5, 0.75 })
        {
            var pruned = ModelPruner.Prune(wine, new PruningOptions { Rate = rate, Structured = true });
            var f = ModelComparer.Compare(wine, pruned, new ComparisonInputs { Data = DataSet.Load(Path.Combine(shared, "data", "wine_test.npz")) }).Single();
            Row($"wine_mlp {rate:P0} [64 rows]", wine, pruned, rows, rounds * 10);
            Console.WriteLine($"{"",28} test accuracy {f.ReferenceAccuracy:P1} -> {f.DifferenceAccuracy:P1} (no fine-tuning)");
        }
        return 0;
    }

    static void Row(string label, OnnxModel original, OnnxModel pruned, IReadOnlyDictionary<string, NamedArray> inputs, int rounds)
    {
        var (a, b) = Interleaved(original, pruned, inputs, rounds);
        Console.WriteLine($"{label,-28} {original.SerializedSize / 1e6,6:F2} -> {pruned.SerializedSize / 1e6,5:F2} " +
            $"{Params(original),9:N0} -> {Params(pruned),9:N0} {a,7:F3} -> {b,7:F3} {a / b,8:F2}x");
    }

    static long Params(OnnxModel m) => m.Initializers.Sum(t => TensorData.ElementCount(t));

    /// <summary>Median milliseconds per run of each model; runs alternate A, B, A, B in blocks so drift hits both alike.</summary>
    static (double A, double B) Interleaved(OnnxModel first, OnnxModel second, IReadOnlyDictionary<string, NamedArray> inputs, int rounds)
    {
        var settings = new SessionSettings { IntraOpThreads = 1, InterOpThreads = 1 };
        using var a = new ModelSession(first, settings);
        using var b = new ModelSession(second, settings);
        var names = inputs.Keys.ToList();
        var values = names.Select(n => ModelSession.ToOrtValue(inputs[n])).ToList();
        using var run = new RunOptions();
        try
        {
            for (int i = 0; i < 5; i++) { a.RunDiscard(names, values, run); b.RunDiscard(names, values, run); }
            var ta = new List<double>(); var tb = new List<double>();
            var sw = new Stopwatch();
            for (int r = 0; r < rounds; r++)
                for (int k = 0; k < 2; k++)
                {
                    var (session, list) = (r + k) % 2 == 0 ? (a, ta) : (b, tb);
                    sw.Restart();
                    for (int j = 0; j < 5; j++) session.RunDiscard(names, values, run);
                    list.Add(sw.Elapsed.TotalMilliseconds / 5);
                }
            return (Median(ta), Median(tb));
        }
        finally { foreach (var v in values) v.Dispose(); }
    }

    static double Median(List<double> v)
    {
        v.Sort();
        return v.Count % 2 == 1 ? v[v.Count / 2] : (v[v.Count / 2 - 1] + v[v.Count / 2]) / 2;
    }

    public static int Large(string[] args)
    {
        long million = args.Length > 0 ? long.Parse(args[0]) : 105;
        const int width = 4096;
        int layers = (int)Math.Max(1, million * 1_000_000 / ((long)width * width));
        string dir = Directory.CreateTempSubdirectory("mc-bench-prune-").FullName;
        try
        {
            string source = Path.Combine(dir, "large.onnx");
            var b = new GraphBuilder("large").Input("x", DT.Float, "batch", width).Output("y", DT.Float, "batch", width);
            var rng = new Random(1);
            var w = new float[width * width];
            string x = "x";
            for (int l = 0; l < layers; l++)
            {
                for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() - 0.5) * (0.02f + 0.01f * l);
                x = b.Node("MatMul", [x, b.Initializer($"w{l}", [width, width], w)], l == layers - 1 ? ["y"] : null);
            }
            ModelIO.Save(b.BuildModel(), source, new SaveOptions { Overwrite = true });
            long size = new FileInfo(source).Length;
            long parameters = (long)layers * width * width;
            Console.WriteLine($"model: {layers} MatMul layers of {width}x{width}, {parameters / 1e6:N1} M parameters, {size / 1e6:N0} MB");

            var copy = new List<double>(); var prune = new List<double>(); var end2end = new List<double>(); var pruneCpu = new List<double>();
            for (int i = 0; i < 3; i++)
            {
                string target = Path.Combine(dir, "copy.onnx");
                var sw = Stopwatch.StartNew();
                File.Copy(source, target, overwrite: true);
                using (var fs = new FileStream(target, FileMode.Open)) fs.Flush(flushToDisk: true);
                copy.Add(sw.Elapsed.TotalSeconds);
                File.Delete(target);

                sw.Restart();
                var model = ModelIO.Load(source);
                double load = sw.Elapsed.TotalSeconds;
                var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Scope = PruningScope.Global });
                double pruneSeconds = sw.Elapsed.TotalSeconds - load;
                pruneCpu.Add((Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
                string output = Path.Combine(dir, "pruned.onnx");
                ModelIO.Save(pruned, output, new SaveOptions { Overwrite = true });
                using (var fs = new FileStream(output, FileMode.Open)) fs.Flush(flushToDisk: true);
                end2end.Add(sw.Elapsed.TotalSeconds);
                prune.Add(pruneSeconds);
                if (i == 0) Console.WriteLine($"  sparsity reached: {pruned.Report!.Metrics["Sparsity"]:P3}");
                File.Delete(output);
                model = null; pruned = null;
                GC.Collect();
            }
            double c = copy.Min(), p = prune.Min(), e = end2end.Min();
            Console.WriteLine($"file copy (+fsync):                 {c:F2} s (best of 3)");
            Console.WriteLine($"global magnitude 50%, in memory:    {p:F2} s (best of 3)   ratio to copy {p / c:F2}x");
            Console.WriteLine($"  CPU time of that pruning:         {pruneCpu.Min():F2} s (the machine is shared: wall time includes waiting for a core)");
            Console.WriteLine($"load + prune + save (+fsync):       {e:F2} s (best of 3)   ratio to copy {e / c:F2}x");
            Console.WriteLine($"peak RSS: {RoundTripBench.PeakRss() / 1e6:N0} MB");
            return 0;
        }
        finally { Directory.Delete(dir, true); }
    }
}
