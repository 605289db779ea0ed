using System.Diagnostics;
using ModelCompression.Native.Onnx;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Bench;

/// <summary>
/// Get-Model | Export-Model on a large generated model, against copying the same file: time ratio and peak memory
/// as a ratio to the file size. Load and save run in a child process so its peak memory is theirs alone.
/// </summary>
static class RoundTripBench
{
    public static int Run(string[] args)
    {
        long megabytes = args.Length > 0 ? long.Parse(args[0]) : 320;
        string dir = Directory.CreateTempSubdirectory("mc-bench-io-").FullName;
        try
        {
            string source = Path.Combine(dir, "large.onnx");
            Generate(source, megabytes);
            long size = new FileInfo(source).Length;
            Console.WriteLine($"model: {size / 1e6:N1} MB of weights in one file");

            var copy = new List<double>(); var roundTrip = new List<double>(); var peaks = new List<long>();
            for (int i = 0; i < 3; i++)
            {
                string target = Path.Combine(dir, $"copy{i}.onnx");
                var sw = Stopwatch.StartNew();
                File.Copy(source, target, overwrite: true);
                using (var fs = new FileStream(target, FileMode.Open)) fs.Flush(flushToDisk: true);
                copy.Add(sw.Elapsed.TotalSeconds);
                File.Delete(target);

                var (seconds, peak) = RunChild(source, Path.Combine(dir, $"rt{i}.onnx"));
                roundTrip.Add(seconds);
                peaks.Add(peak);
                File.Delete(Path.Combine(dir, $"rt{i}.onnx"));
            }
            double c = copy.Min(), r = roundTrip.Min();
            Console.WriteLine($"file copy (+fsync):          {c:F2} s (best of 3)");
            Console.WriteLine($"Get-Model | Export-Model:    {r:F2} s (best of 3, load + save, engine in a child process)");
            Console.WriteLine($"time ratio round trip/copy:  {r / c:F2}x   (target <= 3x)");
            Console.WriteLine($"peak memory / file size:     {peaks.Max() / (double)size:F2}x   (peak RSS {peaks.Max() / 1e6:N0} MB; target < 2.5x)");
            return 0;
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>Child: load and save one model, print "seconds peakRssBytes".</summary>
    public static int Child(string[] args)
    {
        var sw = Stopwatch.StartNew();
        var model = ModelIO.Load(args[0]);
        double load = sw.Elapsed.TotalSeconds;
        ModelIO.Save(model, args[1]);
        Console.Error.WriteLine($"  child: load {load:F2} s, save {sw.Elapsed.TotalSeconds - load:F2} s");
        using (var fs = new FileStream(args[1], FileMode.Open)) fs.Flush(flushToDisk: true);
        Console.WriteLine($"{sw.Elapsed.TotalSeconds:R} {PeakRss()}");
        return 0;
    }

    static (double Seconds, long Peak) RunChild(string source, string target)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true };
        // Under `dotnet bench.dll` the host is dotnet and the program is the first argument; under the apphost it is not.
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath) == "dotnet") psi.ArgumentList.Add(Environment.GetCommandLineArgs()[0]);
        psi.ArgumentList.Add("io-child"); psi.ArgumentList.Add(source); psi.ArgumentList.Add(target);
        using var p = Process.Start(psi)!;
        string line = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        var parts = line.Split(' ');
        return (double.Parse(parts[0]), long.Parse(parts[1]));
    }

    /// <summary>Peak resident set size of this process (VmHWM), or the working-set peak where /proc is absent.</summary>
    public static long PeakRss()
    {
        if (File.Exists("/proc/self/status"))
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        return Process.GetCurrentProcess().PeakWorkingSet64;
    }

    /// <summary>A chain of 2048-wide layers with enough of them to reach the requested size.</summary>
    static void Generate(string path, long megabytes)
    {
        const int width = 2048;
        int layers = (int)Math.Max(1, megabytes * 1_000_000 / (width * (long)width * 4));
        var b = new GraphBuilder("large").Input("x", DT.Float, "batch", width).Output("y", DT.Float, "batch", width);
        var rng = new Random(1);
        string x = "x";
        var w = new float[width * width];
        for (int l = 0; l < layers; l++)
        {
            for (int i = 0; i < w.Length; i++) w[i] = (float)(rng.NextDouble() - 0.5) * 0.05f;
            x = b.Node("MatMul", [x, b.Initializer($"w{l}", [width, width], w)], l == layers - 1 ? ["y"] : null);
        }
        ModelIO.Save(b.BuildModel(), path, new SaveOptions { Overwrite = true });
    }
}
