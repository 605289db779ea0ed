using System.Diagnostics;
using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Bench;

/// <summary>
/// `pruning-transformers [sharedRoot] [iterations]`: structured pruning of the shared transformers, each variant against
/// its original in one process: file size, parameters, latency (interleaved, ONNX Runtime CPU, one intra-op thread;
/// tiny_lm at batch 1 x 128 tokens, tiny_bert at 8 x 128) with the interval of the ratio, and for tiny_lm the test
/// perplexity before any distillation (exp of the mean cross-entropy of the logits against the next byte, over all 256
/// windows of tiny_lm_test.npz; a bench-local helper until Compare-Model reports perplexity).
/// </summary>
static class TransformerPruningBench
{
    public static int Run(string[] args)
    {
        string shared = BenchSupport.SharedRoot(args, 0);
        int iterations = args.Length > 1 ? int.Parse(args[1]) : 60;
        string Model(string name) => Path.Combine(shared, "models", name);
        var calibration = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_calib.npz"));
        var test = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_test.npz"));
        Console.WriteLine($"structured pruning of transformers; latency interleaved against the original, ONNX Runtime CPU, 1 intra-op thread, {iterations} runs each");
        Console.WriteLine($"{"variant",-44} {"size MB",15} {"ratio",6} {"params",21} {"median ms",17} {"latency ratio",22} {"prune s",7} {"perplexity",10}");

        var lm = ModelIO.Load(Model("tiny_lm.onnx"));
        var lmInputs = InputSynthesizer.Synthesize(lm, new SynthesisOptions { BatchSize = 1, DefaultDimension = 128 });
        Console.WriteLine($"tiny_lm [1x128], test perplexity of the original {Perplexity(lm, test):F3}");
        var act = new PruningOptions { Structured = true, Criterion = PruningCriterion.Activation, CalibrationData = calibration };
        (string, PruningOptions)[] lmVariants =
        [
            ("50% heads+FFN, magnitude (the peer's recipe)", new() { Structured = true, Rate = 0.5, Targets = [PrunedPart.Heads, PrunedPart.Ffn] }),
            ("50% heads+FFN, activation", act with { Rate = 0.5, Targets = [PrunedPart.Heads, PrunedPart.Ffn] }),
            ("50% heads, FFN, hidden, magnitude", new() { Structured = true, Rate = 0.5 }),
            ("50% heads, FFN, hidden, activation", act with { Rate = 0.5 }),
            ("50% heads+FFN, 25% hidden, activation", act with { Rate = 0.5, HiddenRate = 0.25 }),
            ("50% hidden only, activation", act with { Rate = 0.5, Targets = [PrunedPart.Hidden] }),
            ("1 block removed (calibration cosine)", new() { RemoveBlocks = 1, CalibrationData = calibration }),
        ];
        foreach (var (label, options) in lmVariants) Row(label, lm, options, lmInputs, iterations, test);

        var bert = ModelIO.Load(Model("tiny_bert.onnx"));
        var bertInputs = InputSynthesizer.Synthesize(bert, new SynthesisOptions { BatchSize = 8, DefaultDimension = 128 });
        Console.WriteLine("tiny_bert [8x128]");
        (string, PruningOptions)[] bertVariants =
        [
            ("50% FFN only (before heads and hidden)", new() { Structured = true, Rate = 0.5, Targets = [PrunedPart.Ffn] }),
            ("50% heads, FFN, hidden, magnitude", new() { Structured = true, Rate = 0.5 }),
        ];
        foreach (var (label, options) in bertVariants) Row(label, bert, options, bertInputs, iterations / 4, null);
        var same = ModelPruner.Prune(bert, new PruningOptions { Structured = true, Rate = 0 });
        var f = ModelComparer.Compare(bert, same, new InputSource { Synthesis = new SynthesisOptions { DefaultDimension = 128 }, SyntheticBatches = 2 }).Single();
        Console.WriteLine($"tiny_bert rate 0: graph unchanged {same.Proto.Graph.Equals(bert.Proto.Graph)}, max abs output difference {f.MaxAbsError}");
        return 0;
    }

    static void Row(string label, OnnxModel original, PruningOptions options, IReadOnlyDictionary<string, NamedArray> inputs, int iterations, DataSet? test)
    {
        var sw = Stopwatch.StartNew();
        var pruned = ModelPruner.Prune(original, options);
        double seconds = sw.Elapsed.TotalSeconds;
        var (a, b) = BenchSupport.AB(original, pruned, inputs, iterations);
        string perplexity = test is null ? "" : Perplexity(pruned, test).ToString("F2");
        Console.WriteLine($"{label,-44} {original.SerializedSize / 1e6,6:F2} -> {pruned.SerializedSize / 1e6,5:F2} {(double)pruned.SerializedSize / original.SerializedSize,6:F3} " +
            $"{Params(original),9:N0} -> {Params(pruned),9:N0} {a.P50Ms,7:F2} -> {b.P50Ms,6:F2} {b.RatioToBaseline,8:F3}x [{b.RatioLower:F3}, {b.RatioUpper:F3}] {seconds,7:F1} {perplexity,10}");
    }

    static long Params(OnnxModel m) => m.Initializers.Sum(t => TensorData.ElementCount(t));

    /// <summary>exp(mean cross-entropy) of logits [batch, seq, vocabulary] against the next-token labels y [batch, seq].</summary>
    static double Perplexity(OnnxModel model, DataSet data)
    {
        var x = data.Arrays.Single(a => a.Name == "x");
        var y = data.Arrays.Single(a => a.Name == "y").AsInt64();
        using var session = new ModelSession(model);
        double nll = 0;
        long count = 0;
        for (long start = 0; start < x.Rows; start += 32)
        {
            var batch = x.Slice(start, Math.Min(32, x.Rows - start));
            var logits = session.Run(new Dictionary<string, NamedArray> { [session.Model.Proto.Graph.Input[0].Name] = batch })[0];
            int vocabulary = (int)logits.Shape[^1];
            var values = logits.AsFloat();
            long offset = start * x.Shape[1];
            for (long i = 0; i < values.Length / vocabulary; i++)
            {
                nll += Softmax.CrossEntropy(values.AsSpan((int)(i * vocabulary), vocabulary), (int)y[offset + i]);
                count++;
            }
        }
        return Math.Exp(nll / count);
    }
}
