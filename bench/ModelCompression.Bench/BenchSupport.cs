using System.Diagnostics;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Bench;

/// <summary>What the benchmarks share: large generated models, the file-copy yardstick, and A/B latency through the
/// product's own <see cref="LatencyMeter"/> (the `latency` bench checks it against a plain ONNX Runtime loop).</summary>
static class BenchSupport
{
    /// <summary>A chain of <paramref name="layers"/> width x width float32 MatMuls with random weights; returns the file size.</summary>
    public static long WriteMatMulChain(string path, int width, int layers, Func<int, float>? scale = null)
    {
        var b = new GraphBuilder("large").Input("x", DT.Float, "batch", width).Output("y", DT.Float, "batch", width);
        var rng = new Random(1);
        var w = new float[width * width];
        string x = "x";
        for (int l = 0; l < layers; l++)
        {
            float s = scale?.Invoke(l) ?? 0.05f;
            for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() - 0.5) * s;
            x = b.Node("MatMul", [x, b.Initializer($"w{l}", [width, width], w)], l == layers - 1 ? ["y"] : null);
        }
        ModelIO.Save(b.BuildModel(), path, new SaveOptions { Overwrite = true });
        return new FileInfo(path).Length;
    }

    /// <summary>Copies a file beside itself and flushes it to disk: the yardstick every I/O-bound stage is held to.</summary>
    public static (double Wall, double Cpu) TimeFileCopy(string source)
    {
        string target = source + ".copy";
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        File.Copy(source, target, overwrite: true);
        Flush(target);
        var result = (sw.Elapsed.TotalSeconds, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds);
        File.Delete(target);
        return result;
    }

    public static void Flush(string path)
    {
        using var fs = new FileStream(path, FileMode.Open);
        fs.Flush(flushToDisk: true);
    }

    /// <summary>
    /// Baseline and candidate on the same fixed inputs, interleaved by <see cref="LatencyMeter"/> with one intra-op
    /// thread: (baseline result, candidate result with its ratio to the baseline and confidence interval).
    /// </summary>
    public static (LatencyResult Baseline, LatencyResult Candidate) AB(OnnxModel baseline, OnnxModel candidate,
        IReadOnlyDictionary<string, NamedArray> inputs, int iterations, int warmup = 5)
    {
        var data = new DataSet("bench inputs", inputs.Values.ToList());
        var results = LatencyMeter.Measure([candidate], baseline, new LatencyOptions
        {
            Warmup = warmup,
            Iterations = iterations,
            Data = data,
            MaxDataBatches = 1,
            Synthesis = new SynthesisOptions { BatchSize = data.Rows },
            Session = new SessionSettings { IntraOpThreads = 1, InterOpThreads = 1 },
        });
        return (results.Single(r => r.IsBaseline), results.Single(r => !r.IsBaseline));
    }

    public static string SharedRoot(string[] args, int index) =>
        Path.GetFullPath(args.Length > index ? args[index] : Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "..", "shared"));

    /// <summary>Runs this benchmark program again with <paramref name="args"/> (a "-child" command) and returns its output line.</summary>
    public static string RunChild(params string[] args) => RunChild(ChildStart([], args));

    /// <summary>Runs a child made by <see cref="ChildStart"/> to its end and returns its last output line.</summary>
    public static string RunChild(ProcessStartInfo psi)
    {
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return output.Split('\n')[^1];
    }

    /// <summary>How to start this benchmark program again with <paramref name="args"/>, under <paramref name="prefix"/> (a command such as unshare) if any.</summary>
    public static ProcessStartInfo ChildStart(string[] prefix, params string[] args)
    {
        var command = new List<string>(prefix) { Environment.ProcessPath! };
        // Under `dotnet bench.dll` the host is dotnet and the program is the first argument; under the apphost it is not.
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet") command.Add(Environment.GetCommandLineArgs()[0]);
        var psi = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true };
        foreach (var a in command.Skip(1).Concat(args)) psi.ArgumentList.Add(a);
        return psi;
    }

    /// <summary>Peak resident set size of this process (VmHWM), or the working-set peak where /proc is absent.</summary>
    public static long PeakRss()
    {
        long peak = StatusValue("VmHWM:");
        return peak > 0 ? peak : Process.GetCurrentProcess().PeakWorkingSet64;
    }

    /// <summary>A size from /proc/self/status in bytes (0 where there is no /proc).</summary>
    public static long StatusValue(string key)
    {
        if (!File.Exists("/proc/self/status")) return 0;
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(key, StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return 0;
    }
}
