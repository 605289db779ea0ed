using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// What a weight-only run shares between its phases and the operator handlers: the graph being rewritten, the options,
/// the report, and what input scaling (AWQ) has decided so far (input scales per activation, column scales of layers
/// not yet quantized, inserted Muls, constants to divide).
/// </summary>
internal sealed class WeightOnlyContext(ModelProto model, QuantizationOptions options, QuantizationReport report, CancellationToken cancel)
{
    public ModelProto Model { get; } = model;
    public GraphIndex Index { get; } = new(model);
    public QuantizationOptions Options { get; } = options;
    public QuantizationReport Report { get; } = report;
    public CancellationToken Cancel { get; } = cancel;
    public WeightOnlyFormat Format { get; } = options.Format ?? WeightOnlyFormat.MatMulNBits;
    public bool Symmetric { get; } = options.Symmetric ?? true;
    public WeightOnlyAlgorithm Algorithm { get; } = options.Algorithm ?? new RoundToNearestAlgorithm();
    public HashSet<NodeProto> Heads { get; set; } = new(ReferenceEqualityComparer.Instance);
    /// <summary>Why a layer got a precision other than the uniform one (report detail).</summary>
    public Dictionary<Layer, string> Reasons { get; } = [];

    /// <summary>Input scales s per activation: the layers reading it hold diag(s) W.</summary>
    public Dictionary<string, float[]> InputScales { get; } = new(StringComparer.Ordinal);
    /// <summary>Output-column divisors of layers whose output was scaled down for the layers after them.</summary>
    public Dictionary<Layer, float[]> ColumnScales { get; } = [];
    /// <summary>Constants divided along their last axis, per node input.</summary>
    public List<ConstantEdit> ConstantEdits { get; } = [];
    /// <summary>Activations that get an inserted Mul by 1/s: activation → the Mul's output, which the layers read instead.</summary>
    public Dictionary<string, (string Output, float[] Inverse, DT Type)> InsertedMuls { get; } = new(StringComparer.Ordinal);

    public long BytesBefore { get; set; }
    public long BytesAfter { get; set; }

    public void Skip(NodeProto node, string reason) => Report.Skip(node, reason);

    /// <summary>A new initializer; its bytes count towards the quantized size.</summary>
    public string Add(TensorProto t)
    {
        Index.AddInitializer(t);
        BytesAfter += TensorData.StorageBytes(t);
        return t.Name;
    }

    /// <summary>Scales in the type the node computes in: float32, or float16 for float16 graphs (MatMulNBits' and GatherBlockQuantized's T).</summary>
    public string AddScales(string name, long[] dims, float[] values, DT compute) => Add(FloatTensor(name, dims, values, compute));

    /// <summary>Float values as a tensor of the type a node computes in (float16, else float32).</summary>
    public static TensorProto FloatTensor(string name, long[] dims, float[] values, DT type) =>
        type == DT.Float16
            ? TensorData.FromRaw(name, DT.Float16, dims, QuantMath.HalfBytes(QuantMath.ToHalf(values)))
            : TensorData.FromFloat(name, dims, values);

    /// <summary>The input the layer's node reads: its activation, or the output of a Mul inserted before it.</summary>
    public string ActivationOf(Layer layer) =>
        layer.Activation is { } a && InsertedMuls.TryGetValue(a, out var mul) ? mul.Output : layer.Activation!;

    /// <summary>The layer's float weight [K, N] as it will be quantized: input rows scaled up, output columns scaled down.</summary>
    public float[] PreparedWeight(Layer layer)
    {
        var w = layer.ReadWeight();
        var rows = layer.Activation is { } a ? InputScales.GetValueOrDefault(a) : null;
        var columns = ColumnScales.GetValueOrDefault(layer);
        if (rows is null && columns is null) return w;
        int k = layer.K, n = layer.N;
        Parallelism.Each(0, k, r =>
        {
            float sr = rows?[r] ?? 1f;
            for (int c = 0; c < n; c++) w[(long)r * n + c] *= columns is null ? sr : sr / columns[c];
        });
        return w;
    }

    /// <summary>A float weight [K, N] written back in the layer's stored orientation and compute type (a float layer whose input was scaled).</summary>
    public string AddFloatWeight(Layer layer, float[] kn)
    {
        var values = layer.Transpose ? Layer.Transposed(kn, layer.K, layer.N) : kn;
        long[] dims = layer.Weight.Tensor.Dims.ToArray();
        return Add(FloatTensor(Index.Fresh(layer.Weight.Name + "_scaled"), dims, values, layer.Weight.Compute));
    }
}
