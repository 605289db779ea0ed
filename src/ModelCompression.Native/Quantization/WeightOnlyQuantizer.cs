using System.Globalization;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using static ModelCompression.Native.Onnx.GraphIndex;
using static ModelCompression.Native.Quantization.QuantNodes;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Weight-only block quantization to 4 or 8 bits of constant MatMul and Gemm weights (and embedding tables read by
/// Gather), with the codes chosen by RTN, HQQ or GPTQ (<see cref="WeightOnlyAlgorithm"/>).
/// <list type="bullet">
/// <item>MatMulNBits format: ONNX Runtime's com.microsoft MatMulNBits (B uint8 [N, blocks, blockSize*bits/8], scales
/// [N*blocks] in the type the node computes in, zero points packed per column when asymmetric); embedding tables become
/// com.microsoft GatherBlockQuantized (uint8 rows [V, D*bits/8], blocks along D).</item>
/// <item>Standard format: opset 21 blocked DequantizeLinear (int4/uint4 or int8/uint8, axis 0) feeding the original
/// MatMul; portable to any runtime that implements opset 21 (embedding tables stay as they are).</item>
/// </list>
/// Weights stored as float16 or bfloat16 are read as such; a graph that computes in float16 gets float16 scales, and
/// weights stored in float16 behind a Cast to float32 are quantized through the Cast. The work goes one distinct weight
/// at a time. With calibration data, the inputs' second moments are collected first (<see cref="HessianCollector"/>):
/// GPTQ needs them, and every algorithm then reports each layer's output error on the calibration activations.
/// </summary>
internal sealed class WeightOnlyQuantizer
{
    public static readonly string[] DefaultOps = ["MatMul", "Gemm"];
    public static readonly string[] SupportedOps = ["MatMul", "Gemm", "Gather"];
    /// <summary>The standard format has no blocked gather: embedding tables stay float there.</summary>
    static readonly string[] StandardOps = ["MatMul", "Gemm"];
    static readonly string[] ReduceOpsChangedIn18 = ["ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare"];

    readonly OnnxModel source;
    readonly ModelProto model;
    readonly QuantizationReport report;
    readonly IProgress<QuantizationProgress>? progress;
    readonly CancellationToken cancel;
    readonly WeightOnlyAlgorithm algorithm;
    readonly Dictionary<string, ILayerHandler> handlers;
    long before, after;

    WeightOnlyQuantizer(OnnxModel source, ModelProto model, QuantizationOptions o, QuantizationReport report, IProgress<QuantizationProgress>? progress, CancellationToken cancel)
    {
        this.source = source;
        this.model = model;
        this.report = report;
        this.progress = progress;
        this.cancel = cancel;
        Options = o;
        Index = new GraphIndex(model);
        Bits = o.Bits ?? 4;
        BlockSize = o.BlockSize ?? 32;
        Format = o.Format ?? WeightOnlyFormat.MatMulNBits;
        algorithm = o.Algorithm ?? new RoundToNearestAlgorithm();
        Symmetric = o.Symmetric ?? true;
        var matmul = new MatMulLayers();
        handlers = new(StringComparer.Ordinal) { ["MatMul"] = matmul, ["Gemm"] = matmul, ["Gather"] = new GatherLayers() };
    }

    public QuantizationOptions Options { get; }
    public GraphIndex Index { get; }
    public int Bits { get; }
    public int BlockSize { get; }
    public bool Symmetric { get; }
    public WeightOnlyFormat Format { get; }

    public static (long Before, long After) Run(OnnxModel source, ModelProto model, QuantizationOptions o, QuantizationReport report,
        IProgress<QuantizationProgress>? progress, CancellationToken cancel) =>
        new WeightOnlyQuantizer(source, model, o, report, progress, cancel).Execute();

    /// <summary>The report, for handlers that skip a node.</summary>
    public void Skip(NodeProto node, string reason) => report.Skip(node, reason);

    /// <summary>A new initializer; its bytes count towards the quantized size.</summary>
    public string Add(TensorProto t)
    {
        Index.AddInitializer(t);
        after += TensorData.StorageBytes(t);
        return t.Name;
    }

    /// <summary>Scales in the type the node computes in: float32, or float16 for float16 graphs (MatMulNBits' and GatherBlockQuantized's T).</summary>
    public string AddScales(string name, long[] dims, float[] values, DT compute) =>
        Add(compute == DT.Float16
            ? TensorData.FromRaw(name, DT.Float16, dims, QuantMath.HalfBytes(QuantMath.ToHalf(values)))
            : TensorData.FromFloat(name, dims, values));

    (long, long) Execute()
    {
        var graph = model.Graph;
        var ops = QuantizationPlan.OpTypes(Options, Format == WeightOnlyFormat.Standard ? StandardOps : DefaultOps, Format == WeightOnlyFormat.Standard ? StandardOps : SupportedOps);
        if (Format == WeightOnlyFormat.Standard) PrepareStandard(model, Index);
        else EnsureMicrosoftDomain(model);

        // 1. Which nodes, and what each one's weight is.
        var heads = Heads();
        var layers = new List<Layer>();
        int computed = 0;
        foreach (var node in graph.Node)
        {
            cancel.ThrowIfCancellationRequested();
            if (node.Domain is not ("" or "ai.onnx") || !ops.Contains(node.OpType)) continue;
            if (MatchesAny(node.Name, Options.ExcludeNodes)) { report.Skip(node, "excluded by -ExcludeNode"); continue; }
            var handler = handlers[node.OpType];
            int bits = heads.Contains(node) ? Options.HeadBits ?? Bits : Bits;
            var layer = handler.Plan(node, this, bits, heads.Contains(node), out bool computedWeight);
            if (computedWeight) computed++;
            if (layer is not null) layers.Add(layer);
        }
        if (computed > 0)
            report.Note($"{computed} MatMul/Gemm node(s) multiply two computed values (attention scores and their product with the values) and stay as they are: only constant weights are quantized.");
        if (Options.HeadBits is not null && !layers.Any(l => l.Head))
            report.Warn("-HeadBits found no output head (a MatMul or Gemm whose output reaches a graph output through reshapes or a bias Add) to apply to.");

        // 2. One quantization per distinct weight (tied weights stay shared), in groups whose input statistics fit in memory.
        var keys = layers.GroupBy(l => l.Key, StringComparer.Ordinal).Select(g => g.ToList()).ToList();
        var stored = new Dictionary<NodeProto, (StoredWeight Weight, double? Error)>();
        var data = Options.CalibrationData;
        int done = 0;
        foreach (var group in Passes(keys, data is not null))
        {
            Dictionary<string, float[]>? moments = null;
            var activations = group.SelectMany(k => k).Where(l => l.Activation is not null).Select(l => (l.Activation!, l.K)).Distinct().ToList();
            if (data is not null && activations.Count > 0)
            {
                int d = done;
                var phase = new Progress(f => progress?.Report(new QuantizationProgress("Collecting activation statistics", (d + f * group.Count) / Math.Max(1, keys.Count))));
                moments = HessianCollector.Collect(source, activations, data, Options.CalibrationBatchSize ?? HessianCollector.DefaultBatchSize(source), phase, cancel);
            }
            foreach (var key in group)
            {
                cancel.ThrowIfCancellationRequested();
                Quantize(key, moments, stored);
                progress?.Report(new QuantizationProgress($"Quantizing weights ({algorithm.Name})", (double)++done / keys.Count));
            }
        }

        // 3. The graph with each quantized node replaced.
        var newNodes = new List<NodeProto>(graph.Node.Count + 16);
        var byNode = layers.ToDictionary(l => l.Node);
        foreach (var node in graph.Node)
        {
            if (!byNode.TryGetValue(node, out var layer) || !stored.TryGetValue(node, out var s)) { newNodes.Add(node); continue; }
            newNodes.AddRange(layer.Handler.Emit(layer, s.Weight, this));
            string error = s.Error is { } e ? $"; output error {e.ToString("P2", CultureInfo.InvariantCulture)} on the calibration activations" : "";
            report.Done(node, $"{layer.Bits}-bit blocks of {BlockSize}, {(s.Weight.Symmetric ? "symmetric" : "asymmetric")}, {s.Weight.Algorithm}{(layer.Head ? " (output head)" : "")} → {layer.Handler.Describe(layer, Format)}{error}", error: s.Error);
        }
        graph.Node.Clear();
        graph.Node.AddRange(newNodes);
        RemoveUnused(graph);
        return (before, after);
    }

    /// <summary>Groups of distinct weights whose layers' input statistics fit <see cref="HessianCollector.BudgetBytes"/> together (one group without data).</summary>
    static IEnumerable<List<List<Layer>>> Passes(List<List<Layer>> keys, bool withData)
    {
        if (!withData) { yield return keys; yield break; }
        var current = new List<List<Layer>>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        long bytes = 0;
        long Added(List<Layer> key) => key.Where(l => l.Activation is not null && !seen.Contains(l.Activation)).DistinctBy(l => l.Activation).Sum(l => 4L * l.K * l.K);
        foreach (var key in keys)
        {
            if (current.Count > 0 && bytes + Added(key) > HessianCollector.BudgetBytes) { yield return current; current = []; seen.Clear(); bytes = 0; }
            bytes += Added(key);
            current.Add(key);
            foreach (var l in key) if (l.Activation is not null) seen.Add(l.Activation);
        }
        if (current.Count > 0) yield return current;
    }

    /// <summary>Quantizes one distinct weight (for every layer that reads it) and measures each layer's output error when statistics exist.</summary>
    void Quantize(List<Layer> layers, Dictionary<string, float[]>? moments, Dictionary<NodeProto, (StoredWeight, double?)> stored)
    {
        var first = layers[0];
        var weight = first.ReadWeight();
        // Layers that read one weight through different inputs share it: GPTQ minimises the sum of their errors.
        float[]? hessian = null;
        if (moments is not null)
            foreach (var activation in layers.Select(l => l.Activation).OfType<string>().Distinct())
            {
                var h = moments[activation];
                if (hessian is null) hessian = layers.Count == 1 ? h : (float[])h.Clone();
                else for (int i = 0; i < h.Length; i++) hessian[i] += h[i];
            }
        if (algorithm.NeedsCalibrationData && hessian is null && first.Activation is not null)
            throw new EngineException("QuantizationCalibrationDataMissing", EngineErrorKind.InvalidArgument, $"-Algorithm {algorithm.Name} needs -CalibrationData.");
        var settings = new WeightOnlyLayerSettings(first.K, first.N, first.Bits, BlockSize, Symmetric,
            first.Weight.Compute == DT.Float16, first.Weight.Name, hessian);
        var q = algorithm.Quantize(weight, settings, cancel);
        var result = first.Handler.Store(first, q, this) with { Algorithm = first.Activation is null && algorithm is GptqAlgorithm ? "RTN (no activations to compensate with)" : algorithm.Name };
        before += TensorData.StorageBytes(first.Weight.Tensor);
        foreach (var layer in layers)
        {
            double? error = layer.Activation is not null && moments is not null ? ReconstructionError.Relative(moments[layer.Activation], weight, q) : null;
            stored[layer.Node] = (result, error);
        }
    }

    /// <summary>
    /// The output heads: MatMul/Gemm nodes whose output reaches a graph output directly or through a chain of
    /// single-consumer reshapes, casts or a bias Add (the logits projection of a language model, a classifier).
    /// </summary>
    HashSet<NodeProto> Heads()
    {
        var heads = new HashSet<NodeProto>();
        foreach (var node in model.Graph.Node)
        {
            if (node.OpType is not ("MatMul" or "Gemm") || WeightSource.Output(node) is not { } value) continue;
            for (int hops = 0; hops < 8; hops++)
            {
                if (Index.GraphOutputs.Contains(value)) { heads.Add(node); break; }
                var consumers = Index.ConsumersOf(value);
                if (consumers.Count != 1 || consumers[0].Node.OpType is not ("Add" or "Reshape" or "Transpose" or "Squeeze" or "Unsqueeze" or "Identity" or "Cast" or "Flatten")
                    || WeightSource.Output(consumers[0].Node) is not { } next) break;
                if (consumers[0].Node.OpType != "Add" && consumers[0].Input != 0) break;
                value = next;
            }
        }
        return heads;
    }

    /// <summary>The standard format needs opset 21 (blocked DequantizeLinear, int4): raise the opset when that changes no operator the graph uses.</summary>
    static void PrepareStandard(ModelProto model, GraphIndex index)
    {
        if (index.Opset >= 21) return;
        if (index.Opset < 13)
            throw new EngineException("QuantizationOpsetTooOld", EngineErrorKind.NotImplemented,
                $"-Format Standard needs opset 21 (blocked DequantizeLinear) and the model's opset {index.Opset} is too old to raise safely (operators changed at opsets 11 and 13). Use -Format MatMulNBits.");
        if (index.Opset < 18 && model.Graph.Node.FirstOrDefault(n => ReduceOpsChangedIn18.Contains(n.OpType)) is { } reduce)
            throw new EngineException("QuantizationOpsetTooOld", EngineErrorKind.NotImplemented,
                $"-Format Standard needs opset 21; raising opset {index.Opset} would change {reduce.OpType} ('{reduce.Name}'), whose axes moved from attribute to input at opset 18. Use -Format MatMulNBits.");
        foreach (var op in model.OpsetImport) if (op.Domain is "" or "ai.onnx") op.Version = 21;
        if (model.IrVersion < 10) model.IrVersion = 10;
    }

    sealed class Progress(Action<double> report) : IProgress<double>
    {
        public void Report(double value) => report(value);
    }
}

/// <summary>One node to quantize: its weight, seen as a [K, N] matrix quantized in blocks along K.</summary>
internal sealed record Layer(NodeProto Node, ILayerHandler Handler, WeightSource Weight, int K, int N, bool Transpose, int Bits, bool Head,
    string? Activation, string? Bias)
{
    /// <summary>Nodes with the same key read the same weight the same way and share its quantized copy.</summary>
    public string Key => $"{Weight.Name}|{Transpose}|{Bits}|{Handler.GetType().Name}";

    /// <summary>The weight as float32 [K, N] row-major (transposed from its stored [N, K] when <see cref="Transpose"/>).</summary>
    public float[] ReadWeight()
    {
        var values = TensorData.ToFloat(Weight.Tensor);
        if (!Transpose) return values;
        var t = new float[values.Length];
        // stored [N, K] -> [K, N], in tiles
        const int Tile = 32;
        Kernels.Parallelism.Each(0, (N + Tile - 1) / Tile, tile =>
        {
            int r0 = tile * Tile, r1 = Math.Min(N, r0 + Tile);
            for (int c0 = 0; c0 < K; c0 += Tile)
            {
                int c1 = Math.Min(K, c0 + Tile);
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++) t[(long)c * N + r] = values[(long)r * K + c];
            }
        });
        return t;
    }
}

/// <summary>The quantized copy of a weight: its initializers and how it was made.</summary>
internal sealed record StoredWeight(string Data, string Scales, string? ZeroPoints, int K, int N, int Bits, bool Symmetric, string Algorithm);

/// <summary>What weight-only quantization does for one operator family.</summary>
internal interface ILayerHandler
{
    /// <summary>The layer for a node, or null: skipped (reported), or nothing to do (<paramref name="computedWeight"/>: a product of two computed values).</summary>
    Layer? Plan(NodeProto node, WeightOnlyQuantizer q, int bits, bool head, out bool computedWeight);

    /// <summary>Stores a quantized weight as the initializers this family's operator reads.</summary>
    StoredWeight Store(Layer layer, BlockQuantized quantized, WeightOnlyQuantizer q);

    /// <summary>The nodes that replace the layer's node.</summary>
    IReadOnlyList<NodeProto> Emit(Layer layer, StoredWeight weight, WeightOnlyQuantizer q);

    string Describe(Layer layer, WeightOnlyFormat format);
}
