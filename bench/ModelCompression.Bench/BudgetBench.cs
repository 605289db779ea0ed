using System.Diagnostics;
using System.Globalization;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Bench;

/// <summary>
/// `quant-budget [sharedDir] [models] [budgets] [validationWindows] [search]`: the smallest model within a perplexity budget (issue 17), on tiny_lm
/// and tiny_llama. Calibration: tiny_lm_calib.npz. Validation (what the search measures on): 64 windows of 128 tokens
/// from the end of tiny_lm_train.npy, which calibration does not use. Test: tiny_lm_test.npz, 256 windows. The table of
/// uniform settings (4-bit in blocks of 32, 64 and 128 with RTN, HQQ, GPTQ and AWQ, and 8-bit; each with the output head
/// quantized or kept float) is measured on the test set, then for each budget the searched model's test figure, its
/// size, the smallest uniform setting that meets the same budget on the test set, and the search's time against one
/// GPTQ quantization.
/// </summary>
static class BudgetBench
{
    public static int Run(string[] args)
    {
        string shared = BenchSupport.SharedRoot(args, 0);
        var models = args.Length > 1 ? args[1].Split(',') : ["tiny_lm", "tiny_llama"];
        var budgets = args.Length > 2 ? args[2].Split(',').Select(b => double.Parse(b, CultureInfo.InvariantCulture)).ToArray() : [0.1, 0.25, 1];
        var calibration = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_calib.npz"));
        var test = DataSet.Load(Path.Combine(shared, "data", "tiny_lm_test.npz"));
        var validation = Windows(Path.Combine(shared, "data", "tiny_lm_train.npy"), args.Length > 3 ? int.Parse(args[3], CultureInfo.InvariantCulture) : 64, 128);
        bool searchOnly = args.Length > 4 && args[4] == "search";
        foreach (var name in models) RunModel(ModelIO.Load(Path.Combine(shared, "models", name + ".onnx")), name, calibration, validation, test, budgets, searchOnly);
        return 0;
    }

    /// <summary><paramref name="count"/> windows of <paramref name="length"/> tokens from the end of a token file, with the next token of each position as the label.</summary>
    internal static DataSet Windows(string path, int count, int length)
    {
        using var stream = TokenStream.Open(path);
        var x = new long[count * length];
        var y = new long[count * length];
        var window = new long[length + 1];
        for (int i = 0; i < count; i++)
        {
            stream.CopyWindow(stream.Length - (long)(count - i) * (length + 1), window);
            window.AsSpan(0, length).CopyTo(x.AsSpan(i * length));
            window.AsSpan(1, length).CopyTo(y.AsSpan(i * length));
        }
        return new DataSet($"{Path.GetFileName(path)} (last {count} windows)", [new NamedArray("x", [count, length], x), new NamedArray("y", [count, length], y)]);
    }

    sealed record Setting(string Name, long Size, double TestIncrease);

    static void RunModel(OnnxModel model, string name, DataSet calibration, DataSet validation, DataSet test, double[] budgets, bool searchOnly)
    {
        double Increase(OnnxModel q) => ModelComparer.Compare(model, q, new InputSource { Data = test, BatchSize = 64 }).Single().PerplexityRise!.Value * 100;
        ModelQuantizer.Quantize(model, Uniform(4, 128, new GptqAlgorithm(), calibration, floatHead: false)); // warm-up: the first run pays the JIT and ONNX Runtime's start
        var sw = Stopwatch.StartNew();
        ModelQuantizer.Quantize(model, Uniform(4, 128, new GptqAlgorithm(), calibration, floatHead: false));
        double gptqSeconds = sw.Elapsed.TotalSeconds;
        Console.WriteLine($"{name}: float file {model.SerializedSize:N0} bytes; one GPTQ quantization (4-bit, block 128, with calibration) {gptqSeconds:F2} s");
        var uniform = new List<Setting>();
        foreach (bool floatHead in searchOnly ? [] : new[] { false, true })
        {
            foreach (int block in new[] { 32, 64, 128 })
                foreach (var (algorithm, make) in Algorithms)
                {
                    var q = ModelQuantizer.Quantize(model, Uniform(4, block, make(), calibration, floatHead));
                    uniform.Add(new Setting($"4-bit/{block} {algorithm}{(floatHead ? ", float head" : "")}", q.SerializedSize, Increase(q)));
                }
            var eight = ModelQuantizer.Quantize(model, Uniform(8, 128, null, calibration, floatHead));
            uniform.Add(new Setting($"8-bit/128 RTN{(floatHead ? ", float head" : "")}", eight.SerializedSize, Increase(eight)));
        }
        Console.WriteLine($"  uniform settings on the test set ({test.Rows} windows):");
        foreach (var s in uniform.OrderBy(s => s.Size)) Console.WriteLine($"    {s.Name,-32} {s.Size,10:N0} bytes  perplexity +{s.TestIncrease:F3} %");
        Console.WriteLine($"  searched (-MaxPerplexityRise, AWQ then GPTQ, MatMul and Gather; validation {validation.Source}):");
        foreach (double budget in budgets)
        {
            sw.Restart();
            var q = ModelQuantizer.Quantize(model, new QuantizationOptions
            {
                Mode = QuantizationMode.WeightOnly, OpTypes = ["MatMul", "Gemm", "Gather"], Algorithm = WeightOnlyAlgorithms.Create(["AWQ", "GPTQ"]),
                CalibrationData = calibration, Budget = QualityBudget.MaxPerplexityRise(budget / 100), ValidationData = validation,
            });
            double seconds = sw.Elapsed.TotalSeconds, testIncrease = Increase(q);
            var best = uniform.Where(s => s.TestIncrease <= budget).MinBy(s => s.Size);
            var m = q.Report!.Metrics;
            if (searchOnly)
                foreach (var c in q.Report.Entries.Where(e => e.Action == "Candidate")) Console.WriteLine($"      {c.Target}: {c.Detail}");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"    budget {budget,4} %: {q.SerializedSize,10:N0} bytes, validation +{m["ValidationFigure"] * 100:F3} %, test +{testIncrease:F3} % ({testIncrease / budget:F2}x the budget; target <= 1.5x); " +
                $"smallest uniform meeting it on test: {(best is null ? "none" : $"{best.Name} {best.Size:N0} bytes ({(double)q.SerializedSize / best.Size:F3}x)")}; " +
                $"search {seconds:F1} s = {seconds / gptqSeconds:F1}x one GPTQ (target <= 20x), {m["BudgetEvaluations"]} evaluations"));
        }
    }

    static readonly (string Name, Func<WeightOnlyAlgorithm?> Make)[] Algorithms =
    [
        ("RTN", () => null), ("HQQ", () => new HqqAlgorithm()), ("GPTQ", () => new GptqAlgorithm()), ("AWQ", () => new AwqAlgorithm()),
    ];

    static QuantizationOptions Uniform(int bits, int block, WeightOnlyAlgorithm? algorithm, DataSet calibration, bool floatHead) => new()
    {
        Mode = QuantizationMode.WeightOnly, Bits = bits, BlockSize = block, Algorithm = algorithm,
        CalibrationData = algorithm is { NeedsCalibrationData: true } ? calibration : null, ExcludeNodes = floatHead ? ["*head*"] : [],
    };
}
