using System.Diagnostics;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Bench;

/// <summary>
/// `pruning-llama [sharedRoot] [iterations]`: structured pruning of the shared tiny_llama (grouped-query attention 8/2,
/// rotary, RMSNorm, SwiGLU) in both layouts, each variant against the original in one process: file size and ratio,
/// query / key-value heads and FFN kept, the cache's bytes per token, test perplexity before any distillation (all 256
/// windows of tiny_lm_test.npz, through Compare-Model's engine), latency (interleaved, ONNX Runtime CPU, one intra-op
/// thread, batch 1 x 128 tokens, the cache empty), and whether the plain and the cache layout pruned alike agree (max
/// abs of the logits, perplexities).
/// </summary>
static class LlamaPruningBench
{
    public static int Run(string[] args)
    {
        string shared = BenchSupport.SharedRoot(args, 0);
        int iterations = args.Length > 1 ? int.Parse(args[1]) : 60;
        var plain = ModelIO.Load(Path.Combine(shared, "models", "tiny_llama.onnx"));
        var cached = ModelIO.Load(Path.Combine(shared, "models", "tiny_llama_kv.onnx"));
        var calibration = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_calib.npz"));
        var test = new InputSource { Data = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_test.npz")), BatchSize = 32 };
        var inputs = InputSynthesizer.Synthesize(plain, new SynthesisOptions { BatchSize = 1, DefaultDimension = 128 });
        Console.WriteLine($"structured pruning of tiny_llama; latency interleaved against the original, ONNX Runtime CPU, 1 intra-op thread, {iterations} runs each, [1x128]");
        Console.WriteLine($"{"variant",-44} {"size MB",15} {"ratio",6} {"heads q/kv",10} {"FFN",5} {"cache B/tok",13} {"perplexity",16} {"latency ratio",22} {"prune s",7} {"layouts agree",24}");
        var act = new PruningOptions { Structured = true, Criterion = PruningCriterion.Activation, CalibrationData = calibration };
        (string, PruningOptions)[] variants =
        [
            ("-Rate 0.5 (heads, hidden, FFN)", new() { Structured = true, Rate = 0.5 }),
            ("-Rate 0.5, activation", act with { Rate = 0.5 }),
            ("-HeadRate 0.5 -FfnRate 0.5 (distil recipe)", new() { Structured = true, HeadRate = 0.5, FfnRate = 0.5 }),
            ("-HeadRate 0.5 -FfnRate 0.5, activation", act with { HeadRate = 0.5, FfnRate = 0.5 }),
            ("-KeyValueHeadRate 0.5 (cache halves)", new() { Structured = true, KeyValueHeadRate = 0.5 }),
            ("-KeyValueHeadRate 0.5, activation", act with { KeyValueHeadRate = 0.5 }),
            ("-RemoveBlocks 1 (calibration cosine)", new() { RemoveBlocks = 1, CalibrationData = calibration }),
        ];
        foreach (var (label, options) in variants) Row(label, plain, cached, options, inputs, iterations, test);
        return 0;
    }

    static void Row(string label, OnnxModel plain, OnnxModel cached, PruningOptions options, IReadOnlyDictionary<string, NamedArray> inputs, int iterations, InputSource test)
    {
        var sw = Stopwatch.StartNew();
        var pruned = ModelPruner.Prune(plain, options);
        double seconds = sw.Elapsed.TotalSeconds;
        var prunedCache = ModelPruner.Prune(cached, options);
        var fidelity = ModelComparer.Compare(plain, pruned, test).Single();
        var layouts = ModelComparer.Compare(pruned, prunedCache, test).Single();
        var (_, b) = BenchSupport.AB(plain, pruned, inputs, iterations);
        var m = prunedCache.Report!.Metrics;
        string heads = m.TryGetValue("HeadsAfter", out double h) ? $"{h / 4:0}/{m["KeyValueHeadsAfter"] / 4:0}" : "8/2";
        string ffn = m.TryGetValue("FfnAfter", out double f) ? $"{f / 4:0}" : "688";
        Console.WriteLine($"{label,-44} {plain.SerializedSize / 1e6,6:F2} -> {pruned.SerializedSize / 1e6,5:F2} {(double)pruned.SerializedSize / plain.SerializedSize,6:F3} " +
            $"{heads,10} {ffn,5} {m["CacheBytesPerTokenBefore"],5:0} -> {m["CacheBytesPerTokenAfter"],5:0} {fidelity.ReferencePerplexity,6:F2} -> {fidelity.DifferencePerplexity,6:F2} " +
            $"{b.RatioToBaseline,8:F3}x [{b.RatioLower:F3}, {b.RatioUpper:F3}] {seconds,7:F1} " +
            $"max abs {layouts.MaxAbsError:E1}, ppl {Math.Abs(layouts.ReferencePerplexity!.Value - layouts.DifferencePerplexity!.Value):E1}");
    }
}
