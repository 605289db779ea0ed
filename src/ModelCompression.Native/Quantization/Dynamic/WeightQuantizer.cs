using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>A weight quantized to 8 bits and stored as initializers: values, scale(s), zero point(s).</summary>
internal sealed record QuantizedWeight(string Values, string Scale, string ZeroPoint, bool PerChannel, int Channels);

/// <summary>
/// Quantizes constant weights into new initializers, once per distinct (source tensor, layout) so that weights
/// shared by several nodes (tied or deduplicated weights) stay shared after quantization.
/// </summary>
internal sealed class WeightQuantizer(GraphIndex index, QuantType type, bool symmetric, bool reduceRange)
{
    readonly Dictionary<string, QuantizedWeight> cache = new(StringComparer.Ordinal);

    public long BytesBefore { get; private set; }
    public long BytesAfter { get; private set; }

    /// <summary>
    /// Quantizes a 2-D weight as [K, N] (transposing a [N, K] source when <paramref name="transpose"/>),
    /// per output column when <paramref name="perChannel"/>, with an extra factor folded into the scale.
    /// </summary>
    public QuantizedWeight MatMulWeight(string sourceName, TensorProto source, bool transpose, bool perChannel, float scaleFactor = 1f)
    {
        string key = $"{sourceName}|{transpose}|{perChannel}|{scaleFactor:R}";
        if (cache.TryGetValue(key, out var hit)) return hit;
        var values = TensorData.ToFloat(source);
        long rows = source.Dims[0], cols = source.Dims[1];
        if (transpose)
        {
            var t = new float[values.Length];
            for (long r = 0; r < rows; r++)
                for (long c = 0; c < cols; c++) t[c * rows + r] = values[r * cols + c];
            values = t;
            (rows, cols) = (cols, rows);
        }
        long[] shape = [rows, cols];
        var (qmin, qmax) = QuantMath.Range(type, symmetric, reduceRange);
        byte[] q;
        float[] scales;
        byte[] zps;
        if (perChannel)
        {
            var p = QuantMath.PerChannel(values, shape, 1, type, symmetric, reduceRange, sourceName);
            // Axis 1 of [K, N]: quantize column by column.
            q = new byte[values.Length];
            for (long r = 0; r < rows; r++)
                for (long c = 0; c < cols; c++)
                    q[r * cols + c] = (byte)(sbyte)QuantMath.Quantize(values[r * cols + c], p[c], qmin, qmax);
            scales = p.Select(x => x.Scale * scaleFactor).ToArray();
            zps = p.Select(x => (byte)(sbyte)x.ZeroPoint).ToArray();
        }
        else
        {
            var p = QuantMath.ForTensor(values, type, symmetric, reduceRange, sourceName);
            q = new byte[values.Length];
            QuantMath.QuantizeParallel(values, p, qmin, qmax, q);
            scales = [p.Scale * scaleFactor];
            zps = [(byte)(sbyte)p.ZeroPoint];
        }
        var dt = type == QuantType.Int8 ? DT.Int8 : DT.Uint8;
        string baseName = sourceName + (transpose ? "_T" : "") + "_quantized";
        string qName = index.Fresh(baseName);
        index.AddInitializer(TensorData.FromRaw(qName, dt, shape, q));
        long[] paramDims = perChannel ? [cols] : [];
        string sName = index.Fresh(baseName + "_scale");
        index.AddInitializer(TensorData.FromFloat(sName, paramDims, scales));
        string zName = index.Fresh(baseName + "_zero_point");
        index.AddInitializer(TensorData.FromRaw(zName, dt, paramDims, zps));
        BytesBefore += TensorData.StorageBytes(source);
        BytesAfter += q.Length + scales.Length * 4 + zps.Length;
        var result = new QuantizedWeight(qName, sName, zName, perChannel, (int)cols);
        cache[key] = result;
        return result;
    }

    /// <summary>Quantizes any constant tensor per tensor (embedding tables read by Gather).</summary>
    public QuantizedWeight WholeTensor(string sourceName, TensorProto source)
    {
        string key = sourceName + "|tensor";
        if (cache.TryGetValue(key, out var hit)) return hit;
        var values = TensorData.ToFloat(source);
        var p = QuantMath.ForTensor(values, type, symmetric, reduceRange, sourceName);
        var (qmin, qmax) = QuantMath.Range(type, symmetric, reduceRange);
        var q = new byte[values.Length];
        QuantMath.QuantizeParallel(values, p, qmin, qmax, q);
        var dt = type == QuantType.Int8 ? DT.Int8 : DT.Uint8;
        string qName = index.Fresh(sourceName + "_quantized");
        index.AddInitializer(TensorData.FromRaw(qName, dt, source.Dims.ToArray(), q));
        string sName = index.Fresh(sourceName + "_quantized_scale");
        index.AddInitializer(QuantNodes.Scalar(sName, p.Scale));
        string zName = index.Fresh(sourceName + "_quantized_zero_point");
        index.AddInitializer(TensorData.FromRaw(zName, dt, [], [(byte)(sbyte)p.ZeroPoint]));
        BytesBefore += TensorData.StorageBytes(source);
        BytesAfter += q.Length + 5;
        var result = new QuantizedWeight(qName, sName, zName, false, 1);
        cache[key] = result;
        return result;
    }
}
