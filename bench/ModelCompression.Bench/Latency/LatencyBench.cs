using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntime;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Bench;

/// <summary>
/// Does Measure-ModelLatency measure what ONNX Runtime does? For each model, short blocks of LatencyMeter runs alternate
/// with short blocks of a plain ONNX Runtime loop (InferenceSession, OrtValues built once, Stopwatch around Run) in the
/// same process, with the same session options and inputs; the medians of all timed runs of both are compared
/// (target: within 5%). Then A/B as -Baseline runs it against each model alone in a process of its own (target: 10%).
/// Usage: bench latency [seconds per block, default 0.2] [blocks, default 40] [model paths...]
/// </summary>
static class LatencyBench
{
    public static int Run(string[] args)
    {
        double seconds = args.Length > 0 ? double.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 0.2;
        int blocks = args.Length > 1 ? int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture) : 40;
        var paths = args.Length > 2 ? args[2..] : DefaultModels();
        var settings = new SessionSettings { IntraOpThreads = 1, InterOpThreads = 1 };
        Console.WriteLine($"{Environment.ProcessorCount} cores, load average {LoadAverage()}; {blocks} blocks of ~{seconds} s per side, intra/inter-op threads 1");
        Console.WriteLine($"{"model",-36} {"inputs",-14} {"meter P50 ms",12} {"plain P50 ms",12} {"ratio",7} {"95% CI",16} {"runs",6}");
        Console.WriteLine("(P50 over all timed runs of each side; ratio = meter P50 / plain P50 with a bootstrap interval; runs per side)");
        bool allWithin = true;
        foreach (var (path, dims) in paths.Select(Spec))
        {
            var model = ModelIO.Load(path);
            var synthesis = new SynthesisOptions { Dimensions = dims, BatchSize = 1 };
            var inputs = InputSynthesizer.Synthesize(model, synthesis);
            // Calibrate the iteration count to the block length.
            var probe = LatencyMeter.Measure([model], null, new LatencyOptions { Warmup = 2, Iterations = 5, Session = settings, Synthesis = synthesis }).Single();
            int iterations = (int)Math.Clamp(seconds * 1000 / Math.Max(probe.P50Ms, 1e-3), 3, 20000);

            // Short blocks alternate (meter, plain, plain, meter, ...): both sides see the same spells of a busy machine.
            // Every timed run of both sides is kept; the medians of all of them are compared.
            var meter = new List<double>(); var plain = new List<double>();
            using var loop = new PlainLoop(model, inputs, settings);
            for (int b = 0; b < blocks; b++)
            {
                void MeterBlock() => meter.AddRange(LatencyMeter.Measure([model], null, new LatencyOptions { Warmup = 2, Iterations = iterations, Session = settings, Synthesis = synthesis }).Single().SamplesMs);
                void PlainBlock() => plain.AddRange(loop.Times(2, iterations));
                if (b % 2 == 0) { MeterBlock(); PlainBlock(); } else { PlainBlock(); MeterBlock(); }
            }
            var est = Statistics.MedianRatio(meter, plain, 0.95, 10000, 1);
            double m = Statistics.Median(meter), p = Statistics.Median(plain), ratio = est.Ratio;
            allWithin &= Math.Abs(ratio - 1) <= 0.05;
            string shape = string.Join(";", inputs.Values.Select(a => $"[{string.Join(",", a.Shape)}]"));
            Console.WriteLine($"{Path.GetFileName(path),-36} {shape,-14} {m,12:F4} {p,12:F4} {ratio,7:F3} {$"[{est.Lower:F3}, {est.Upper:F3}]",16} {meter.Count,6}");
        }
        Console.WriteLine(allWithin ? "all medians within 5% of the plain loop" : "SOME MEDIANS DIFFER BY MORE THAN 5%");
        allWithin &= AB(paths, seconds * blocks);
        return allWithin ? 0 : 1;
    }

    /// <summary>
    /// A/B as Measure-ModelLatency -Baseline runs it (two sessions of the model, interleaved, 2 intra-op threads each)
    /// against what a deployment sees: one session alone (ONNX Runtime's defaults) in a process of its own. Also a plain
    /// loop over two sessions taking turns with ONNX Runtime's default spinning, the condition the meter avoids. Short
    /// rounds of the three alternate, so they share the machine's busy and quiet spells; medians over all runs.
    /// Target: the meter within 10% of the model alone.
    /// </summary>
    static bool AB(IEnumerable<string> paths, double seconds)
    {
        const int threads = 2, rounds = 6;
        double perRound = seconds / rounds;
        Console.WriteLine();
        Console.WriteLine($"A/B: two sessions of each model interleaved vs one session alone in its own process; intra-op threads {threads}; {rounds} rounds of ~{perRound:G3} s per side");
        Console.WriteLine($"{"model",-36} {"alone ms",9} {"alone no-spin",14} {"plain A/B spin",15} {"meter A ms",11} {"meter B ms",11} {"meter/alone",12} {"meter/no-spin",14}");
        Console.WriteLine("(alone: one session, ONNX Runtime's defaults, a process of its own; no-spin: the same without spinning; plain A/B spin: two sessions taking turns with spinning, as the meter did before)");
        bool ok = true;
        foreach (var (path, dims) in paths.Select(Spec))
        {
            string dimText = string.Join(",", dims.Select(d => $"{d.Key}={d.Value}"));
            var synthesis = new SynthesisOptions { Dimensions = dims, BatchSize = 1 };
            List<double> alone = [], quiet = [], fighting = [], a = [], b = [];
            for (int r = 0; r < rounds; r++)
            {
                alone.AddRange(Child(path, dimText, threads, perRound, sessions: 1, spin: true));
                quiet.AddRange(Child(path, dimText, threads, perRound, sessions: 1, spin: false));
                fighting.AddRange(Child(path, dimText, threads, perRound, sessions: 2, spin: true));
                var results = LatencyMeter.Measure([ModelIO.Load(path)], ModelIO.Load(path), new LatencyOptions
                {
                    Warmup = 5, Duration = TimeSpan.FromSeconds(perRound), Session = new SessionSettings { IntraOpThreads = threads }, Synthesis = synthesis,
                });
                a.AddRange(results[0].SamplesMs); b.AddRange(results[1].SamplesMs);
            }
            double m = Statistics.Median(alone), q = Statistics.Median(quiet), meter = Statistics.Median([.. a, .. b]);
            ok &= Math.Abs(meter / m - 1) <= 0.10;
            Console.WriteLine($"{Path.GetFileName(path),-36} {m,9:F4} {q,14:F4} {Statistics.Median(fighting),15:F4} {Statistics.Median(a),11:F4} {Statistics.Median(b),11:F4} {meter / m,12:F3} {meter / q,14:F3}");
        }
        Console.WriteLine(ok ? "the meter's A/B medians are within 10% of each model alone" : "SOME A/B MEDIANS DIFFER FROM THE MODEL ALONE BY MORE THAN 10%");
        return ok;
    }

    /// <summary>Runs <see cref="ChildLoop"/> in a process of its own and returns its times in ms.</summary>
    static double[] Child(string path, string dims, int threads, double seconds, int sessions, bool spin)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet") psi.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);
        foreach (var arg in new[] { "latency-child", path, dims, threads.ToString(CultureInfo.InvariantCulture), seconds.ToString(CultureInfo.InvariantCulture), sessions.ToString(CultureInfo.InvariantCulture), spin ? "1" : "0" })
            psi.ArgumentList.Add(arg);
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"latency-child failed: {output}");
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => double.Parse(l, CultureInfo.InvariantCulture)).ToArray();
    }

    /// <summary>
    /// `bench latency-child path dims threads seconds sessions spin`: a plain ONNX Runtime loop (default session options,
    /// spinning on or off) over 1 session, or 2 sessions of the model taking turns; prints every run's time in ms.
    /// </summary>
    public static int ChildLoop(string[] args)
    {
        string path = args[0];
        var dims = args[1].Split(',', StringSplitOptions.RemoveEmptyEntries).Select(d => d.Split('='))
            .ToDictionary(d => d[0], d => long.Parse(d[1], CultureInfo.InvariantCulture));
        int threads = int.Parse(args[2], CultureInfo.InvariantCulture), sessions = int.Parse(args[4], CultureInfo.InvariantCulture);
        double seconds = double.Parse(args[3], CultureInfo.InvariantCulture);
        var model = ModelIO.Load(path);
        var inputs = InputSynthesizer.Synthesize(model, new SynthesisOptions { Dimensions = dims, BatchSize = 1 });
        var settings = new SessionSettings { IntraOpThreads = threads, AllowSpinning = args[5] == "1" };
        var loops = Enumerable.Range(0, sessions).Select(_ => new PlainLoop(model, inputs, settings)).ToList();
        foreach (var l in loops) l.Times(5, 1);
        var times = new List<double>();
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed.TotalSeconds < seconds)
            foreach (var l in loops) times.AddRange(l.Times(0, 1));
        foreach (var l in loops) l.Dispose();
        Console.Write(string.Join('\n', times.Select(t => t.ToString("R", CultureInfo.InvariantCulture))));
        return 0;
    }

    /// <summary>The repository's model, and the shared ones beside the repository when they are there, with dimensions for their symbolic axes.</summary>
    static string[] DefaultModels()
    {
        string root = FindRepoRoot();
        var list = new List<string> { Path.Combine(root, "models", "wine_mlp.onnx") };
        string shared = Path.Combine(root, "..", "shared", "models");
        foreach (var name in new[] { "breast_cancer_mlp.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx", "tiny_bert.onnx", "ch_PP-OCRv4_det_infer.onnx" })
            if (File.Exists(Path.Combine(shared, name))) list.Add(Path.GetFullPath(Path.Combine(shared, name)));
        return [.. list];
    }

    /// <summary>Symbolic dimensions per model: OCR crops 48x192 (cls) and 48x320 (rec), a 320x320 page for det, 128 tokens for BERT.</summary>
    static (string Path, Dictionary<string, long> Dims) Spec(string path)
    {
        var model = ModelIO.Load(path);
        var dims = new Dictionary<string, long>();
        string file = Path.GetFileName(path);
        foreach (var input in InputSynthesizer.Inputs(model))
            for (int i = 1; i < input.Shape.Count; i++)
            {
                if (long.TryParse(input.Shape[i], out long v) && v > 0) continue;
                dims[input.Shape[i]] = file switch
                {
                    _ when file.Contains("det", StringComparison.Ordinal) => 320,
                    _ when file.Contains("cls", StringComparison.Ordinal) => i == 2 ? 48 : 192,
                    _ when file.Contains("rec", StringComparison.Ordinal) => 320,
                    _ => 128,
                };
            }
        return (path, dims);
    }

    static string LoadAverage() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Split(' ')[0] : "n/a";

    static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "ModelCompression.psd1"))) return dir.FullName;
        throw new InvalidOperationException("Cannot find the repository root above " + AppContext.BaseDirectory);
    }

    /// <summary>The loop anyone would write with ONNX Runtime's C# API, nothing of the engine in the timed path.</summary>
    sealed class PlainLoop : IDisposable
    {
        readonly InferenceSession session;
        readonly RunOptions runOptions = new();
        readonly string[] inputNames, outputNames;
        readonly OrtValue[] values;

        public PlainLoop(OnnxModel model, Dictionary<string, NamedArray> inputs, SessionSettings settings)
        {
            using var options = new SessionOptions { IntraOpNumThreads = settings.IntraOpThreads, InterOpNumThreads = settings.InterOpThreads };
            if (!settings.AllowSpinning)
            {
                options.AddSessionConfigEntry("session.intra_op.allow_spinning", "0");
                options.AddSessionConfigEntry("session.inter_op.allow_spinning", "0");
            }
            session = RuntimeModel.Open(model, options);
            inputNames = [.. inputs.Keys];
            outputNames = [.. session.OutputMetadata.Keys];
            values = inputs.Values.Select(a => a.Data switch
            {
                float[] f => OrtValue.CreateTensorValueFromMemory(f, a.Shape),
                long[] l => OrtValue.CreateTensorValueFromMemory(l, a.Shape),
                int[] i => OrtValue.CreateTensorValueFromMemory(i, a.Shape),
                _ => throw new NotSupportedException(a.ElementType.Name),
            }).ToArray();
        }

        public double[] Times(int warmup, int iterations)
        {
            for (int i = 0; i < warmup; i++) { using var _ = session.Run(runOptions, inputNames, values, outputNames); }
            var times = new double[iterations];
            for (int i = 0; i < iterations; i++)
            {
                long start = Stopwatch.GetTimestamp();
                using (var _ = session.Run(runOptions, inputNames, values, outputNames)) { }
                times[i] = (Stopwatch.GetTimestamp() - start) * 1000.0 / Stopwatch.Frequency;
            }
            return times;
        }

        public void Dispose()
        {
            foreach (var v in values) v.Dispose();
            runOptions.Dispose();
            session.Dispose();
        }
    }
}
