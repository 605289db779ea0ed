using System.Diagnostics;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Bench;

/// <summary>
/// Pruning benchmarks. `pruning-latency [sharedRoot]`: size and latency of structured-pruned models against their
/// originals, measured interleaved in one process (tiny_bert 50% of the FFN neurons; wine_mlp at 50% and 75%).
/// (`pruning-transformers` covers heads, hidden size and depth.) `pruning-large [millionParameters]`: global 50% magnitude pruning of a generated model against copying its file.
/// </summary>
static class PruningBench
{
    public static int Latency(string[] args)
    {
        string shared = BenchSupport.SharedRoot(args, 0);
        int iterations = args.Length > 1 ? int.Parse(args[1]) : 75;
        Console.WriteLine("structured pruning: latency of original vs pruned, interleaved, ONNX Runtime CPU, 1 intra-op thread");
        Console.WriteLine($"{"model",-28} {"size MB",14} {"params",20} {"median ms",18} {"speed-up",9}");

        var bert = ModelIO.Load(Path.Combine(shared, "models", "tiny_bert.onnx"));
        var bertInputs = InputSynthesizer.Synthesize(bert, new SynthesisOptions { BatchSize = 8, DefaultDimension = 128 });
        Row("tiny_bert FFN 50% [8x128]", bert, ModelPruner.Prune(bert, new PruningOptions { Rate = 0.5, Structured = true, Targets = [PrunedPart.Ffn] }), bertInputs, iterations);

        var wine = ModelIO.Load(Path.Combine(shared, "models", "wine_mlp.onnx"));
        var data = DataSet.Load(Path.Combine(shared, "data", "wine_train.npz"));
        var rows = ModelInputs.Bind(wine, data).ToDictionary(kv => kv.Key, kv => kv.Value.Slice(0, 64));
        foreach (double rate in new[] { 0.5, 0.75 })
        {
            var pruned = ModelPruner.Prune(wine, new PruningOptions { Rate = rate, Structured = true });
            var f = ModelComparer.Compare(wine, pruned, new InputSource { Data = DataSet.Load(Path.Combine(shared, "data", "wine_test.npz")) }).Single();
            Row($"wine_mlp {rate:P0} [64 rows]", wine, pruned, rows, iterations * 20);
            Console.WriteLine($"{"",28} test accuracy {f.ReferenceAccuracy:P1} -> {f.DifferenceAccuracy:P1} (no fine-tuning)");
        }
        return 0;
    }

    static void Row(string label, OnnxModel original, OnnxModel pruned, IReadOnlyDictionary<string, NamedArray> inputs, int iterations)
    {
        var (a, b) = BenchSupport.AB(original, pruned, inputs, iterations);
        Console.WriteLine($"{label,-28} {original.SerializedSize / 1e6,6:F2} -> {pruned.SerializedSize / 1e6,5:F2} " +
            $"{Params(original),9:N0} -> {Params(pruned),9:N0} {a.P50Ms,7:F3} -> {b.P50Ms,7:F3} {1 / b.RatioToBaseline,8:F2}x [{1 / b.RatioUpper:F2}, {1 / b.RatioLower:F2}]");
    }

    static long Params(OnnxModel m) => m.Initializers.Sum(t => TensorData.ElementCount(t));

    public static int Large(string[] args)
    {
        long million = args.Length > 0 ? long.Parse(args[0]) : 105;
        const int width = 4096;
        int layers = (int)Math.Max(1, million * 1_000_000 / ((long)width * width));
        string dir = Directory.CreateTempSubdirectory("mc-bench-prune-").FullName;
        try
        {
            string source = Path.Combine(dir, "large.onnx");
            // Layers of different scales, so that a global threshold prunes them unevenly.
            long size = BenchSupport.WriteMatMulChain(source, width, layers, l => 0.02f + 0.01f * l);
            long parameters = (long)layers * width * width;
            Console.WriteLine($"model: {layers} MatMul layers of {width}x{width}, {parameters / 1e6:N1} M parameters, {size / 1e6:N0} MB");

            var copy = new List<double>(); var prune = new List<double>(); var end2end = new List<double>(); var pruneCpu = new List<double>();
            for (int i = 0; i < 3; i++)
            {
                copy.Add(BenchSupport.TimeFileCopy(source).Wall);

                var sw = Stopwatch.StartNew();
                var model = ModelIO.Load(source);
                double load = sw.Elapsed.TotalSeconds;
                var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Scope = PruningScope.Global });
                double pruneSeconds = sw.Elapsed.TotalSeconds - load;
                pruneCpu.Add((Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
                string output = Path.Combine(dir, "pruned.onnx");
                ModelIO.Save(pruned, output, new SaveOptions { Overwrite = true });
                BenchSupport.Flush(output);
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
            Console.WriteLine($"peak RSS: {BenchSupport.PeakRss() / 1e6:N0} MB");
            return 0;
        }
        finally { Directory.Delete(dir, true); }
    }
}
