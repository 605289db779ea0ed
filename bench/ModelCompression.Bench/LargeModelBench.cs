using System.Diagnostics;
using System.Globalization;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Quantization;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Bench;

/// <summary>
/// `large [blocks] [float32|float16|both] [stage,...]`: a generated LLM-sized model (48 residual blocks of 2048x5632 and 5632x2048
/// MatMuls, 1.1B parameters, 4.43 GB in float32, every weight in one external data file as PyTorch/Optimum write large
/// exports). Each stage runs in a child process from load to export, so its time and peak resident memory are its own,
/// and is reported as a ratio to copying the data file in the same run.
/// </summary>
static class LargeModelBench
{
    const int Width = 2048, Hidden = 5632;

    static readonly (string Stage, string What, double TargetRatio)[] Stages =
    [
        ("info", "Get-Model | Get-ModelInfo", 0),
        ("export", "Get-Model | Export-Model", 1.5),
        ("rtn", "WeightOnly 4-bit RTN, block 32", 3),
        ("hqq", "WeightOnly 4-bit HQQ, block 32", 6),
        ("gptq", "WeightOnly 4-bit GPTQ, 64 rows", 20),
        ("awq", "WeightOnly 4-bit AWQ, 64 rows", 20),
        ("budget", "WeightOnly -MaxPerplexityRise 0.01", 0),
        ("dynamic", "Dynamic int8", 0),
        ("prune", "global magnitude pruning 50%", 0),
    ];

    public static int Run(string[] args)
    {
        int blocks = args.Length > 0 ? int.Parse(args[0], CultureInfo.InvariantCulture) : 48;
        string which = args.Length > 1 ? args[1] : "both";
        var only = args.Length > 2 ? args[2].Split(',') : null;
        string dir = Directory.CreateTempSubdirectory("mc-bench-large-").FullName;
        try
        {
            foreach (var type in which == "both" ? [DT.Float, DT.Float16] : new[] { which == "float16" ? DT.Float16 : DT.Float })
                RunOne(dir, blocks, type, only);
            return 0;
        }
        finally { Directory.Delete(dir, true); }
    }

    static void RunOne(string dir, int blocks, DT type, string[]? only)
    {
        string source = Path.Combine(dir, $"large-{ElementTypes.Name((int)type)}.onnx");
        var sw = Stopwatch.StartNew();
        long parameters = WriteResidualMlp(source, blocks, type);
        long dataBytes = new FileInfo(source + ".data").Length;
        Console.WriteLine($"model: {blocks} blocks of {Width}x{Hidden} + {Hidden}x{Width} MatMuls, {parameters / 1e9:F2}B parameters, " +
                          $"{ElementTypes.Name((int)type)}, {dataBytes / 1e9:F2} GB in one external data file (generated in {sw.Elapsed.TotalSeconds:F0} s)");
        double copy = Enumerable.Range(0, 2).Min(_ => BenchSupport.TimeFileCopy(source + ".data").Wall);
        Console.WriteLine($"  file copy of the data (+fsync): {copy:F2} s (best of 2)");
        Console.WriteLine($"  {"stage",-34} {"wall s",7} {"x copy",7} {"target",7} {"peak RSS",9}  detail");
        foreach (var (stage, what, target) in Stages)
        {
            if (only is not null && !only.Contains(stage)) continue;
            string output = Path.Combine(dir, "out.onnx");
            var parts = BenchSupport.RunChild("large-child", stage, source, output).Split(' ', 4);
            if (parts[0] == "refused") { Console.WriteLine($"  {what,-34} refused: {string.Join(' ', parts[1..])}"); continue; }
            double wall = double.Parse(parts[0], CultureInfo.InvariantCulture);
            long peak = long.Parse(parts[1], CultureInfo.InvariantCulture);
            Console.WriteLine($"  {what,-34} {wall,7:F2} {wall / copy,6:F2}x {(target > 0 ? $"<={target}x" : ""),7} {peak / 1e9,6:F2} GB  {(parts.Length > 3 ? parts[3] : "")}");
            foreach (var f in Directory.EnumerateFiles(dir, "out.onnx*")) File.Delete(f);
        }
        File.Delete(source);
        File.Delete(source + ".data");
    }

    /// <summary>`large-write-child blocks path`: writes the float32 model alone (to run one stage by hand with `large-child stage path out`).</summary>
    public static int Write(string[] args)
    {
        long parameters = WriteResidualMlp(args[1], int.Parse(args[0], CultureInfo.InvariantCulture), DT.Float);
        Console.WriteLine($"{args[1]}: {parameters / 1e9:F2}B parameters");
        return 0;
    }

    /// <summary>Child: one stage from load to flushed export; prints "wall peakRss cpu detail".</summary>
    public static int Child(string[] args)
    {
        string stage = args[0], source = args[1], target = args[2];
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        string detail = "";
        try
        {
            var model = ModelIO.Load(source);
            double load = sw.Elapsed.TotalSeconds;
            OnnxModel? result = stage switch
            {
                "info" => null,
                "export" => model,
                "rtn" => ModelQuantizer.Quantize(model, new QuantizationOptions { Mode = QuantizationMode.WeightOnly, Bits = 4, BlockSize = 32 }),
                "hqq" => ModelQuantizer.Quantize(model, new QuantizationOptions { Mode = QuantizationMode.WeightOnly, Bits = 4, BlockSize = 32, Algorithm = new HqqAlgorithm() }),
                "gptq" or "awq" => ModelQuantizer.Quantize(model, new QuantizationOptions
                {
                    Mode = QuantizationMode.WeightOnly, Bits = 4, BlockSize = 32, CalibrationData = Calibration(model, 64),
                    Algorithm = stage == "gptq" ? new GptqAlgorithm() : new AwqAlgorithm(),
                }),
                // Not a language model: the budget has nothing to measure perplexity on, and says so before any work.
                "budget" => ModelQuantizer.Quantize(model, new QuantizationOptions
                {
                    Mode = QuantizationMode.WeightOnly, CalibrationData = Calibration(model, 64), ValidationData = new ModelCompression.Native.Data.DataSet("labelled rows", [.. Calibration(model, 16).Arrays, new ModelCompression.Native.Data.NamedArray("y", [16], new long[16])]),
                    Budget = QualityBudget.MaxPerplexityRise(0.01),
                }),
                "dynamic" => ModelQuantizer.Quantize(model, new QuantizationOptions { Mode = QuantizationMode.Dynamic }),
                "prune" => ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Scope = PruningScope.Global }),
                _ => throw new ArgumentException("unknown stage " + stage),
            };
            if (result is null)
            {
                var info = ModelSummary.Of(model);
                detail = $"load {load:F2} s; {info.Parameters / 1e9:F2}B parameters, {info.SerializedSize / 1e9:F2} GB";
            }
            else
            {
                double work = sw.Elapsed.TotalSeconds - load;
                var saved = ModelIO.Save(result, target, new SaveOptions { Overwrite = true });
                long written = new FileInfo(saved.ModelPath).Length + (saved.DataPath is null ? 0 : new FileInfo(saved.DataPath).Length);
                detail = $"load {load:F2} s, stage {work:F2} s, export {sw.Elapsed.TotalSeconds - load - work:F2} s; wrote {written / 1e9:F2} GB";
            }
        }
        catch (ModelCompression.Native.EngineException e)
        {
            Console.WriteLine($"refused {e.ErrorId}: {e.Message}");
            return 0;
        }
        double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{sw.Elapsed.TotalSeconds:R} {BenchSupport.PeakRss()} {cpuSeconds:R} {detail} (CPU {cpuSeconds:F1} s)"));
        return 0;
    }

    /// <summary>Rows of standard normal values for the model's one float input ([rows, width]).</summary>
    internal static ModelCompression.Native.Data.DataSet Calibration(OnnxModel model, int rows)
    {
        var input = model.Proto.Graph.Input[0];
        int width = (int)input.Type.TensorType.Shape.Dim[^1].DimValue;
        var rng = new Random(5);
        var x = new float[rows * width];
        for (int i = 0; i < x.Length; i++) x[i] = (float)(Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble()));
        return new ModelCompression.Native.Data.DataSet("synthesized", [new ModelCompression.Native.Data.NamedArray(input.Name, [rows, width], x)]);
    }

    /// <summary>
    /// Writes x -> [MatMul(d x h) -> Relu -> MatMul(h x d) -> Add x] x blocks with random weights, streaming each weight
    /// into one data file (the generator never holds more than one tensor). Returns the parameter count.
    /// </summary>
    public static long WriteResidualMlp(string path, int blocks, DT type)
    {
        var b = new GraphBuilder("large_residual_mlp").Input("x", type, "batch", Width).Output("y", type, "batch", Width);
        string dataName = Path.GetFileName(path) + ".data";
        int elementBytes = type == DT.Float16 ? 2 : 4;
        var values = new float[Width * Hidden];
        var half = type == DT.Float16 ? new Half[values.Length] : null;
        ulong state = 0x9E3779B97F4A7C15;
        long parameters = 0;
        using (var data = new FileStream(path + ".data", FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
        {
            string Weight(string name, long rows, long cols)
            {
                // xorshift: fast enough that writing the file, not drawing numbers, is the cost.
                float scale = 0.5f / MathF.Sqrt(rows);
                for (int i = 0; i < values.Length; i++)
                {
                    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                    values[i] = ((int)(state >> 40) / (float)(1 << 23) - 1f) * scale;
                }
                long offset = (data.Position + 4095) / 4096 * 4096;
                data.Position = offset;
                ReadOnlySpan<byte> bytes;
                if (half is not null) { TensorPrimitives.ConvertToHalf(values, half); bytes = MemoryMarshal.AsBytes(half.AsSpan()); }
                else bytes = MemoryMarshal.AsBytes(values.AsSpan());
                data.Write(bytes);
                var t = new TensorProto { Name = name, DataType = (int)type, DataLocation = TensorProto.Types.DataLocation.External };
                t.Dims.Add(rows); t.Dims.Add(cols);
                t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = dataName });
                t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
                t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = (rows * cols * elementBytes).ToString(CultureInfo.InvariantCulture) });
                b.Graph.Initializer.Add(t);
                parameters += rows * cols;
                return name;
            }
            string x = "x";
            for (int l = 0; l < blocks; l++)
            {
                string h = b.Node("MatMul", [x, Weight($"blocks.{l}.up.weight", Width, Hidden)], name: $"blocks.{l}.up");
                h = b.Node("Relu", [h], name: $"blocks.{l}.act");
                string y = b.Node("MatMul", [h, Weight($"blocks.{l}.down.weight", Hidden, Width)], name: $"blocks.{l}.down");
                x = b.Node("Add", [x, y], l == blocks - 1 ? ["y"] : null, name: $"blocks.{l}.residual");
            }
            data.Flush(flushToDisk: true);
        }
        using (var file = File.Create(path)) Google.Protobuf.MessageExtensions.WriteTo(b.Build(), file);
        return parameters;
    }
}
