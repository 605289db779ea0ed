// The project's own fuzzer. Each case mutates a model (ModelMutator) and runs one cmdlet pipeline on it in a real pwsh
// worker (worker.ps1) under a time limit; the driver checks what came back:
//   crash      the worker process died
//   hang       the case ran past its time limit
//   unspecific an error record without a project error id (UnexpectedError, a raw .NET exception, NotSpecified)
//   memory     the case added more than 4x its files' size + 256 MB to the worker's peak resident memory
//   changed    an input file was modified
//   partial    a failed export left a file behind
// Usage: fuzz [--cases N] [--seed S] [--workers W] [--timeout seconds] [--quick] [--shared dir] [--module psd1] [--json file]
//             [--only N]: run case N of the seed alone and print everything about it (to reproduce a failure)
// Prints "cases N, crashes C, hangs H, unspecific U, memory M, changed I, partial P" and exits 1 if any is not 0.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using ModelCompression.Fuzz;

var options = FuzzOptions.Parse(args);
var corpus = Corpus.Build(options);
string root = Directory.CreateTempSubdirectory("mc-fuzz-").FullName;
Console.WriteLine($"fuzz: {options.Cases} cases, seed {options.Seed}, {options.Workers} workers, {corpus.Count} base models ({string.Join(", ", corpus.Select(c => c.Name))}), time limit {options.Timeout} s");
var results = new ConcurrentBag<CaseResult>();
var next = -1;
var clock = Stopwatch.StartNew();
try
{
    var threads = Enumerable.Range(0, options.Workers).Select(w => new Thread(() =>
    {
        Worker? worker = null;
        try
        {
            for (int i = Interlocked.Increment(ref next); i < options.Cases; i = Interlocked.Increment(ref next))
            {
                if (options.Only is { } only && i != only) continue;
                worker ??= Worker.Start(options);
                var result = FuzzCase.Run(i, options, corpus, root, worker);
                results.Add(result);
                // Said at once, so that a long run shows what it finds while it runs.
                if (result.Failure is not null) Console.Error.WriteLine($"  case {i}: {result.Failure}: {result.Signature} ({result.Pipeline} on {result.Base}, {result.Mutation})");
                if (results.Count % 500 == 0)
                    Console.Error.WriteLine($"  {results.Count} of {options.Cases} cases, {results.Count(r => r.Failure is not null)} failed, {clock.Elapsed.TotalSeconds:F0} s");
                if (!worker.Alive) { worker.Dispose(); worker = null; }
            }
        }
        finally { worker?.Dispose(); }
    }) { IsBackground = true }).ToList();
    threads.ForEach(t => t.Start());
    threads.ForEach(t => t.Join());
}
finally
{
    try { Directory.Delete(root, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
}

var all = results.OrderBy(r => r.Id).ToList();
if (options.Only is not null)
{
    Console.WriteLine(JsonSerializer.Serialize(all, new JsonSerializerOptions { WriteIndented = true }));
    return all.Single().Failure is null ? 0 : 1;
}
var failures = all.Where(r => r.Failure is not null).ToList();
int Count(string kind) => failures.Count(f => f.Failure == kind);
var refusedIds = all.SelectMany(r => r.ErrorIds).Distinct().Count();
Console.WriteLine($"cases {all.Count}, crashes {Count("crash")}, hangs {Count("hang")}, unspecific {Count("unspecific")}, memory {Count("memory")}, " +
                  $"changed {Count("changed")}, partial {Count("partial")}; ok {all.Count(r => r.ErrorIds.Count == 0 && r.Failure is null)}, " +
                  $"refused {all.Count(r => r.ErrorIds.Count > 0 && r.Failure is null)} ({refusedIds} distinct ids); {clock.Elapsed.TotalSeconds:F0} s");
Console.WriteLine($"slowest case {all.Max(r => r.Seconds):F1} s; largest memory added {all.Max(r => r.AddedBytes) / 1e6:F0} MB");
foreach (var group in failures.GroupBy(f => f.Failure + ": " + f.Signature).OrderByDescending(g => g.Count()).Take(40))
{
    var first = group.First();
    Console.WriteLine($"  {group.Count(),4} x {group.Key}");
    Console.WriteLine($"         e.g. case {first.Id}: {first.Pipeline} on {first.Base} ({first.Mutation}){(first.Detail is null ? "" : ": " + first.Detail)}");
}
if (options.Json is not null)
    File.WriteAllText(options.Json, JsonSerializer.Serialize(new
    {
        cases = all.Count, crashes = Count("crash"), hangs = Count("hang"), unspecific = Count("unspecific"), memory = Count("memory"),
        changed = Count("changed"), partial = Count("partial"),
        failures = failures.Select(f => new { f.Id, f.Failure, f.Signature, f.Pipeline, f.Base, f.Mutation, f.Detail }),
    }));
return failures.Count == 0 && all.Count == options.Cases ? 0 : 1;

namespace ModelCompression.Fuzz
{
    sealed record FuzzOptions(int Cases, int Seed, int Workers, double Timeout, bool Quick, string Shared, string Module, string? Json, int? Only = null)
    {
        public static FuzzOptions Parse(string[] args)
        {
            string repo = FindRepo();
            var o = new FuzzOptions(300, 1, Math.Max(1, Environment.ProcessorCount), 30, false,
                Path.GetFullPath(Path.Combine(repo, "..", "shared")), Path.Combine(repo, "out", "ModelCompression", "ModelCompression.psd1"), null);
            for (int i = 0; i < args.Length; i++)
            {
                string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
                o = args[i] switch
                {
                    "--cases" => o with { Cases = int.Parse(Value(), CultureInfo.InvariantCulture) },
                    "--seed" => o with { Seed = int.Parse(Value(), CultureInfo.InvariantCulture) },
                    "--workers" => o with { Workers = int.Parse(Value(), CultureInfo.InvariantCulture) },
                    "--timeout" => o with { Timeout = double.Parse(Value(), CultureInfo.InvariantCulture) },
                    "--quick" => o with { Quick = true },
                    "--shared" => o with { Shared = Path.GetFullPath(Value()) },
                    "--module" => o with { Module = Path.GetFullPath(Value()) },
                    "--json" => o with { Json = Path.GetFullPath(Value()) },
                    "--only" => o with { Only = int.Parse(Value(), CultureInfo.InvariantCulture) },
                    _ => throw new ArgumentException($"unknown option {args[i]}"),
                };
            }
            if (!File.Exists(o.Module)) throw new FileNotFoundException($"The module is not built: {o.Module}");
            return o;
        }

        static string FindRepo()
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "ModelCompression.psd1"))) return dir.FullName;
            return Directory.GetCurrentDirectory();
        }
    }

    /// <summary>One pwsh process running worker.ps1; cases go in on standard input, results come back on standard output.</summary>
    sealed class Worker : IDisposable
    {
        readonly Process process;
        readonly BlockingCollection<string> lines = [];
        readonly ConcurrentQueue<string> errors = new();

        Worker(Process process)
        {
            this.process = process;
            var reader = new Thread(() =>
            {
                try { for (string? line; (line = process.StandardOutput.ReadLine()) is not null;) lines.Add(line); }
                catch (IOException) { }
                finally { lines.CompleteAdding(); }
            }) { IsBackground = true };
            reader.Start();
        }

        public static Worker Start(FuzzOptions options)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in new[] { "pwsh", "-NoProfile", "-NonInteractive", "-File", Path.Combine(AppContext.BaseDirectory, "worker.ps1"), "-ModulePath", options.Module })
                psi.ArgumentList.Add(a);
            psi.WorkingDirectory = Path.GetDirectoryName(Path.GetDirectoryName(Path.GetDirectoryName(options.Module)))!;
            var p = Process.Start(psi)!;
            var w = new Worker(p);
            p.ErrorDataReceived += (_, e) => { if (e.Data is { } line) { w.errors.Enqueue(line); while (w.errors.Count > 20) w.errors.TryDequeue(out string? _); } };
            p.BeginErrorReadLine();
            if (w.Next(TimeSpan.FromSeconds(120)) != "ready") throw new InvalidOperationException("the pwsh worker did not start");
            return w;
        }

        public bool Alive => !process.HasExited;

        /// <summary>Sends a case; returns its JSON answer, or null when the worker died or went past <paramref name="wait"/>.</summary>
        public string? Run(string json, TimeSpan wait)
        {
            try { process.StandardInput.WriteLine(json); process.StandardInput.Flush(); }
            catch (IOException) { return null; }
            return Next(wait);
        }

        string? Next(TimeSpan wait)
        {
            try { return lines.TryTake(out var line, wait) ? line : null; }
            catch (InvalidOperationException) { return null; }
        }

        public int? ExitCode => process.HasExited ? process.ExitCode : null;

        /// <summary>The last lines the worker wrote to standard error (what a dying process said).</summary>
        public string LastErrors => string.Join(" | ", errors);

        public void Dispose()
        {
            try { if (!process.HasExited) process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            process.Dispose();
        }
    }

    sealed record CaseResult(int Id, string Pipeline, string Base, string Mutation, double Seconds, long AddedBytes, IReadOnlyList<string> ErrorIds,
        string? Failure, string? Signature, string? Detail);

    static class FuzzCase
    {
        static readonly (string Name, string Script)[] Pipelines =
        [
            ("Get-Model", "Get-Model -LiteralPath $model | Out-Null"),
            ("Get-ModelInfo", "Get-ModelInfo -LiteralPath $model | Out-Null"),
            // A GenAI folder is written as a folder: the target is a new folder in $out.
            ("Export-Model", "$d = if (Test-Path -LiteralPath (Join-Path $model 'genai_config.json')) { Join-Path $out 'g' } else { $out }; Get-Model -LiteralPath $model | Export-Model -Directory $d | Out-Null"),
            ("Export-Model -ExternalData", "Get-Model -LiteralPath $model | Export-Model (Join-Path $out 'e.onnx') -ExternalData | Out-Null"),
            ("Quantize Dynamic", "Get-Model -LiteralPath $model | Invoke-ModelQuantization -Mode Dynamic | Out-Null"),
            ("Quantize WeightOnly", "Get-Model -LiteralPath $model | Invoke-ModelQuantization -Mode WeightOnly | Export-Model (Join-Path $out 'q.onnx') | Out-Null"),
            ("Quantize Float16", "Get-Model -LiteralPath $model | Invoke-ModelQuantization -Mode Float16 | Out-Null"),
            ("Prune", "Get-Model -LiteralPath $model | Invoke-ModelPruning -Rate 0.5 | Out-Null"),
            ("Prune -Structured", "Get-Model -LiteralPath $model | Invoke-ModelPruning -Rate 0.5 -Structured | Out-Null"),
            // Language models get a sequence length for their token input ($tokens), as users give one.
            ("Compare-Model", "$s = if ($tokens) { @{ InputShape = @{ $tokens = 2, 8 } } } else { @{} }; $r = Get-Model -LiteralPath $reference; Get-Model -LiteralPath $model | ForEach-Object { Compare-Model $r $_ -BatchSize 2 @s } | Out-Null"),
            ("Measure-ModelLatency", "$s = if ($tokens) { @{ InputShape = @{ $tokens = 1, 8 } } } else { @{} }; Get-Model -LiteralPath $model | Measure-ModelLatency -Warmup 1 -Iterations 3 @s | Out-Null"),
            ("Optimize-Model", "Get-Model -LiteralPath $model | Optimize-Model | Out-Null"),
        ];

        public static CaseResult Run(int id, FuzzOptions options, IReadOnlyList<BaseModel> corpus, string root, Worker worker)
        {
            // Deterministic from the seed and the case number alone (HashCode would differ between processes).
            var rng = new Random(unchecked(options.Seed * 1_000_003 + id * 7919));
            var baseModel = corpus[rng.Next(corpus.Count)];
            var (pipeline, script) = Pipelines[rng.Next(Pipelines.Length)];
            string dir = Path.Combine(root, $"case-{id}"), output = Path.Combine(dir, "out");
            Directory.CreateDirectory(output);
            var mutated = ModelMutator.Mutate(baseModel, dir, rng);
            var inputs = mutated.Files.Concat(baseModel.Files).Where(File.Exists).ToList();
            var hashes = inputs.ToDictionary(f => f, Hash);
            long inputBytes = inputs.Sum(f => new FileInfo(f).Length);

            var request = new JsonObject
            {
                ["id"] = id, ["script"] = script, ["timeout"] = options.Timeout,
                ["variables"] = new JsonObject { ["model"] = mutated.Path, ["reference"] = baseModel.Reference, ["out"] = output, ["tokens"] = baseModel.Tokens ?? "" },
            };
            string? answer = worker.Run(request.ToJsonString(), TimeSpan.FromSeconds(options.Timeout + 30));
            CaseResult Result(double seconds, long added, IReadOnlyList<string> ids, string? failure, string? signature, string? detail) =>
                new(id, pipeline, baseModel.Name, mutated.Mutation, seconds, added, ids, failure, signature, detail);
            try
            {
                if (answer is null)
                {
                    bool died = !worker.Alive && worker.ExitCode != 3;
                    return died ? Result(0, 0, [], "crash", $"worker exited ({worker.ExitCode})", worker.LastErrors)
                                : Result(options.Timeout, 0, [], "hang", "no answer and could not be stopped", null);
                }
                var json = JsonNode.Parse(answer)!;
                double seconds = json["seconds"]!.GetValue<double>();
                long added = json["addedBytes"]!.GetValue<long>();
                var errors = json["errors"]!.AsArray().Select(e => e!).ToList();
                var ids = errors.Select(e => e["id"]!.GetValue<string>()).ToList();
                if (json["timedOut"]!.GetValue<bool>())
                    return Result(seconds, added, ids, "hang", pipeline, json["stopped"]!.GetValue<bool>() ? "stopped after the limit" : "could not be stopped");
                var vague = errors.FirstOrDefault(e => !IsSpecific(e));
                if (vague is not null)
                    return Result(seconds, added, ids, "unspecific", $"{vague["id"]} {vague["type"]}{(vague["inner"] is { } inner ? " <- " + inner : "")} at {Frame(vague)}",
                        vague["message"]?.GetValue<string>());
                long budget = 4 * inputBytes + (256L << 20);
                if (added > budget) return Result(seconds, added, ids, "memory", pipeline, $"added {added / 1e6:F0} MB for {inputBytes / 1e3:F0} KB of files");
                var changed = hashes.Where(h => !File.Exists(h.Key) || Hash(h.Key) != h.Value).Select(h => h.Key).ToList();
                if (changed.Count > 0) return Result(seconds, added, ids, "changed", pipeline, string.Join(", ", changed));
                if (ids.Count > 0 && Directory.EnumerateFileSystemEntries(output).Any())
                    return Result(seconds, added, ids, "partial", pipeline, string.Join(", ", Directory.EnumerateFileSystemEntries(output).Select(Path.GetFileName)));
                return Result(seconds, added, ids, null, null, null);
            }
            finally
            {
                try { Directory.Delete(dir, true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            }
        }

        /// <summary>A project error: a stable id of the project's own, a category, and an exception the project raised.</summary>
        static bool IsSpecific(JsonNode e)
        {
            string id = e["id"]!.GetValue<string>(), type = e["type"]!.GetValue<string>(), category = e["category"]!.GetValue<string>();
            return id != "UnexpectedError" && category != "NotSpecified" && !id.Contains('.') && !id.Contains(' ')
                   && type is "ModelCompression.Native.EngineException" or "System.ArgumentException";
        }

        static string Frame(JsonNode e) =>
            e["stack"] is JsonArray { Count: > 0 } s ? s[0]!.GetValue<string>().Trim() : e["where"]?.GetValue<string>() ?? "";

        static string Hash(string file) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(file)));
    }

    /// <summary>
    /// A model cases start from: its file and bytes, the text of its genai_config.json when it is a GenAI folder (cases
    /// then load the folder), and the name of its token input when it is a language model.
    /// </summary>
    sealed record BaseModel(string Name, string Path, byte[] Bytes, string? Config = null, string? Tokens = null)
    {
        /// <summary>What a case loads as the unmutated original: the file, or the folder.</summary>
        public string Reference => Config is null ? Path : System.IO.Path.GetDirectoryName(Path)!;
        public IEnumerable<string> Files => Config is null ? [Path] : [Path, System.IO.Path.Combine(Reference, "genai_config.json")];
    }

    static class Corpus
    {
        /// <summary>
        /// The models cases start from: the repository's, ../shared's (the small ones only with --quick; its GenAI folder
        /// and mixed-precision forms of its cache model without), and models built here (<see cref="BuiltModels"/>).
        /// </summary>
        public static IReadOnlyList<BaseModel> Build(FuzzOptions options)
        {
            var files = new List<string>();
            string repo = Path.GetDirectoryName(Path.GetDirectoryName(Path.GetDirectoryName(options.Module)))!;
            files.AddRange(Directory.EnumerateFiles(Path.Combine(repo, "models"), "*.onnx"));
            string shared = Path.Combine(options.Shared, "models");
            if (Directory.Exists(shared))
                files.AddRange(Directory.EnumerateFiles(shared, "*.onnx").Where(f => !options.Quick || new FileInfo(f).Length < 1_000_000));
            string built = Directory.CreateTempSubdirectory("mc-fuzz-corpus-").FullName;
            AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(built, true); } catch (IOException) { } };
            string Save(string name, ModelCompression.Native.Onnx.OnnxModel model)
            {
                string path = Path.Combine(built, name + ".onnx");
                ModelCompression.Native.Onnx.ModelIO.Save(model, path);
                return path;
            }
            foreach (var (name, model) in BuiltModels.All()) files.Add(Save(name, model));
            string kv = Path.Combine(shared, "tiny_llama_kv.onnx");
            if (!options.Quick && File.Exists(kv))
            {
                var model = ModelCompression.Native.Onnx.ModelIO.Load(kv);
                var mixed = BuiltModels.Quantize(model, ModelCompression.Native.Quantization.QuantizationMode.WeightOnly, ["*/q/MatMul", "*/k/MatMul", "*/v/MatMul", "*/o/MatMul"]);
                files.Add(Save("tiny_llama_kv_mixed", mixed));
                files.Add(Save("tiny_llama_kv_mixed_int8", BuiltModels.Quantize(mixed, ModelCompression.Native.Quantization.QuantizationMode.Dynamic, [], force: true)));
            }
            var seeds = files.Distinct().Order(StringComparer.Ordinal).Select(f => Seed(Path.GetFileNameWithoutExtension(f), f)).ToList();
            // GenAI folders: the built decoder with its config, and ../shared's folder.
            string folder = Directory.CreateDirectory(Path.Combine(built, "built_llama_genai")).FullName;
            File.Copy(Path.Combine(built, "built_llama_gqa.onnx"), Path.Combine(folder, "model.onnx"));
            File.WriteAllText(Path.Combine(folder, "genai_config.json"), ModelCompression.Engine.Tests.LlamaModels.GenAiConfig(BuiltModels.Llama, "model.onnx"));
            seeds.Add(Seed("built_llama_genai", Path.Combine(folder, "model.onnx")));
            if (!options.Quick && File.Exists(Path.Combine(shared, "tiny_llama_genai", "genai_config.json")))
                seeds.Add(Seed("tiny_llama_genai", Path.Combine(shared, "tiny_llama_genai", "model.onnx")));
            return seeds;
        }

        static BaseModel Seed(string name, string path)
        {
            string config = Path.Combine(Path.GetDirectoryName(path)!, "genai_config.json");
            bool folder = Path.GetFileName(path) == "model.onnx" && File.Exists(config);
            var bytes = File.ReadAllBytes(path);
            var graph = ModelCompression.Native.Onnx.Proto.ModelProto.Parser.ParseFrom(bytes).Graph;
            return new BaseModel(name, path, bytes, folder ? File.ReadAllText(config) : null, graph.Input.Any(i => i.Name == "input_ids") ? "input_ids" : null);
        }
    }
}
