using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Onnx;

/// <summary>
/// Zeros of quantized weights, for sparsity: a stored integer stands for zero exactly when it equals its zero point, so
/// pruned weights stay zeros after quantization (and small weights that round to zero become zeros). One table says,
/// per quantized operator, which input holds the weight, which its zero points, and along which axis they spread.
/// </summary>
public static class QuantizedZeros
{
    /// <summary>How an operator reads a quantized weight: the input slots, and the axis of per-channel zero points (-1: the last).</summary>
    sealed record WeightInput(int Weight, int ZeroPoint, Func<NodeProto, int> Axis);

    static readonly Dictionary<string, WeightInput> Standard = new(StringComparer.Ordinal)
    {
        ["DequantizeLinear"] = new(0, 2, n => (int)(Attr(n, "axis") ?? 1)),
        ["MatMulInteger"] = new(1, 3, _ => -1),
        ["ConvInteger"] = new(1, 3, _ => 0),
        ["QLinearMatMul"] = new(3, 5, _ => -1),
        ["QLinearConv"] = new(3, 5, _ => 0),
        ["DynamicQuantizeMatMul"] = new(1, 3, _ => -1),
        ["MatMulIntegerToFloat"] = new(1, 5, _ => -1),
        ["QGemm"] = new(3, 5, n => Attr(n, "transB") == 1 ? 0 : -1),
    };

    /// <summary>
    /// The zeros of <paramref name="weight"/> as <paramref name="node"/> reads it at <paramref name="slot"/>, counted in
    /// logical weights (a packed byte holds several); null when the node does not read a quantized weight there.
    /// </summary>
    public static long? Count(TensorProto weight, NodeProto node, int slot, Func<string, TensorProto?> constant)
    {
        TensorProto? ZeroPoint(int i) => i < node.Input.Count && node.Input[i].Length > 0 ? constant(node.Input[i]) : null;
        if (node.OpType == "MatMulNBits" && slot == 1) return PackedColumns(weight, node, ZeroPoint(3));
        if (node.OpType == "GatherBlockQuantized" && slot == 0) return PackedRows(weight, node, ZeroPoint(3));
        if (!Standard.TryGetValue(node.OpType, out var input) || input.Weight != slot || !IsInteger(weight)) return null;
        var zeroPoint = ZeroPoint(input.ZeroPoint);
        if (zeroPoint is null && input.ZeroPoint < node.Input.Count && node.Input[input.ZeroPoint].Length > 0) return null; // computed: unknown
        float[] zp = zeroPoint is null ? [0f] : TensorData.ToFloat(zeroPoint);
        var layout = new ZeroPointLayout(zp, 1, 1, 1, 0);
        if (zp.Length > 1)
        {
            long[] shape = TensorData.Shape(weight);
            int axis = input.Axis(node);
            if (axis < 0) axis += shape.Length;
            if (axis < 0 || axis >= shape.Length) return null;
            long outer = 1, inner = 1;
            for (int d = 0; d < axis; d++) outer *= shape[d];
            for (int d = axis + 1; d < shape.Length; d++) inner *= shape[d];
            // Per channel: one zero point per index along the axis; blocked (DequantizeLinear's block_size): one per block of it.
            long block = node.OpType == "DequantizeLinear" ? Attr(node, "block_size") ?? 0 : 0;
            layout = new ZeroPointLayout(zp, outer, shape[axis], inner, Math.Max(0, block));
            if (zp.Length != (block > 0 ? outer * layout.ZeroPointChannels * inner : shape[axis])) return null;
        }
        // 8-bit weights are counted in their own bytes, without a float copy of a tensor that may be large.
        return (DT)weight.DataType switch
        {
            DT.Uint8 => layout.Count(TensorData.RawBytes(weight).Span),
            DT.Int8 => layout.Count(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, sbyte>(TensorData.RawBytes(weight).Span)),
            _ => layout.Count<float>(TensorData.ToFloat(weight)),
        };
    }

    /// <summary>Zero points over a weight seen as [outer, channels, inner]: one per channel, one per block of channels, or one for all.</summary>
    sealed record ZeroPointLayout(float[] ZeroPoints, long Outer, long Channels, long Inner, long Block)
    {
        public long ZeroPointChannels => Block > 0 ? (Channels + Block - 1) / Block : Channels;

        public long Count<T>(ReadOnlySpan<T> values) where T : unmanaged, System.Numerics.INumberBase<T>
        {
            if (ZeroPoints.Length == 1) return Count(values, float.CreateTruncating(ZeroPoints[0]));
            long zeros = 0;
            for (long o = 0, i = 0; o < Outer; o++)
                for (long c = 0; c < Channels; c++)
                    for (long k = 0; k < Inner; k++, i++)
                    {
                        float z = Block > 0 ? ZeroPoints[(o * ZeroPointChannels + c / Block) * Inner + k] : ZeroPoints[c];
                        if (float.CreateTruncating(values[(int)i]) == z) zeros++;
                    }
            return zeros;
        }

        static long Count<T>(ReadOnlySpan<T> values, float zero) where T : unmanaged, System.Numerics.INumberBase<T> =>
            T.CreateTruncating(zero) is var z && float.CreateTruncating(z) == zero ? values.Count(z) : 0;
    }

    /// <summary>MatMulNBits: B [N, blocks, blob] packs column n's K values in blocks of block_size, bits each, low bits first.</summary>
    static long? PackedColumns(TensorProto weight, NodeProto node, TensorProto? zeroPoints)
    {
        if ((DT)weight.DataType != DT.Uint8 || Attr(node, "K") is not { } k || Attr(node, "N") is not { } n) return null;
        int bits = (int)(Attr(node, "bits") ?? 4);
        long block = Attr(node, "block_size") ?? 0;
        if (block <= 0 || bits is not (2 or 4 or 8)) return null;
        long blocks = (k + block - 1) / block, blob = block * bits / 8;
        var data = TensorData.RawBytes(weight).Span;
        if (data.Length < n * blocks * blob) return null;
        var zp = ZeroPoints(zeroPoints, bits, n, blocks);
        if (zp is null) return null;
        long zeros = 0;
        for (long col = 0; col < n; col++)
            for (long b = 0; b < blocks; b++)
            {
                float z = zp(col, b);
                long start = (col * blocks + b) * blob;
                for (long j = 0; j < block && b * block + j < k; j++)
                    if (Unpack(data, start, j, bits) == z) zeros++;
            }
        return zeros;
    }

    /// <summary>GatherBlockQuantized over a uint8 table [V, D*bits/8]: row v packs its D values in blocks along the row.</summary>
    static long? PackedRows(TensorProto weight, NodeProto node, TensorProto? zeroPoints)
    {
        if ((DT)weight.DataType != DT.Uint8 || weight.Dims.Count != 2 || (Attr(node, "quantize_axis") ?? 1) != 1) return null;
        int bits = (int)(Attr(node, "bits") ?? 4);
        long block = Attr(node, "block_size") ?? 128;
        if (block <= 0 || bits is not (2 or 4 or 8)) return null;
        long rows = weight.Dims[0], width = weight.Dims[1] * 8 / bits, blocks = (width + block - 1) / block;
        var data = TensorData.RawBytes(weight).Span;
        var zp = ZeroPoints(zeroPoints, bits, rows, blocks);
        if (zp is null) return null;
        long zeros = 0;
        for (long r = 0; r < rows; r++)
            for (long j = 0; j < width; j++)
                if (Unpack(data, r * weight.Dims[1], j, bits) == zp(r, j / block)) zeros++;
        return zeros;
    }

    /// <summary>Zero point of (row, block): packed like the data (uint8), or one value each (float); absent: 2^(bits-1).</summary>
    static Func<long, long, float>? ZeroPoints(TensorProto? zeroPoints, int bits, long rows, long blocks)
    {
        float middle = 1 << (bits - 1);
        if (zeroPoints is null) return (_, _) => middle;
        if ((DT)zeroPoints.DataType == DT.Uint8)
        {
            var packed = TensorData.RawBytes(zeroPoints).ToArray();
            long stride = (blocks * bits + 7) / 8;
            if (packed.Length < rows * stride) return null;
            return (r, b) => Unpack(packed, r * stride, b, bits);
        }
        var values = TensorData.ToFloat(zeroPoints);
        if (values.Length < rows * blocks) return null;
        return (r, b) => values[r * blocks + b];
    }

    static float Unpack(ReadOnlySpan<byte> data, long start, long index, int bits)
    {
        long bit = index * bits;
        return (data[(int)(start + bit / 8)] >> (int)(bit % 8)) & ((1 << bits) - 1);
    }

    static bool IsInteger(TensorProto t) => (DT)t.DataType is DT.Int8 or DT.Uint8 or DT.Int4 or DT.Uint4 or DT.Int16 or DT.Uint16 or DT.Int32;

    static long? Attr(NodeProto node, string name) => node.Attribute.FirstOrDefault(a => a.Name == name) is { } a ? a.I : null;
}
