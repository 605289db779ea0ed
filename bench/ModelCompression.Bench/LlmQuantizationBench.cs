using System.Diagnostics;
using System.Globalization;
using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Bench;

/// <summary>
/// `quant-llm [sharedDir] [blocks]`: 4-bit weight-only quantization of language models.
/// <list type="bullet">
/// <item>tiny_lm (../shared/models/tiny_lm.onnx, a byte-level GPT): test perplexity on tiny_lm_test.npz of the float
/// model and of RTN, HQQ and GPTQ (calibrated on tiny_lm_calib.npz) at blocks of 32 and 128, with each run's time and
/// the mean output error of the layers on the calibration activations.</item>
/// <item>A generated LLM-shaped model (the large-model bench's residual MLP, <paramref name="blocks"/> blocks of
/// 2048x5632 + 5632x2048; 4 blocks = 92M parameters): RTN, HQQ and GPTQ times (GPTQ on 128 synthesized rows).</item>
/// <item>The kernels alone on one 2048x5632 weight (wall and CPU time per weight), and what that projects for the
/// 1.1B-parameter model of `large` (96 such weights).</item>
/// </list>
/// </summary>
static class LlmQuantizationBench
{
    public static int Run(string[] args)
    {
        string shared = BenchSupport.SharedRoot(args, 0);
        int blocks = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 4;
        TinyLm(shared);
        Generated(blocks);
        Kernels();
        return 0;
    }

    static readonly (string Name, Func<WeightOnlyAlgorithm?> Make)[] Algorithms =
    [
        ("RTN", () => null),
        ("HQQ", () => new HqqAlgorithm()),
        ("GPTQ", () => new GptqAlgorithm()),
        ("GPTQ act-order", () => new GptqAlgorithm { Settings = new GptqSettings { ActOrder = true } }),
    ];

    static void TinyLm(string shared)
    {
        var model = ModelIO.Load(Path.Combine(shared, "models", "tiny_lm.onnx"));
        var calibration = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_calib.npz"));
        var test = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_test.npz"));
        var inputs = new InputSource { Data = test, BatchSize = 64 };
        Console.WriteLine($"tiny_lm: 4-bit weight-only (the 25 weight MatMuls, symmetric), perplexity on {test.Rows} held-out windows of 128 bytes");
        double reference = double.NaN;
        foreach (int blockSize in new[] { 32, 128 })
            foreach (var (name, make) in Algorithms)
            {
                var algorithm = make();
                var sw = Stopwatch.StartNew();
                var q = ModelQuantizer.Quantize(model, new QuantizationOptions
                {
                    Mode = QuantizationMode.WeightOnly, BlockSize = blockSize, Algorithm = algorithm, CalibrationData = calibration,
                });
                double seconds = sw.Elapsed.TotalSeconds;
                var o = ModelComparer.Compare(model, q, inputs).Single();
                if (double.IsNaN(reference))
                {
                    reference = o.ReferencePerplexity!.Value;
                    Console.WriteLine($"  float32: perplexity {reference:F4}, token accuracy {o.ReferenceAccuracy:P2}");
                }
                Console.WriteLine($"  block {blockSize,3} {name,-15} perplexity {o.DifferencePerplexity:F4} (+{o.PerplexityIncrease:F3} %), token accuracy {o.DifferenceAccuracy:P2}, " +
                                  $"layer output error {q.Report!.Metrics["ReconstructionErrorMean"]:P2} mean on the calibration activations; {seconds:F2} s with calibration");
            }
    }

    static void Generated(int blocks)
    {
        string dir = Directory.CreateTempSubdirectory("mc-bench-llm-").FullName;
        try
        {
            string path = Path.Combine(dir, "llm.onnx");
            long parameters = LargeModelBench.WriteResidualMlp(path, blocks, DT.Float);
            var model = ModelIO.Load(path);
            var rng = new Random(5);
            var x = new float[128 * 2048];
            for (int i = 0; i < x.Length; i++) x[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
            var calibration = new DataSet("synthesized", [new NamedArray("x", [128, 2048], x)]);
            Console.WriteLine($"generated: {blocks} residual blocks of 2048x5632 + 5632x2048 MatMuls, {parameters / 1e6:F1}M parameters (float32, external data); calibration: 128 synthesized rows");
            foreach (var (name, make) in Algorithms.Take(3))
            {
                var cpu = Process.GetCurrentProcess().TotalProcessorTime;
                var sw = Stopwatch.StartNew();
                var algorithm = make();
                var q = ModelQuantizer.Quantize(model, new QuantizationOptions
                {
                    Mode = QuantizationMode.WeightOnly, BlockSize = 32, Algorithm = algorithm, CalibrationData = algorithm is GptqAlgorithm ? calibration : null,
                });
                Console.WriteLine($"  {name,-5} block 32: {sw.Elapsed.TotalSeconds,6:F2} s wall, {(Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds,6:F2} s CPU" +
                                  (q.Report!.Metrics.TryGetValue("ReconstructionErrorMean", out double e) ? $"; layer output error {e:P2} mean" : ""));
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    static void Kernels()
    {
        const int k = 2048, n = 5632;
        var rng = new Random(1);
        var w = new float[k * n];
        for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() - 0.5) * 0.05f;
        Console.WriteLine($"kernels on one {k}x{n} weight (best of 3; the 1.1B model of `large` has 96 such weights), {Environment.ProcessorCount} cores:");
        foreach (var (name, run) in new (string, Action)[]
        {
            ("RTN block 32", () => RoundToNearest.Quantize(w, k, n, 4, 32, true).PackedCodes()),
            ("HQQ block 32", () => Hqq.Quantize(w, k, n, 4, 32, new HqqSettings(), symmetric: true).PackedCodes()),
            ("HQQ block 128", () => Hqq.Quantize(w, k, n, 4, 128, new HqqSettings(), symmetric: true).PackedCodes()),
        })
        {
            double wall = double.MaxValue, cpu = double.MaxValue;
            for (int i = 0; i < 3; i++)
            {
                var c0 = Process.GetCurrentProcess().TotalProcessorTime;
                var sw = Stopwatch.StartNew();
                run();
                wall = Math.Min(wall, sw.Elapsed.TotalSeconds);
                cpu = Math.Min(cpu, (Process.GetCurrentProcess().TotalProcessorTime - c0).TotalSeconds);
            }
            Console.WriteLine($"  {name,-14} {wall * 1e3,7:F1} ms wall, {cpu * 1e3,7:F1} ms CPU ({(double)k * n / cpu / 1e6,6:F0}M weights per CPU second); x96: {96 * wall,5:F1} s wall, {96 * cpu,5:F1} s CPU");
        }
    }
}
