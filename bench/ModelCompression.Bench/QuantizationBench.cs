using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using ModelCompression.Engine.Tests.Quantization;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

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
        string models = args.Length > 0 ? args[0] : Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "..", "shared", "models");
        models = Path.GetFullPath(models);
        var settings = new SessionSettings { IntraOpThreads = 1, InterOpThreads = 1 };

        var bert = ModelIO.Load(Path.Combine(models, "tiny_bert.onnx"));
        var bertQ = ModelQuantizer.Quantize(bert, new QuantizationOptions { Mode = QuantizationMode.Dynamic });
        var tokens = new Dictionary<string, NamedArray>
        {
            ["input_ids"] = new("input_ids", [1, 128], Enumerable.Range(0, 128).Select(i => (long)((i * 7919) % 5000)).ToArray()),
        };
        Compare("tiny_bert dynamic int8, batch 1, sequence 128", bert, bertQ, tokens, settings, rounds: 20, perRound: 10);

        var det = ModelIO.Load(Path.Combine(models, "ch_PP-OCRv4_det_infer.onnx"));
        var calib = new DataSet("calib", [SyntheticImages.Documents("x", 8, 320, 320, 1, imagenet: true)]);
        var detQ = ModelQuantizer.Quantize(det, new QuantizationOptions { Mode = QuantizationMode.Static, CalibrationData = calib });
        var image = new Dictionary<string, NamedArray> { ["x"] = SyntheticImages.Documents("x", 1, 320, 320, 99, imagenet: true) };
        Compare("PP-OCRv4 det static QDQ (MinMax), batch 1, 320x320", det, detQ, image, settings, rounds: 10, perRound: 3);
        return 0;
    }

    static void Compare(string title, OnnxModel reference, OnnxModel quantized, IReadOnlyDictionary<string, NamedArray> inputs, SessionSettings settings, int rounds, int perRound)
    {
        using var a = new ModelSession(reference, settings);
        using var b = new ModelSession(quantized, settings);
        var names = inputs.Keys.ToList();
        var values = names.Select(n => ModelSession.ToOrtValue(inputs[n])).ToList();
        using var run = new RunOptions();
        try
        {
            for (int i = 0; i < 3; i++) { a.RunDiscard(names, values, run); b.RunDiscard(names, values, run); }
            var ta = new List<double>(); var tb = new List<double>();
            for (int r = 0; r < rounds; r++)
            {
                // Interleaved: A then B in each round, alternating which goes first, so load on the machine hits both alike.
                foreach (bool first in r % 2 == 0 ? new[] { true, false } : new[] { false, true })
                    for (int i = 0; i < perRound; i++)
                    {
                        var sw = Stopwatch.StartNew();
                        (first ? a : b).RunDiscard(names, values, run);
                        (first ? ta : tb).Add(sw.Elapsed.TotalMilliseconds);
                    }
            }
            double ma = Median(ta), mb = Median(tb);
            Console.WriteLine(title);
            Console.WriteLine($"  float:     median {ma:F2} ms  (p10 {Percentile(ta, 0.1):F2}, p90 {Percentile(ta, 0.9):F2}; n={ta.Count})");
            Console.WriteLine($"  quantized: median {mb:F2} ms  (p10 {Percentile(tb, 0.1):F2}, p90 {Percentile(tb, 0.9):F2}; n={tb.Count})");
            Console.WriteLine($"  ratio quantized/float: {mb / ma:F2}x;  size {quantized.SerializedSize / (double)reference.SerializedSize:F3}x");
        }
        finally { foreach (var v in values) v.Dispose(); }
    }

    public static int Time(string[] args)
    {
        int layers = args.Length > 0 ? int.Parse(args[0]) : 24;
        const int width = 2048;
        string dir = Directory.CreateTempSubdirectory("mc-bench-quant-").FullName;
        try
        {
            string source = Path.Combine(dir, "large.onnx");
            var b = new GraphBuilder("large").Input("x", DT.Float, "batch", width).Output("y", DT.Float, "batch", width);
            var rng = new Random(1);
            var w = new float[width * width];
            string x = "x";
            for (int l = 0; l < layers; l++)
            {
                for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() - 0.5) * 0.05f;
                x = b.Node("MatMul", [x, b.Initializer($"w{l}", [width, width], w)], l == layers - 1 ? ["y"] : null);
            }
            ModelIO.Save(b.BuildModel(), source, new SaveOptions { Overwrite = true });
            long size = new FileInfo(source).Length;
            Console.WriteLine($"model: {layers} MatMul layers of {width}x{width} = {layers * (long)width * width / 1e6:N1}M parameters, {size / 1e6:N0} MB");

            var copy = new List<double>();
            var times = new Dictionary<string, List<(double Total, double Quantize)>> { ["Dynamic int8"] = [], ["WeightOnly 4-bit/32"] = [] };
            for (int round = 0; round < 3; round++)
            {
                string target = Path.Combine(dir, "copy.onnx");
                var sw = Stopwatch.StartNew();
                File.Copy(source, target, overwrite: true);
                using (var fs = new FileStream(target, FileMode.Open)) fs.Flush(flushToDisk: true);
                copy.Add(sw.Elapsed.TotalSeconds);
                File.Delete(target);
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
                    using (var fs = new FileStream(target, FileMode.Open)) fs.Flush(flushToDisk: true);
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

    static double Median(List<double> v) => Percentile(v, 0.5);

    static double Percentile(List<double> v, double p)
    {
        var s = v.Order().ToList();
        return s[(int)Math.Clamp(Math.Round(p * (s.Count - 1)), 0, s.Count - 1)];
    }
}
