using System.Globalization;
using Google.Protobuf;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Fuzz;

/// <summary>A mutated model on disk: the file (or GenAI folder) to load, the mutation that made it, and every file it consists of.</summary>
sealed record MutatedModel(string Path, string Mutation, IReadOnlyList<string> Files);

/// <summary>
/// Makes hostile variants of a model, deterministically from a random source: byte flips and truncations of the file,
/// ONNX-aware edits (dims, element types, raw data, names, node inputs and outputs, attributes, opsets, metadata, input
/// shapes, external data pointing at odd places), odd files (empty, FIFO, device links, folders), and edits aimed at the
/// newer families (<see cref="FamilyMutations"/>: decoder contracts, quantized nodes, genai_config.json).
/// </summary>
static class ModelMutator
{
    static readonly long[] OddDims = [0, -1, -7, 1L << 31, (1L << 31) - 1, 1L << 32, 1L << 40, 1L << 62, long.MaxValue, 3, 1000003];
    static readonly string[] Families = ["flip", "truncate", "dims", "type", "raw", "names", "node", "attribute", "opset", "metadata", "input", "external", "odd", "decoder", "quantized"];

    /// <summary>
    /// Mutates <paramref name="seed"/> into <paramref name="dir"/>. A GenAI folder seed becomes a folder of its own in it
    /// (model.onnx and genai_config.json, one of them mutated; beside the case's output, not above it) and the case
    /// loads the folder.
    /// </summary>
    public static MutatedModel Mutate(BaseModel seed, string dir, Random rng)
    {
        if (seed.Config is null) return Mutate(seed.Bytes, seed.Path, dir, rng);
        dir = Directory.CreateDirectory(System.IO.Path.Combine(dir, "genai")).FullName;
        string config = System.IO.Path.Combine(dir, "genai_config.json");
        MutatedModel model;
        if (rng.Next(3) == 0)
        {
            var (json, what) = FamilyMutations.GenAiConfig(seed.Config, rng);
            File.WriteAllText(config, json);
            File.WriteAllBytes(System.IO.Path.Combine(dir, "model.onnx"), seed.Bytes);
            model = new(dir, what, [System.IO.Path.Combine(dir, "model.onnx")]);
        }
        else
        {
            File.WriteAllText(config, seed.Config);
            model = Mutate(seed.Bytes, seed.Path, dir, rng);
        }
        return new(dir, model.Mutation + " (GenAI folder)", [.. model.Files, config]);
    }

    static MutatedModel Mutate(byte[] original, string externalSource, string dir, Random rng)
    {
        string family = Families[rng.Next(Families.Length)];
        string path = System.IO.Path.Combine(dir, "model.onnx");
        var files = new List<string> { path };
        switch (family)
        {
            case "flip":
                {
                    var bytes = (byte[])original.Clone();
                    int flips = 1 + rng.Next(8);
                    for (int i = 0; i < flips; i++) bytes[rng.Next(bytes.Length)] ^= (byte)(1 << rng.Next(8));
                    File.WriteAllBytes(path, bytes);
                    return new(path, $"flip {flips} bits", files);
                }
            case "truncate":
                {
                    int length = rng.Next(original.Length);
                    File.WriteAllBytes(path, original[..length]);
                    return new(path, $"truncate to {length} of {original.Length} bytes", files);
                }
            case "odd":
                return Odd(path, dir, rng, files);
        }

        var proto = ModelProto.Parser.ParseFrom(original);
        var graph = proto.Graph;
        var tensors = ModelIO.AllTensors(graph).ToList();
        string what = family;
        switch (family)
        {
            case "dims" when tensors.Count > 0:
                {
                    var t = Pick(rng, tensors);
                    if (t.Dims.Count == 0) t.Dims.Add(0);
                    int i = rng.Next(t.Dims.Count);
                    t.Dims[i] = Pick(rng, OddDims);
                    what = $"dims of '{t.Name}' -> [{string.Join(",", t.Dims)}]";
                    break;
                }
            case "type" when tensors.Count > 0:
                {
                    var t = Pick(rng, tensors);
                    t.DataType = rng.Next(0, 26);
                    what = $"element type of '{t.Name}' -> {t.DataType}";
                    break;
                }
            case "raw" when tensors.Count > 0:
                {
                    var t = Pick(rng, tensors);
                    var raw = TensorData.IsExternal(t) ? [] : t.RawData.ToByteArray();
                    int change = rng.Next(3);
                    raw = change switch
                    {
                        0 when raw.Length > 0 => raw[..rng.Next(raw.Length)],
                        1 => [.. raw, .. Enumerable.Range(0, 1 + rng.Next(64)).Select(_ => (byte)rng.Next(256))],
                        _ => [],
                    };
                    t.RawData = ByteString.CopyFrom(raw);
                    t.FloatData.Clear(); t.Int64Data.Clear(); t.Int32Data.Clear();
                    what = $"raw data of '{t.Name}' -> {raw.Length} bytes";
                    break;
                }
            case "names" when graph.Initializer.Count > 1:
                {
                    var a = Pick(rng, graph.Initializer.ToList());
                    switch (rng.Next(3))
                    {
                        case 0: graph.Initializer.Add(a.Clone()); what = $"initializer '{a.Name}' twice"; break;
                        case 1: a.Name = Pick(rng, graph.Initializer.ToList()).Name; what = $"initializer renamed to '{a.Name}'"; break;
                        default: a.Name = ""; what = "initializer with no name"; break;
                    }
                    break;
                }
            case "node" when graph.Node.Count > 0:
                {
                    var n = Pick(rng, graph.Node.ToList());
                    switch (rng.Next(6))
                    {
                        case 0 when n.Input.Count > 0: n.Input.RemoveAt(rng.Next(n.Input.Count)); what = $"node '{n.Name}' loses an input"; break;
                        case 1: n.Input.Add("no_such_value"); what = $"node '{n.Name}' reads a value nobody makes"; break;
                        case 2 when n.Output.Count > 0: n.Output.RemoveAt(0); what = $"node '{n.Name}' loses its output"; break;
                        case 3: n.Output.Add(graph.Node[0].Output.FirstOrDefault() ?? "x"); what = $"node '{n.Name}' repeats an output"; break;
                        case 4: n.OpType = Pick(rng, new[] { "MatMul", "Gemm", "Conv", "Reshape", "NoSuchOp", "Loop", "Gather", "" }); what = $"node '{n.Name}' becomes {n.OpType}"; break;
                        default: n.Domain = "com.example.unknown"; what = $"node '{n.Name}' in an unknown domain"; break;
                    }
                    break;
                }
            case "attribute" when graph.Node.Any(n => n.Attribute.Count > 0):
                {
                    var n = Pick(rng, graph.Node.Where(n => n.Attribute.Count > 0).ToList());
                    var a = Pick(rng, n.Attribute.ToList());
                    if (rng.Next(3) == 0) { n.Attribute.Remove(a); what = $"attribute '{a.Name}' of '{n.Name}' removed"; }
                    else
                    {
                        a.I = Pick(rng, OddDims);
                        for (int i = 0; i < a.Ints.Count; i++) a.Ints[i] = Pick(rng, OddDims);
                        what = $"attribute '{a.Name}' of '{n.Name}' -> {a.I}";
                    }
                    break;
                }
            case "opset":
                {
                    switch (rng.Next(3))
                    {
                        case 0: proto.OpsetImport.Clear(); what = "no opset import"; break;
                        case 1: foreach (var o in proto.OpsetImport) o.Version = Pick(rng, new long[] { 1, 6, 999, -3 }); what = $"opset version -> {proto.OpsetImport.FirstOrDefault()?.Version}"; break;
                        default: proto.IrVersion = Pick(rng, new long[] { 0, 1, 99, -1 }); what = $"IR version -> {proto.IrVersion}"; break;
                    }
                    break;
                }
            case "metadata":
                {
                    string json = Pick(rng, new[] { "[{}]", "[null]", "{", "42", "[{\"Name\":null}]", new string('[', 5000) });
                    proto.MetadataProps.Add(new StringStringEntryProto { Key = ModelStage.MetadataKey, Value = json });
                    what = $"history '{json[..Math.Min(12, json.Length)]}'";
                    break;
                }
            case "input" when graph.Input.Count > 0:
                {
                    var input = Pick(rng, graph.Input.ToList());
                    var shape = input.Type?.TensorType?.Shape;
                    if (shape is null || shape.Dim.Count == 0) { what = "input without a shape"; break; }
                    foreach (var d in shape.Dim) d.DimValue = Pick(rng, new long[] { 1L << 14, 1L << 20, 1L << 31, 1L << 62, -5, 0, 1 });
                    what = $"input '{input.Name}' -> [{string.Join(",", shape.Dim.Select(d => d.DimValue))}]";
                    break;
                }
            case "external" when graph.Initializer.Count > 0:
                {
                    var t = Pick(rng, graph.Initializer.ToList());
                    string location = ExternalTarget(dir, externalSource, rng, files, out long offset);
                    t.ClearRawData(); t.FloatData.Clear(); t.Int64Data.Clear(); t.Int32Data.Clear();
                    t.ExternalData.Clear();
                    t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
                    t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
                    t.DataLocation = TensorProto.Types.DataLocation.External;
                    what = $"'{t.Name}' in external data '{location}' at {offset}";
                    break;
                }
            case "decoder":
                what = FamilyMutations.Decoder(proto, rng) ?? "unchanged (no decoder contract)";
                break;
            case "quantized":
                what = FamilyMutations.Quantized(proto, rng) ?? "unchanged (no quantized node)";
                break;
            default:
                what = "unchanged";
                break;
        }
        File.WriteAllBytes(path, proto.ToByteArray());
        return new(path, what, files);
    }

    /// <summary>Where a tensor's external data points: a good file at a bad offset, nowhere, outside, a FIFO, a link, a folder.</summary>
    static string ExternalTarget(string dir, string source, Random rng, List<string> files, out long offset)
    {
        offset = 0;
        string data = System.IO.Path.Combine(dir, "w.data");
        switch (rng.Next(7))
        {
            case 0: File.Copy(source, data, true); files.Add(data); offset = Pick(rng, new long[] { 0, 4096, 1L << 40, long.MaxValue }); return "w.data";
            case 1: return "missing.data";
            case 2: return Pick(rng, new[] { "../w.data", "/etc/passwd", "C:/x.data", "sub/../../w.data" });
            case 3 when !OperatingSystem.IsWindows(): Fifo(data); return "w.data";
            case 4 when !OperatingSystem.IsWindows(): File.CreateSymbolicLink(data, "/dev/zero"); return "w.data";
            case 5: Directory.CreateDirectory(data); return "w.data";
            default: File.WriteAllBytes(data, new byte[rng.Next(64)]); files.Add(data); return "w.data";
        }
    }

    static MutatedModel Odd(string path, string dir, Random rng, List<string> files)
    {
        switch (rng.Next(6))
        {
            case 0: File.WriteAllBytes(path, []); return new(path, "empty file", files);
            case 1: Directory.CreateDirectory(path); files.Clear(); return new(path, "folder named .onnx", files);
            case 2 when !OperatingSystem.IsWindows(): Fifo(path); files.Clear(); return new(path, "FIFO", files);
            case 3 when !OperatingSystem.IsWindows():
                File.CreateSymbolicLink(path, Pick(rng, new[] { "/dev/zero", "/dev/null", "/proc/self/status", System.IO.Path.Combine(dir, "nowhere") }));
                files.Clear();
                return new(path, "link to " + File.ResolveLinkTarget(path, false)!.FullName, files);
            default:
                var bytes = new byte[rng.Next(1, 4096)];
                rng.NextBytes(bytes);
                File.WriteAllBytes(path, bytes);
                return new(path, $"{bytes.Length} random bytes", files);
        }
    }

    static void Fifo(string path)
    {
        using var p = System.Diagnostics.Process.Start("mkfifo", [path])!;
        p.WaitForExit();
    }

    static T Pick<T>(Random rng, IReadOnlyList<T> items) => items[rng.Next(items.Count)];
}
