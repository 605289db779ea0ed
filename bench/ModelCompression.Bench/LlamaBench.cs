using System.Diagnostics;
using System.Globalization;
using ModelCompression.Engine.Tests;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime.Generation;

namespace ModelCompression.Bench;

/// <summary>
/// Language models as users have them, judged by generation.
/// `llama [layers] [stage,...]`: a generated Llama-layout model with a KV cache in ONNX Runtime GenAI's builder layout
/// (grouped-query attention 32/8 heads of 64, SwiGLU 8192, hidden 2048, vocabulary 32000, 16 layers: 1.1B parameters,
/// 4.4 GB of float32 in one external data file, random weights, with its genai_config.json). Stages run in child
/// processes, so each one's time and peak resident memory are its own: float32 generation, 4-bit RTN (time as a ratio
/// to copying the data file), 4-bit generation, ONNX Runtime GenAI on the 4-bit folder, and 4-bit GPTQ and AWQ on 64
/// windows of 128 random tokens (the model runs in segments; target <= 20x the copy, <= 1.5 GB resident). Generation is greedy with
/// the cache, prompt 128 and 128 new tokens, through Measure-ModelLatency -Generate's engine.
/// `llama-tiny [shared]`: tiny_llama as a GenAI folder, the module's own loop against ONNX Runtime GenAI on the same
/// model (tokens and tokens per second).
/// </summary>
static class LlamaBench
{
    static readonly LlamaConfig Large = new(16, 2048, 32, 8, 64, 8192, 32000, MaxPositions: 4096);

    public static int Run(string[] args)
    {
        int layers = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : Large.Layers;
        var only = args.Length > 1 ? args[1].Split(',') : null;
        var config = Large with { Layers = layers };
        string dir = Directory.CreateTempSubdirectory("mc-bench-llama-").FullName;
        try
        {
            string folder = Path.Combine(dir, "float32");
            Directory.CreateDirectory(folder);
            var sw = Stopwatch.StartNew();
            long parameters = LlamaModels.WriteRandom(Path.Combine(folder, "model.onnx"), config);
            string data = Path.Combine(folder, "model.onnx.data");
            Console.WriteLine($"model: Llama layout, {config.Layers} layers, hidden {config.Hidden}, {config.Heads}/{config.KeyValueHeads} heads of {config.HeadSize}, " +
                $"FFN {config.Ffn}, vocabulary {config.Vocabulary}: {parameters / 1e9:F2}B parameters, {new FileInfo(data).Length / 1e9:F2} GB float32 (generated in {sw.Elapsed.TotalSeconds:F0} s)");
            double copy = Enumerable.Range(0, 2).Min(_ => BenchSupport.TimeFileCopy(data).Wall);
            Console.WriteLine($"  file copy of the data (+fsync): {copy:F2} s (best of 2)");
            string q4 = Path.Combine(dir, "int4");
            var stages = new (string Name, Func<string[]> Args)[]
            {
                ("float32", () => ["generate", folder, "OnnxRuntime"]),
                ("rtn", () => ["quantize", folder, q4, "rtn"]),
                ("int4", () => ["generate", q4, "OnnxRuntime"]),
                ("int4-genai", () => ["generate", q4, "GenAI"]),
                // ONNX Runtime's MatMulNBits with accuracy_level 4: activations quantized to int8 per block (VNNI).
                ("rtn-level4", () => ["quantize", folder, q4 + "-level4", "rtn", "4"]),
                ("int4-level4", () => ["generate", q4 + "-level4", "OnnxRuntime"]),
                ("int4-level4-genai", () => ["generate", q4 + "-level4", "GenAI"]),
                ("gptq", () => ["quantize", folder, Path.Combine(dir, "gptq"), "gptq"]),
                ("awq", () => ["quantize", folder, Path.Combine(dir, "awq"), "awq"]),
            };
            var generation = new Dictionary<string, (double TokensPerSecond, long Peak)>();
            foreach (var (name, make) in stages)
            {
                if (only is not null && !only.Contains(name)) continue;
                var parts = BenchSupport.RunChild(["llama-child", .. make()]).Split(' ', 4);
                if (parts[0] == "refused") { Console.WriteLine($"  {name,-11} refused: {string.Join(' ', parts[1..])}"); continue; }
                double wall = double.Parse(parts[0], CultureInfo.InvariantCulture);
                long peak = long.Parse(parts[1], CultureInfo.InvariantCulture);
                string detail = parts.Length > 3 ? parts[3] : "";
                if (detail.StartsWith("tps=", StringComparison.Ordinal))
                    generation[name] = (double.Parse(detail[4..detail.IndexOf(' ')], CultureInfo.InvariantCulture), peak);
                Console.WriteLine($"  {name,-11} {wall,8:F1} s {wall / copy,7:F1}x copy  peak RSS {peak / 1e9,5:F2} GB  {detail}");
            }
            if (generation.TryGetValue("float32", out var f) && generation.TryGetValue("int4", out var q))
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  4-bit vs float32: decode tokens/s {q.TokensPerSecond / f.TokensPerSecond:F2}x (target >= 3x), peak memory {(double)q.Peak / f.Peak:F2}x (target <= 0.3x)"));
            if (generation.TryGetValue("float32", out f) && generation.TryGetValue("int4-level4", out q))
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  4-bit (accuracy_level 4) vs float32: decode tokens/s {q.TokensPerSecond / f.TokensPerSecond:F2}x, peak memory {(double)q.Peak / f.Peak:F2}x"));
            foreach (var variant in new[] { "int4", "int4-level4" })
                if (generation.TryGetValue(variant, out var ours) && generation.TryGetValue(variant + "-genai", out var genai))
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  module loop vs ONNX Runtime GenAI on {variant}: tokens/s {ours.TokensPerSecond / genai.TokensPerSecond:F2}x"));
            return 0;
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>Child: one stage; prints "wall peakRss cpu detail".</summary>
    public static int Child(string[] args)
    {
        var sw = Stopwatch.StartNew();
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        string detail;
        try
        {
            var model = ModelIO.Load(args[1]);
            detail = args[0] switch
            {
                "generate" => Generate(model, Enum.Parse<GenerationEngine>(args[2])),
                "quantize" => Quantize(model, args[2], args[3], args.Length > 4 ? int.Parse(args[4], CultureInfo.InvariantCulture) : null),
                _ => throw new ArgumentException("unknown stage " + args[0]),
            };
        }
        catch (ModelCompression.Native.EngineException e)
        {
            Console.WriteLine($"refused {e.ErrorId}: {e.Message}");
            return 0;
        }
        double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{sw.Elapsed.TotalSeconds:R} {BenchSupport.PeakRss()} {cpuSeconds:R} {detail}"));
        return 0;
    }

    static string Generate(OnnxModel model, GenerationEngine engine)
    {
        var r = GenerationMeter.Measure([model], null, new GenerationMeasureOptions
        {
            Generation = new GenerationSettings { PromptLength = 128, NewTokens = 128, Engine = engine },
            Warmup = 1, Runs = 2,
        }).Single();
        return string.Create(CultureInfo.InvariantCulture,
            $"tps={r.TokensPerSecond:F2} first token {r.TimeToFirstTokenMs:F0} ms, decode P50 {r.DecodeP50Ms:F1} ms P90 {r.DecodeP90Ms:F1} ms ({r.Engine}, {r.Runs} runs of 128+128)");
    }

    static string Quantize(OnnxModel model, string target, string algorithm, int? accuracyLevel)
    {
        var options = new QuantizationOptions
        {
            Mode = QuantizationMode.WeightOnly, Bits = 4, BlockSize = 32, AccuracyLevel = accuracyLevel,
            Algorithm = WeightOnlyAlgorithms.Create([algorithm]),
        };
        if (algorithm is "gptq" or "awq")
            options = options with { CalibrationData = RandomTokens(64, 128, 32000) };
        var q = ModelQuantizer.Quantize(model, options);
        var saved = model.Folder!.Export(q, target, new SaveOptions { Overwrite = true });
        long bytes = new FileInfo(saved.ModelPath).Length + (saved.DataPath is null ? 0 : new FileInfo(saved.DataPath).Length);
        return $"wrote {bytes / 1e9:F2} GB ({algorithm}, 4-bit, block 32{(accuracyLevel is { } l ? $", accuracy_level {l}" : "")})";
    }

    static DataSet RandomTokens(int rows, int length, int vocabulary)
    {
        var rng = new Random(7);
        var ids = new long[rows * length];
        for (int i = 0; i < ids.Length; i++) ids[i] = rng.Next(vocabulary);
        return new DataSet("random tokens", [new NamedArray("input_ids", [rows, length], ids)]);
    }

    /// <summary>tiny_llama's GenAI folder: the module's own loop and ONNX Runtime GenAI on the same model.</summary>
    public static int Tiny(string[] args)
    {
        string shared = BenchSupport.SharedRoot(args, 0);
        var folder = ModelIO.Load(Path.Combine(shared, "models", "tiny_llama_genai"));
        var test = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_test.npz"));
        var settings = new GenerationSettings { PromptLength = 32, NewTokens = 128, Data = test };
        foreach (var engine in new[] { GenerationEngine.OnnxRuntime, GenerationEngine.GenAI, GenerationEngine.OnnxRuntime, GenerationEngine.GenAI })
        {
            var r = GenerationMeter.Measure([folder], null, new GenerationMeasureOptions { Generation = settings with { Engine = engine }, Warmup = 2, Runs = 10 }).Single();
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {engine,-11} {r.TokensPerSecond,8:F0} tokens/s decode, P50 {r.DecodeP50Ms:F3} ms/token, first token {r.TimeToFirstTokenMs:F2} ms, end to end {r.EndToEndTokensPerSecond:F0} tokens/s"));
        }
        using var ours = new OrtGreedyGenerator(folder);
        using var genai = new GenAiGenerator(folder);
        var prompts = Prompts.Make(folder, settings, 16);
        int same = prompts.Count(p => ours.Generate(p, 128).Tokens.SequenceEqual(genai.Generate(p, 128).Tokens));
        Console.WriteLine($"  identical greedy continuations: {same} of {prompts.Count} (128 tokens each)");
        return 0;
    }
}
