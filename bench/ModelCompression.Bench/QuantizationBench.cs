using System.Diagnostics;
using ModelCompression.Engine.Tests.Quantization;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Bench;

/// <summary>
/// Quantization benchmarks. `quant-latency [sharedModelsDir]`: float and quantized models run interleaved at batch 1
/// (tiny_bert dynamic int8 at sequence 128, PP-OCR det static QDQ at 320x320), one intra-op thread, medians and ratio.
/// `quant-time [layers]`: load + quantize + export of a generated model of 2048x2048 MatMul layers (24 layers: 100.7M
/// parameters) in dynamic and 4-bit weight-only mode, as a ratio to copying the same file.
/// </summary>
static class QuantizationBench
{
    public static int Latency(string[] args)
    {
        string models = args.Length > 0 ? Path.GetFullPath(args[0]) : Path.Combine(BenchSupport.SharedRoot(args, 1), "models");

        var bert = ModelIO.Load(Path.Combine(models, "tiny_bert.onnx"));
        var bertQ = ModelQuantizer.Quantize(bert, new QuantizationOptions { Mode = QuantizationMode.Dynamic });
        var tokens = new Dictionary<string, NamedArray>
        {
            ["input_ids"] = new("input_ids", [1, 128], Enumerable.Range(0, 128).Select(i => (long)((i * 7919) % 5000)).ToArray()),
        };
        Compare("tiny_bert dynamic int8, batch 1, sequence 128", bert, bertQ, tokens, iterations: 200);

        var det = ModelIO.Load(Path.Combine(models, "ch_PP-OCRv4_det_infer.onnx"));
        var calib = new DataSet("calib", [SyntheticImages.Documents("x", 8, 320, 320, 1, imagenet: true)]);
        var detQ = ModelQuantizer.Quantize(det, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = calib });
        var image = new Dictionary<string, NamedArray> { ["x"] = SyntheticImages.Documents("x", 1, 320, 320, 99, imagenet: true) };
        Compare("PP-OCRv4 det static QDQ (MinMax), batch 1, 320x320", det, detQ, image, iterations: 30);
        return 0;
    }

    static void Compare(string title, OnnxModel reference, OnnxModel quantized, IReadOnlyDictionary<string, NamedArray> inputs, int iterations)
    {
        var (f, q) = BenchSupport.AB(reference, quantized, inputs, iterations);
        Console.WriteLine(title);
        Console.WriteLine($"  float:     median {f.P50Ms:F2} ms  (p90 {f.P90Ms:F2}; n={f.Iterations})");
        Console.WriteLine($"  quantized: median {q.P50Ms:F2} ms  (p90 {q.P90Ms:F2}; n={q.Iterations})");
        Console.WriteLine($"  ratio quantized/float: {q.RatioToBaseline:F2}x [{q.RatioLower:F2}, {q.RatioUpper:F2}];  size {quantized.SerializedSize / (double)reference.SerializedSize:F3}x");
    }

    public static int Time(string[] args)
    {
        int layers = args.Length > 0 ? int.Parse(args[0]) : 24;
        const int width = 2048;
        string dir = Directory.CreateTempSubdirectory("mc-bench-quant-").FullName;
        try
        {
            string source = Path.Combine(dir, "large.onnx");
            long size = BenchSupport.WriteMatMulChain(source, width, layers);
            Console.WriteLine($"model: {layers} MatMul layers of {width}x{width} = {layers * (long)width * width / 1e6:N1}M parameters, {size / 1e6:N0} MB");

            var copy = new List<double>();
            var times = new Dictionary<string, List<(double Total, double Quantize)>> { ["Dynamic int8"] = [], ["WeightOnly 4-bit/32"] = [] };
            for (int round = 0; round < 3; round++)
            {
                string target = Path.Combine(dir, "quantized.onnx");
                copy.Add(BenchSupport.TimeFileCopy(source).Wall);
                var sw = new Stopwatch();
                foreach (var (name, options) in new[]
                {
                    ("Dynamic int8", new QuantizationOptions { Mode = QuantizationMode.Dynamic }),
                    ("WeightOnly 4-bit/32", new QuantizationOptions { Mode = QuantizationMode.WeightOnly, Bits = 4, BlockSize = 32 }),
                })
                {
                    sw.Restart();
                    var model = ModelIO.Load(source);
                    double load = sw.Elapsed.TotalSeconds;
                    var q = ModelQuantizer.Quantize(model, options);
                    double quantize = sw.Elapsed.TotalSeconds - load;
                    ModelIO.Save(q, target, new SaveOptions { Overwrite = true });
                    BenchSupport.Flush(target);
                    times[name].Add((sw.Elapsed.TotalSeconds, quantize));
                    File.Delete(target);
                    GC.Collect();
                }
            }
            double c = copy.Min();
            Console.WriteLine($"file copy (+fsync): {c:F2} s (best of 3)");
            foreach (var (name, list) in times)
            {
                var best = list.MinBy(t => t.Total);
                Console.WriteLine($"{name,-20} load+quantize+export {best.Total:F2} s (quantize alone {best.Quantize:F2} s): {best.Total / c:F2}x the copy  (target <= 4x)");
            }
            return 0;
        }
        finally { Directory.Delete(dir, true); }
    }
}
