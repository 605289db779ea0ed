using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Bench;

/// <summary>
/// `faults [blocks] [variant,...]`: the large-model variants of tests/Faults.Tests.ps1, on the model `large` generates
/// (48 blocks: 1.1B parameters, 4.43 GB float32 in one data file), every stage in a child process of its own:
///   pid    4-bit RTN in a PID namespace (unshare --pid --fork --mount-proc: the child's id is below 10) and outside one:
///          both work, in about the same time and memory, and write the same weights
///   kill   an export killed (SIGKILL) a third of the way through, then the same export again: only the model's files remain
///   race   two processes export two models (blocks/8 and blocks/8 + 1 blocks) to one path, 20 rounds: every round
///          leaves one of the two, whole (SHA-256 of both files against each model's own export)
///   full   a destination and a TMPDIR on small tmpfs mounts: ExportWriteFailed and ScratchWriteFailed, nothing left
///   stop   each stage cancelled (Ctrl+C) two seconds in: how long it takes to return, and what it leaves
/// Prints one line per variant, PASS or FAIL against its target, and exits 1 if any failed.
/// </summary>
static class FaultsBench
{
    static readonly string[] Unshare = ["unshare", "--pid", "--fork", "--mount-proc"];

    public static int Run(string[] args)
    {
        int blocks = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 48;
        var only = args.Length > 1 ? args[1].Split(',') : ["pid", "kill", "race", "full", "stop"];
        string dir = Directory.CreateTempSubdirectory("mc-bench-faults-").FullName;
        try
        {
            string source = Path.Combine(dir, "large.onnx");
            long parameters = LargeModelBench.WriteResidualMlp(source, blocks, DT.Float);
            Console.WriteLine($"model: {blocks} blocks, {parameters / 1e9:F2}B parameters, {new FileInfo(source + ".data").Length / 1e9:F2} GB float32 in one data file");
            int failed = 0;
            foreach (var variant in only)
                failed += variant switch
                {
                    "pid" => Pid(dir, source),
                    "kill" => Kill(dir, source),
                    "race" => Race(dir, blocks),
                    "full" => Full(dir, source),
                    "stop" => Stop(dir, source),
                    _ => throw new ArgumentException("unknown variant " + variant),
                };
            return failed == 0 ? 0 : 1;
        }
        finally { Directory.Delete(dir, true); }
    }

    static int Pid(string dir, string source)
    {
        if (!OperatingSystem.IsLinux() || !Succeeds([.. Unshare, "true"]))
            return Skip("pid", "unshare --pid --fork --mount-proc fails here");
        var runs = new List<(string[] Fields, string Hash)>();
        foreach (var prefix in new[] { [], Unshare })
        {
            string target = Path.Combine(Fresh(dir, "pid"), "out.onnx");
            string line = BenchSupport.RunChild(BenchSupport.ChildStart(prefix, "faults-child", "rtn", source, target));
            if (line.StartsWith("refused", StringComparison.Ordinal)) return Report("pid", false, (prefix.Length > 0 ? "in the namespace: " : "outside: ") + line);
            runs.Add((line.Split(' '), Hash(target + ".data")));
        }
        string Describe((string[] Fields, string Hash) r) =>
            $"pid {r.Fields[0]}, {double.Parse(r.Fields[1], CultureInfo.InvariantCulture):F2} s, peak {long.Parse(r.Fields[2], CultureInfo.InvariantCulture) / 1e9:F2} GB, scratch {r.Fields[3]}";
        bool ok = int.Parse(runs[1].Fields[0], CultureInfo.InvariantCulture) < 1000 && runs[0].Hash == runs[1].Hash;
        return Report("pid", ok, $"4-bit RTN outside: {Describe(runs[0])}; in a PID namespace: {Describe(runs[1])}; same weights: {runs[0].Hash == runs[1].Hash}");
    }

    static int Kill(string dir, string source)
    {
        string folder = Fresh(dir, "kill"), target = Path.Combine(folder, "out.onnx");
        long third = new FileInfo(source + ".data").Length / 3;
        var clock = Stopwatch.StartNew();
        using (var p = Process.Start(BenchSupport.ChildStart([], "faults-child", "export", source, target))!)
        {
            while (!p.HasExited && !Directory.EnumerateFiles(folder, ".out.onnx.data.mc-*.tmp").Any(f => new FileInfo(f).Length > third)) Thread.Sleep(10);
            p.Kill();
            p.WaitForExit();
        }
        var killed = Names(folder);
        string line = BenchSupport.RunChild(BenchSupport.ChildStart([], "faults-child", "export", source, target));
        var after = Names(folder);
        bool ok = !killed.Contains("out.onnx") && after.SequenceEqual(["out.onnx", "out.onnx.data"]);
        return Report("kill", ok, $"killed after {clock.Elapsed.TotalSeconds:F1} s, leaving {string.Join(", ", killed)}; the next export ({line.Split(' ')[1]} s) left {string.Join(", ", after)}");
    }

    static int Race(string dir, int blocks, int rounds = 20)
    {
        int small = Math.Max(1, blocks / 8);
        var models = new[] { small, small + 1 }.Select((b, i) =>
        {
            string source = Path.Combine(Fresh(dir, $"race-model-{i}"), "m.onnx"), reference = Path.Combine(Fresh(dir, $"race-reference-{i}"), "out.onnx");
            LargeModelBench.WriteResidualMlp(source, b, DT.Float);
            BenchSupport.RunChild(BenchSupport.ChildStart([], "faults-child", "export", source, reference));
            return (Source: source, Hash: Hash(reference, reference + ".data"));
        }).ToArray();
        string folder = Fresh(dir, "race"), target = Path.Combine(folder, "out.onnx");
        int whole = 0;
        var wins = new int[2];
        for (int r = 0; r < rounds; r++)
        {
            var racers = models.Select(m => Process.Start(BenchSupport.ChildStart([], "faults-child", "export", m.Source, target))!).ToList();
            foreach (var p in racers) { p.StandardOutput.ReadToEnd(); p.WaitForExit(); p.Dispose(); }
            int winner = Array.FindIndex(models, m => m.Hash == Hash(target, target + ".data"));
            if (winner >= 0 && Names(folder).SequenceEqual(["out.onnx", "out.onnx.data"])) { whole++; wins[winner]++; }
        }
        return Report("race", whole == rounds, $"{whole} of {rounds} rounds left one model whole ({small} blocks {wins[0]} times, {small + 1} blocks {wins[1]} times)");
    }

    static int Full(string dir, string source)
    {
        string full = Fresh(dir, "full"), tmp = Fresh(dir, "full-tmp");
        // Room for a quarter of the data at the destination, a sixteenth (less than 4-bit weights take) in TMPDIR.
        long data = new FileInfo(source + ".data").Length, destinationRoom = data / 4 >> 20, scratchRoom = data / 16 >> 20;
        if (!OperatingSystem.IsLinux() || !Succeeds("mount", "-t", "tmpfs", "-o", $"size={destinationRoom}m", "tmpfs", full))
            return Skip("full", "mount -t tmpfs fails here (not root, or no CAP_SYS_ADMIN)");
        try
        {
            Succeeds("mount", "-t", "tmpfs", "-o", $"size={scratchRoom}m", "tmpfs", tmp);
            string export = BenchSupport.RunChild(BenchSupport.ChildStart([], "faults-child", "export", source, Path.Combine(full, "out.onnx")));
            var scratch = BenchSupport.ChildStart([], "faults-child", "rtn", source, Path.Combine(dir, "full-out.onnx"));
            scratch.Environment["TMPDIR"] = tmp + "/";
            string stage = BenchSupport.RunChild(scratch);
            // (.NET's diagnostic pipes in TMPDIR are not the engine's.)
            var left = Names(full).Concat(Names(tmp).Where(n => n.StartsWith("mc-", StringComparison.Ordinal))).ToList();
            bool ok = export.StartsWith("refused ExportWriteFailed", StringComparison.Ordinal) && stage.StartsWith("refused ScratchWriteFailed", StringComparison.Ordinal) && left.Count == 0;
            return Report("full", ok, $"export to a {destinationRoom} MB tmpfs: {Short(export)}; 4-bit RTN with TMPDIR on a {scratchRoom} MB tmpfs: {Short(stage)}; left: {(left.Count == 0 ? "nothing" : string.Join(", ", left))}");
        }
        finally
        {
            Succeeds("umount", "-l", full);
            Succeeds("umount", "-l", tmp);
        }
    }

    static int Stop(string dir, string source)
    {
        int failed = 0;
        foreach (var stage in new[] { "rtn", "dynamic", "prune", "compare", "export" })
        {
            string line = BenchSupport.RunChild(BenchSupport.ChildStart([], "faults-child", "stop", stage, source, Path.Combine(Fresh(dir, "stop-" + stage), "out.onnx")));
            var f = line.Split(' ');   // returned-seconds files-left finished-before-the-stop
            bool ok = f.Length == 3 && double.Parse(f[0], CultureInfo.InvariantCulture) < 1 && f[1] == "0" && f[2] == "False";
            failed += Report($"stop {stage}", ok, f.Length == 3 ? $"returned {double.Parse(f[0], CultureInfo.InvariantCulture):F3} s after the cancel, {f[1]} files left{(f[2] == "True" ? "; it had finished before the cancel" : "")}" : line);
        }
        return failed;
    }

    /// <summary>
    /// Child: `rtn|export source target` prints "pid wall peakRss scratchFolder" or "refused id: message"; `stop stage
    /// source target` prints "returned left finished". Stages spill to scratch files whatever the model's size (models
    /// of 512 MB and more do anyway), so that smaller runs of the bench take the same paths.
    /// </summary>
    public static int Child(string[] args)
    {
        OnnxModel.SpillThreshold = 0;
        string what = args[0];
        if (what == "stop") return StopChild(args[1], args[2], args[3]);
        string source = args[1], target = args[2];
        var clock = Stopwatch.StartNew();
        try
        {
            var model = ModelIO.Load(source);
            if (what == "rtn") model = ModelQuantizer.Quantize(model, new QuantizationOptions { Mode = QuantizationMode.WeightOnly, Bits = 4, BlockSize = 32 });
            ModelIO.Save(model, target, new SaveOptions { Overwrite = true });
        }
        catch (EngineException e)
        {
            Console.WriteLine($"refused {e.ErrorId}: {e.Message}");
            return 0;
        }
        string scratch = Directory.EnumerateDirectories(Path.GetTempPath(), $"mc-scratch-{Environment.ProcessId}-*").Select(Path.GetFileName).FirstOrDefault() ?? "none";
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{Environment.ProcessId} {clock.Elapsed.TotalSeconds:R} {BenchSupport.PeakRss()} {scratch}"));
        return 0;
    }

    static int StopChild(string stage, string source, string target)
    {
        var model = ModelIO.Load(source);
        using var cancel = new CancellationTokenSource();
        object Work() => stage switch
        {
            "rtn" => ModelQuantizer.Quantize(model, new QuantizationOptions { Mode = QuantizationMode.WeightOnly, Bits = 4, BlockSize = 32 }, null, cancel.Token),
            "dynamic" => ModelQuantizer.Quantize(model, new QuantizationOptions { Mode = QuantizationMode.Dynamic }, null, cancel.Token),
            "prune" => ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Scope = PruningScope.Global }, null, cancel.Token),
            "compare" => ModelComparer.Compare(model, model, new InputSource(), null, null, cancel.Token),
            "export" => ModelIO.Save(model, target, new SaveOptions { Overwrite = true }, cancel.Token),
            _ => throw new ArgumentException("unknown stage " + stage),
        };
        var work = Task.Run(Work);
        bool finished = work.Wait(TimeSpan.FromSeconds(2));
        var clock = Stopwatch.StartNew();
        cancel.Cancel();
        try { work.Wait(); } catch (AggregateException e) when (e.InnerException is OperationCanceledException) { }
        double returned = clock.Elapsed.TotalSeconds;
        int left = Names(Path.GetDirectoryName(target)!).Count +
                   (Directory.EnumerateDirectories(Path.GetTempPath(), $"mc-scratch-{Environment.ProcessId}-*").FirstOrDefault() is { } scratch
                       ? Directory.EnumerateFiles(scratch, "*", SearchOption.AllDirectories).Count() : 0);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{returned:R} {left} {finished}"));
        return 0;
    }

    static int Report(string variant, bool ok, string detail)
    {
        Console.WriteLine($"  {variant,-13} {(ok ? "PASS" : "FAIL")}  {detail}");
        return ok ? 0 : 1;
    }

    static int Skip(string variant, string why)
    {
        Console.WriteLine($"  {variant,-13} skipped: {why}");
        return 0;
    }

    static string Short(string line) => line.Length > 160 ? line[..160] + "..." : line;

    static string Fresh(string dir, string name)
    {
        string path = Path.Combine(dir, name);
        if (Directory.Exists(path)) Directory.Delete(path, true);
        return Directory.CreateDirectory(path).FullName;
    }

    /// <summary>Every entry of a folder, hidden ones included, by name in order.</summary>
    static List<string> Names(string folder) => [.. Directory.EnumerateFileSystemEntries(folder).Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal)];

    static string Hash(params string[] files)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        foreach (var file in files)
        {
            if (!File.Exists(file)) return "missing " + file;
            using var stream = File.OpenRead(file);
            for (int n; (n = stream.Read(buffer)) > 0;) hash.AppendData(buffer, 0, n);
        }
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    static bool Succeeds(params string[] command)
    {
        var psi = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in command.Skip(1)) psi.ArgumentList.Add(a);
        try
        {
            using var p = Process.Start(psi)!;
            p.StandardOutput.ReadToEnd(); p.StandardError.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }
}
