using Google.Protobuf;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Float16 conversion.
/// <list type="bullet">
/// <item>Full (default): float32 weights and computation become float16; operators in the block list (numerically
/// fragile or float32-only) stay float32 behind Casts; float32 graph inputs and outputs are kept with Casts at the edges
/// (KeepIOTypes). Value types come from ONNX Runtime's type inference.</item>
/// <item>StorageOnly: float32 weights are stored as float16 and cast back to float32 when the session is created,
/// so the file halves and computation stays float32 (for CPUs without fast float16).</item>
/// </list>
/// </summary>
public static class Float16Converter
{
    /// <summary>
    /// Kept in float32 by default: ops whose float16 results lose too much (exponentials, powers, sums of squares),
    /// ops with float32-only or type-attribute semantics, and control flow.
    /// </summary>
    public static readonly string[] DefaultBlockList =
    [
        "Exp", "Log", "Pow", "Softplus", "ReduceSumSquare", "ReduceLogSumExp", "ReduceL2", "CumSum",
        "Range", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "EyeLike",
        "NonMaxSuppression", "RoiAlign", "TopK", "If", "Loop", "Scan",
    ];

    /// <summary>Inputs that must be float32 whatever the node computes in (by the operator's schema).</summary>
    static readonly Dictionary<string, int[]> Float32Inputs = new(StringComparer.Ordinal)
    {
        ["Resize"] = [2],
        ["Upsample"] = [1],
    };

    /// <summary>Tensors smaller than this stay float32 in storage-only mode (a Cast costs more than it saves).</summary>
    const int StorageMinElements = 16;

    internal static (long Before, long After) Run(ModelProto model, QuantizationOptions o, QuantizationReport report, CancellationToken cancel) =>
        o.StorageOnly == true ? StorageOnly(model, report, cancel) : Full(model, o, report, cancel);

    static (long, long) StorageOnly(ModelProto model, QuantizationReport report, CancellationToken cancel)
    {
        var graph = model.Graph;
        var index = new GraphIndex(model);
        var inputs = graph.Input.Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
        var casts = new List<NodeProto>();
        long before = 0, after = 0;
        for (int i = 0; i < graph.Initializer.Count; i++)
        {
            cancel.ThrowIfCancellationRequested();
            var t = graph.Initializer[i];
            if (t.DataType != (int)DT.Float || inputs.Contains(t.Name) || TensorData.ElementCount(t) < StorageMinElements) continue;
            if (ToHalf(t, report) is not { } half) continue;
            string name = index.Fresh(t.Name + "_fp16");
            graph.Initializer[i] = Half(name, t.Dims.ToArray(), half);
            casts.Add(Node("Cast", index.Fresh(t.Name + "_to_fp32"), [name], [t.Name], "", GraphBuilder.Attr("to", (long)DT.Float)));
            before += TensorData.StorageBytes(t); after += half.Length;
            report.Tensor(t.Name, "float16 storage, cast to float32 when the session loads");
        }
        foreach (var n in graph.Node)
        {
            if (n.OpType != "Constant" || n.Domain is not ("" or "ai.onnx")) continue;
            var attr = n.Attribute.FirstOrDefault(a => a.Name == "value" && a.T is not null);
            if (attr is null || attr.T.DataType != (int)DT.Float || TensorData.ElementCount(attr.T) < StorageMinElements) continue;
            if (ToHalf(attr.T, report, n.Output[0]) is not { } half) continue;
            before += TensorData.StorageBytes(attr.T); after += half.Length;
            attr.T = Half(attr.T.Name, attr.T.Dims.ToArray(), half);
            string original = n.Output[0], renamed = index.Fresh(original + "_fp16");
            n.Output[0] = renamed;
            casts.Add(Node("Cast", index.Fresh(original + "_to_fp32"), [renamed], [original], "", GraphBuilder.Attr("to", (long)DT.Float)));
            report.Tensor(original, "float16 storage, cast to float32 when the session loads");
        }
        // Casts of initializers go first; casts of Constant outputs right after their Constant node.
        var nodes = new List<NodeProto>(graph.Node.Count + casts.Count);
        var castByInput = casts.ToDictionary(c => c.Input[0], StringComparer.Ordinal);
        foreach (var c in casts) if (!graph.Node.Any(n => n.Output.Contains(c.Input[0]))) nodes.Add(c);
        foreach (var n in graph.Node)
        {
            nodes.Add(n);
            foreach (var output in n.Output) if (castByInput.TryGetValue(output, out var c)) nodes.Add(c);
        }
        graph.Node.Clear();
        graph.Node.AddRange(nodes);
        return (before, after);
    }

    static (long, long) Full(ModelProto model, QuantizationOptions o, QuantizationReport report, CancellationToken cancel)
    {
        if (model.Graph.Node.FirstOrDefault(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0)) is { } sub)
            throw new EngineException("Float16SubgraphsUnsupported", EngineErrorKind.NotImplemented,
                $"Float16 conversion of computation does not handle control flow: node '{sub.Name}' ({sub.OpType}) has subgraphs. Use -StorageOnly.");
        return new FullConversion(model, o, report, cancel).Run();
    }

    /// <summary>
    /// Full conversion in phases: which constants feed float16 consumers; the home type of every float value (the type it
    /// is produced in) while initializers and nodes are converted; graph outputs kept float32 behind a final Cast; and a
    /// Cast wherever a consumer wants the other type (one per value and type).
    /// </summary>
    sealed class FullConversion(ModelProto model, QuantizationOptions o, QuantizationReport report, CancellationToken cancel)
    {
        readonly GraphProto graph = model.Graph;
        readonly Dictionary<string, DT> types = ValueTypes.Infer(model);
        readonly GraphIndex index = new(model);
        readonly HashSet<string> block = (o.Float16BlockList ?? DefaultBlockList).ToHashSet(StringComparer.OrdinalIgnoreCase);
        readonly bool keepIO = o.KeepIOTypes ?? true;
        readonly HashSet<string> constantWantsHalf = new(StringComparer.Ordinal);
        /// <summary>Home type of every float value: true = float16.</summary>
        readonly Dictionary<string, bool> home = new(StringComparer.Ordinal);
        readonly Dictionary<string, string> rename = new(StringComparer.Ordinal);
        long before, after;

        bool IsFloat(string v) => v.Length > 0 && types.TryGetValue(v, out var t) && t == DT.Float;
        bool Excluded(NodeProto n) => MatchesAny(n.Name, o.ExcludeNodes);
        bool Blocked(NodeProto n) => block.Contains(n.OpType) || n.Domain is not ("" or "ai.onnx") || ModelQuantizer.QuantizedOps.Contains(n.OpType) || Excluded(n);
        bool WantsHalf(NodeProto n, int slot) => !Blocked(n) && !(Float32Inputs.TryGetValue(n.OpType, out var slots) && slots.Contains(slot));

        public (long, long) Run()
        {
            foreach (var n in graph.Node)
                for (int i = 0; i < n.Input.Count; i++)
                    if (IsFloat(n.Input[i]) && WantsHalf(n, i) && index.ConstantSource(n.Input[i]) is { } source) { constantWantsHalf.Add(n.Input[i]); constantWantsHalf.Add(source); }
            ConvertInitializers();
            foreach (var n in graph.Node)
            {
                cancel.ThrowIfCancellationRequested();
                ConvertNode(n);
            }
            var finalCasts = KeepOutputTypes();
            InsertCasts(finalCasts);
            graph.ValueInfo.Clear(); // element types changed; ONNX Runtime infers them again
            RemoveUnused(graph);
            return (before, after);
        }

        void ConvertInitializers()
        {
            var graphInputs = graph.Input.Select(v => v.Name).ToHashSet(StringComparer.Ordinal);
            foreach (var v in graph.Input) if (IsFloat(v.Name) && index.Constant(v.Name) is null) home[v.Name] = !keepIO;
            for (int i = 0; i < graph.Initializer.Count; i++)
            {
                var t = graph.Initializer[i];
                if (t.DataType != (int)DT.Float || graphInputs.Contains(t.Name)) continue;
                if (!constantWantsHalf.Contains(t.Name)) { home[t.Name] = false; continue; }
                var half = ToHalf(t, report);
                home[t.Name] = half is not null;
                if (half is null) continue;
                before += TensorData.StorageBytes(t); after += half.Length;
                graph.Initializer[i] = Half(t.Name, t.Dims.ToArray(), half);
            }
        }

        void ConvertNode(NodeProto n)
        {
            bool blocked = Blocked(n);
            if (n.OpType == "Constant" && !blocked && n.Attribute.FirstOrDefault(a => a.Name == "value" && a.T is not null) is { T.DataType: (int)DT.Float } attr)
            {
                var half = constantWantsHalf.Contains(n.Output[0]) ? ToHalf(attr.T, report, n.Output[0]) : null;
                if (half is not null) { before += TensorData.StorageBytes(attr.T); after += half.Length; attr.T = Half(attr.T.Name, attr.T.Dims.ToArray(), half); }
                home[n.Output[0]] = half is not null;
                return;
            }
            if (n.OpType == "Identity" && index.Constant(n.Output[0]) is not null && home.TryGetValue(index.ConstantSource(n.Output[0])!, out var srcHome))
            {
                home[n.Output[0]] = srcHome;
                return;
            }
            foreach (var output in n.Output) if (IsFloat(output)) home[output] = !blocked;
            if (blocked)
            {
                if (n.Input.Any(IsFloat) || n.Output.Any(IsFloat)) report.Keep(n, Excluded(n) ? "excluded by -ExcludeNode" : block.Contains(n.OpType) ? "in the float16 block list" : "not a standard ONNX operator; left float32");
                return;
            }
            if (n.OpType == "Cast" && IntAttr(n, "to") == (long)DT.Float)
                n.Attribute.First(a => a.Name == "to").I = (long)DT.Float16;
            if (n.OpType == "ConstantOfShape" && n.Attribute.FirstOrDefault(a => a.Name == "value") is { T: { DataType: (int)DT.Float } value } valueAttr)
                valueAttr.T = Half(value.Name, value.Dims.ToArray(), QuantMath.HalfBytes(QuantMath.ToHalf(TensorData.ToFloat(value))));
            if (n.Output.Any(IsFloat)) report.Done(n, "float16", QuantizationReport.Converted);
        }

        /// <summary>Graph outputs produced in float16 keep their name and float32 type through a final Cast (KeepIOTypes).</summary>
        List<NodeProto> KeepOutputTypes()
        {
            var finalCasts = new List<NodeProto>();
            foreach (var v in graph.Output)
            {
                if (!home.TryGetValue(v.Name, out bool isHalf) || !isHalf) continue;
                if (keepIO)
                {
                    string inner = index.Fresh(v.Name + "_fp16");
                    rename[v.Name] = inner;
                    finalCasts.Add(Node("Cast", index.Fresh(v.Name + "_to_fp32"), [inner], [v.Name], "", GraphBuilder.Attr("to", (long)DT.Float)));
                }
                else v.Type.TensorType.ElemType = (int)DT.Float16;
            }
            if (!keepIO) foreach (var v in graph.Input) if (home.TryGetValue(v.Name, out bool h) && h) v.Type.TensorType.ElemType = (int)DT.Float16;
            foreach (var n in graph.Node)
                for (int i = 0; i < n.Output.Count; i++) if (rename.TryGetValue(n.Output[i], out var r)) n.Output[i] = r;
            return finalCasts;
        }

        /// <summary>A Cast wherever a consumer wants the other type; one Cast per (value, type).</summary>
        void InsertCasts(List<NodeProto> finalCasts)
        {
            var castNames = new Dictionary<(string, bool), string>();
            var pending = new Dictionary<string, List<NodeProto>>(StringComparer.Ordinal);
            var leading = new List<NodeProto>();
            var producers = new HashSet<string>(graph.Node.SelectMany(n => n.Output), StringComparer.Ordinal);
            string Converted(string v, bool toHalf)
            {
                if (castNames.TryGetValue((v, toHalf), out var name)) return name;
                string source = rename.GetValueOrDefault(v, v);
                name = index.Fresh(v + (toHalf ? "_to_fp16" : "_to_fp32"));
                var cast = Node("Cast", index.Fresh(name), [source], [name], "", GraphBuilder.Attr("to", (long)(toHalf ? DT.Float16 : DT.Float)));
                if (producers.Contains(source)) { if (!pending.TryGetValue(source, out var list)) pending[source] = list = []; list.Add(cast); }
                else leading.Add(cast);
                castNames[(v, toHalf)] = name;
                return name;
            }
            foreach (var n in graph.Node)
                for (int i = 0; i < n.Input.Count; i++)
                {
                    string v = n.Input[i];
                    if (!home.TryGetValue(v, out bool isHalf)) { if (rename.TryGetValue(v, out var r)) n.Input[i] = r; continue; }
                    bool wantHalf = WantsHalf(n, i);
                    n.Input[i] = wantHalf == isHalf ? rename.GetValueOrDefault(v, v) : Converted(v, wantHalf);
                }
            var nodes = new List<NodeProto>(leading);
            foreach (var n in graph.Node)
            {
                nodes.Add(n);
                foreach (var output in n.Output) if (pending.TryGetValue(output, out var list)) nodes.AddRange(list);
            }
            nodes.AddRange(finalCasts);
            graph.Node.Clear();
            graph.Node.AddRange(nodes);
        }
    }

    /// <summary>float16 bytes of a float32 tensor, or null (reported) when a value does not fit in float16.</summary>
    static byte[]? ToHalf(TensorProto t, QuantizationReport report, string? name = null)
    {
        var values = TensorData.ToFloat(t);
        var (min, max) = QuantMath.MinMax(values, name ?? t.Name);
        if (MathF.Max(MathF.Abs(min), MathF.Abs(max)) > QuantMath.HalfMax)
        {
            report.Tensor(name ?? t.Name, $"values up to {MathF.Max(MathF.Abs(min), MathF.Abs(max)):G4} exceed float16's range; kept float32", QuantizationReport.Kept);
            return null;
        }
        return QuantMath.HalfBytes(QuantMath.ToHalf(values));
    }
}

/// <summary>-Mode Float16 in the mode table: it converts tensors and computation rather than operator families.</summary>
internal sealed class Float16Mode : IQuantizationMode
{
    public QuantizationMode Mode => QuantizationMode.Float16;
    public IReadOnlyList<string> DefaultOps => [];
    public IReadOnlyList<string> SupportedOps => [];

    public (long Before, long After) Run(QuantizationRun run) => Float16Converter.Run(run.Model, run.Options, run.Report, run.Cancel);
}
