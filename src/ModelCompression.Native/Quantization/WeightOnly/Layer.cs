using System.Globalization;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Quantization;

/// <summary>How one layer's weight is stored: block-quantized to <see cref="Bits"/> in blocks of <see cref="BlockSize"/>, or left float.</summary>
public sealed record LayerPrecision(int? Bits, int BlockSize)
{
    public static readonly LayerPrecision Float = new(null, 0);

    public bool IsFloat => Bits is null;

    public override string ToString() => IsFloat ? "float" : $"{Bits}-bit/{BlockSize}";

    /// <summary>
    /// "4", "8", "float" (also "fp32", "none"), or bits with a block size: "4/64". A bare bit count takes
    /// <paramref name="defaultBlockSize"/>.
    /// </summary>
    public static LayerPrecision Parse(string text, int defaultBlockSize)
    {
        string t = text.Trim();
        if (t.Equals("float", StringComparison.OrdinalIgnoreCase) || t.Equals("fp32", StringComparison.OrdinalIgnoreCase) || t.Equals("none", StringComparison.OrdinalIgnoreCase))
            return Float;
        var parts = t.Split('/');
        if (parts.Length is 1 or 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int bits) && bits is 4 or 8)
        {
            int block = defaultBlockSize;
            if (parts.Length == 1 || int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out block) && ValidBlockSize(block))
                return new LayerPrecision(bits, block);
        }
        throw new EngineException("QuantizationLayerPrecisionInvalid", EngineErrorKind.InvalidArgument,
            $"Layer precision '{text}' is not 4, 8 or float, optionally with a block size (a power of two from 16 to 256) after a slash: '4/64'.");
    }

    public static bool ValidBlockSize(int bs) => bs >= 16 && bs <= 256 && (bs & (bs - 1)) == 0;

    /// <summary>Bytes of a [K, N] weight at this precision: codes (blocks padded), scales of <paramref name="scaleBytes"/>, zero points when asymmetric.</summary>
    public long Bytes(int k, int n, int floatBytes, int scaleBytes, bool symmetric)
    {
        if (Bits is not { } bits) return (long)k * n * floatBytes;
        long blocks = (k + BlockSize - 1) / BlockSize;
        return n * (blocks * BlockSize * bits / 8 + blocks * scaleBytes + (symmetric ? 0 : (blocks * bits + 7) / 8));
    }
}

/// <summary>A node-name pattern (wildcards * and ?) and the precision of the layers it names (-LayerPrecision).</summary>
public sealed record LayerPrecisionRule(string Pattern, LayerPrecision Precision)
{
    /// <summary>How specific a pattern is: an exact name beats any wildcard, then more literal characters win.</summary>
    public int Specificity => Pattern.IndexOfAny(['*', '?']) < 0 ? int.MaxValue : Pattern.Count(c => c is not ('*' or '?'));
}

/// <summary>
/// One node to quantize: its weight, seen as a [K, N] matrix quantized in blocks along K. Compared by reference: its
/// node's inputs change while the graph is rewritten.
/// </summary>
internal sealed class Layer(NodeProto node, ILayerHandler handler, WeightSource weight, int k, int n, bool transpose, bool head, string? activation, string? bias)
{
    public NodeProto Node { get; } = node;
    public ILayerHandler Handler { get; } = handler;
    public WeightSource Weight { get; } = weight;
    public int K { get; } = k;
    public int N { get; } = n;
    public bool Transpose { get; } = transpose;
    public bool Head { get; } = head;
    public string? Activation { get; } = activation;
    public string? Bias { get; } = bias;

    /// <summary>Nodes with the same key read the same weight the same way and can share its quantized copy.</summary>
    public string WeightKey => $"{Weight.Name}|{Transpose}|{Handler.GetType().Name}";

    public string Name => QuantizationReport.NodeName(Node);

    /// <summary>Bytes a float element of the weight takes as stored.</summary>
    public int FloatBytes => (int)Math.Max(1, ElementTypes.ByteCount((int)Weight.Storage, 1));

    /// <summary>Bytes of a scale: float16 graphs store float16 scales.</summary>
    public int ScaleBytes => Weight.Compute == TensorProto.Types.DataType.Float16 ? 2 : 4;

    /// <summary>The weight as float32 [K, N] row-major (transposed from its stored [N, K] when <see cref="Transpose"/>).</summary>
    public float[] ReadWeight() => Transpose ? Transposed(TensorData.ToFloat(Weight.Tensor), N, K) : TensorData.ToFloat(Weight.Tensor);

    /// <summary>A row-major [rows, cols] matrix as [cols, rows], in tiles.</summary>
    public static float[] Transposed(float[] values, int rows, int cols)
    {
        var t = new float[values.Length];
        const int Tile = 32;
        Parallelism.Each(0, (rows + Tile - 1) / Tile, tile =>
        {
            int r0 = tile * Tile, r1 = Math.Min(rows, r0 + Tile);
            for (int c0 = 0; c0 < cols; c0 += Tile)
            {
                int c1 = Math.Min(cols, c0 + Tile);
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++) t[(long)c * rows + r] = values[(long)r * cols + c];
            }
        });
        return t;
    }
}

/// <summary>The quantized copy of a weight: its initializers and how it was made.</summary>
internal sealed record StoredWeight(string Data, string Scales, string? ZeroPoints, int K, int N, int Bits, int BlockSize, bool Symmetric);

/// <summary>What weight-only quantization does for one operator family (registered in <see cref="WeightOnlyQuantizer.Handlers"/>).</summary>
internal interface ILayerHandler
{
    /// <summary>The node input that holds the weight.</summary>
    int WeightSlot { get; }

    /// <summary>The layer for a node, or null: skipped (reported), or nothing to do (<paramref name="computedWeight"/>: a product of two computed values).</summary>
    Layer? Plan(NodeProto node, WeightOnlyContext q, out bool computedWeight);

    /// <summary>Null when the family stores <paramref name="bits"/>-bit blocks of this layer in <paramref name="format"/>, else why not.</summary>
    string? Unsupported(Layer layer, int bits, WeightOnlyFormat format);

    /// <summary>Stores a quantized weight as the initializers this family's operator reads.</summary>
    StoredWeight Store(Layer layer, BlockQuantized quantized, WeightOnlyContext q);

    /// <summary>The nodes that replace the layer's node.</summary>
    IReadOnlyList<NodeProto> Emit(Layer layer, StoredWeight weight, WeightOnlyContext q);

    string Describe(Layer layer, WeightOnlyFormat format);
}
