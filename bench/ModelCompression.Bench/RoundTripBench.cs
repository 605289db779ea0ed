using System.Diagnostics;
using ModelCompression.Native.Onnx;

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
            const int width = 2048;
            BenchSupport.WriteMatMulChain(source, width, (int)Math.Max(1, megabytes * 1_000_000 / (width * (long)width * 4)));
            long size = new FileInfo(source).Length;
            Console.WriteLine($"model: {size / 1e6:N1} MB of weights in one file");

            var copy = new List<(double Wall, double Cpu)>(); var roundTrip = new List<(double Wall, double Cpu)>(); var peaks = new List<long>();
            for (int i = 0; i < 5; i++)
            {
                copy.Add(BenchSupport.TimeFileCopy(source));

                var parts = BenchSupport.RunChild("io-child", source, Path.Combine(dir, $"rt{i}.onnx")).Split(' ');
                var (wall, cpuSeconds, peak) = (double.Parse(parts[0]), double.Parse(parts[1]), long.Parse(parts[2]));
                roundTrip.Add((wall, cpuSeconds));
                peaks.Add(peak);
                File.Delete(Path.Combine(dir, $"rt{i}.onnx"));
            }
            // Best of 5 for each, taken alternately so that load on the machine hits both alike. CPU time (user + system,
            // the copy's being the kernel's memcpy) is the fairer figure when other processes compete for the cores.
            double c = copy.Min(x => x.Wall), r = roundTrip.Min(x => x.Wall);
            double cc = copy.Min(x => x.Cpu), rc = roundTrip.Min(x => x.Cpu);
            Console.WriteLine($"file copy (+fsync):          {c:F2} s wall, {cc:F2} s CPU (best of 5)");
            Console.WriteLine($"Get-Model | Export-Model:    {r:F2} s wall, {rc:F2} s CPU (best of 5; load + save in a child process, start-up excluded)");
            Console.WriteLine($"ratio round trip/copy:       {r / c:F2}x wall, {rc / cc:F2}x CPU   (target <= 3x)");
            Console.WriteLine($"peak memory / file size:     {peaks.Max() / (double)size:F2}x   (peak RSS {peaks.Max() / 1e6:N0} MB; target < 2.5x)");
            return 0;
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>Child: load and save one model, print "seconds peakRssBytes".</summary>
    public static int Child(string[] args)
    {
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        var model = ModelIO.Load(args[0]);
        double load = sw.Elapsed.TotalSeconds;
        long anon = BenchSupport.StatusValue("RssAnon:");
        ModelIO.Save(model, args[1]);
        Console.Error.WriteLine($"  child: load {load:F2} s, save {sw.Elapsed.TotalSeconds - load:F2} s, anonymous memory after load {anon / 1e6:N0} MB");
        BenchSupport.Flush(args[1]);
        Console.WriteLine($"{sw.Elapsed.TotalSeconds:R} {(Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds:R} {BenchSupport.PeakRss()}");
        return 0;
    }
}
