using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace ModelCompression.Native.Kernels;

/// <summary>The integer type quantized values are stored in.</summary>
public enum QuantType
{
    Int8,
    UInt8,
    Int4,
    UInt4,
}

/// <summary>A scale and zero point: real = (q - ZeroPoint) * Scale.</summary>
public readonly record struct QuantParams(float Scale, int ZeroPoint);

/// <summary>
/// The one place where scales and zero points are computed, and where values are quantized and dequantized.
/// Every quantization mode (dynamic, static, weight-only) goes through these functions.
/// </summary>
/// <remarks>
/// Conventions (those of ONNX QuantizeLinear: q = saturate(round_half_to_even(x / scale) + zero_point)):
/// <list type="bullet">
/// <item>Asymmetric: the range is widened to include 0 so that 0 is exactly representable (zero padding, ReLU outputs).</item>
/// <item>Symmetric: the integer range is made symmetric around the zero point (int8 uses [-127, 127], uint8 uses
/// [1, 255] around 128, int4 [-7, 7], uint4 [1, 15] around 8), scale = max|x| / half-width.</item>
/// <item>Reduce range: 7 bits instead of 8 (int8 [-64, 63], uint8 [0, 127]) for CPUs whose int8 dot products saturate.</item>
/// <item>A range of zero width (all-zero or constant-zero tensors) gets scale 1 so that dequantization is exact and nothing divides by zero.</item>
/// <item>NaN and infinities are refused: there is no scale that represents them.</item>
/// </list>
/// </remarks>
public static class QuantMath
{
    /// <summary>The integer range [QMin, QMax] a type offers under the given options.</summary>
    public static (int QMin, int QMax) Range(QuantType type, bool symmetric = false, bool reduceRange = false)
    {
        if (reduceRange && type is QuantType.Int4 or QuantType.UInt4)
            throw new EngineException("QuantizationReduceRangeInvalid", EngineErrorKind.InvalidArgument, "Reduce range applies to 8-bit types only.");
        var (lo, hi) = type switch
        {
            QuantType.Int8 => reduceRange ? (-64, 63) : (-128, 127),
            QuantType.UInt8 => reduceRange ? (0, 127) : (0, 255),
            QuantType.Int4 => (-8, 7),
            QuantType.UInt4 => (0, 15),
            _ => throw new ArgumentOutOfRangeException(nameof(type)),
        };
        if (symmetric)
        {
            // Symmetric around the zero point: drop the one extra level at the bottom (signed) or top (unsigned, odd width).
            if (lo < 0) lo = -hi;
            else { int mid = (lo + hi + 1) / 2; int half = Math.Min(mid - lo, hi - mid); lo = mid - half; hi = mid + half; }
        }
        return (lo, hi);
    }

    public static bool IsSigned(QuantType type) => type is QuantType.Int8 or QuantType.Int4;
    public static int Bits(QuantType type) => type is QuantType.Int4 or QuantType.UInt4 ? 4 : 8;

    /// <summary>Scale and zero point for values in [min, max].</summary>
    public static QuantParams Compute(float min, float max, QuantType type, bool symmetric = false, bool reduceRange = false, string? what = null)
    {
        if (!float.IsFinite(min) || !float.IsFinite(max))
            throw NonFinite(what);
        if (min > max)
            throw new EngineException("QuantizationRangeInvalid", EngineErrorKind.InvalidArgument, $"Quantization range of {what ?? "a tensor"} is empty: min {min} > max {max}.");
        var (qmin, qmax) = Range(type, symmetric, reduceRange);
        if (symmetric)
        {
            float absMax = MathF.Max(MathF.Abs(min), MathF.Abs(max));
            int zp = (qmin + qmax) / 2;
            float half = (qmax - qmin) / 2f;
            float scale = absMax == 0 ? 1f : absMax / half;
            return new QuantParams(NonZeroScale(scale, what), zp);
        }
        // Widen the range to include 0 so that 0 is represented exactly.
        double lo = Math.Min(min, 0), hi = Math.Max(max, 0);
        if (hi == lo) return new QuantParams(1f, ClampZeroPoint(qmin, qmin, qmax));
        double s = (hi - lo) / (qmax - qmin);
        float scaleF = NonZeroScale((float)s, what);
        int zeroPoint = ClampZeroPoint((int)Math.Round(qmin - lo / scaleF, MidpointRounding.ToEven), qmin, qmax);
        return new QuantParams(scaleF, zeroPoint);
    }

    /// <summary>Min and max of finite values; NaN or infinity is refused with an error naming <paramref name="what"/>.</summary>
    public static (float Min, float Max) MinMax(ReadOnlySpan<float> values, string? what = null)
    {
        if (values.IsEmpty) return (0, 0);
        float min, max;
        if (values.Length < 128)
        {
            min = max = values[0];
            bool nan = false;
            foreach (float v in values) { if (v < min) min = v; if (v > max) max = v; nan |= float.IsNaN(v); }
            if (nan) throw NonFinite(what);
        }
        else { min = TensorPrimitives.Min(values); max = TensorPrimitives.Max(values); }
        // TensorPrimitives.Min/Max propagate NaN; infinities show up as the extremes.
        if (!float.IsFinite(min) || !float.IsFinite(max)) throw NonFinite(what);
        return (min, max);
    }

    /// <summary>Parameters for a whole tensor.</summary>
    public static QuantParams ForTensor(ReadOnlySpan<float> values, QuantType type, bool symmetric, bool reduceRange, string? what = null)
    {
        var (min, max) = MinMax(values, what);
        return Compute(min, max, type, symmetric, reduceRange, what);
    }

    /// <summary>
    /// Parameters per slice along <paramref name="axis"/> of a tensor with shape <paramref name="shape"/>
    /// (e.g. axis 1 of a [K, N] MatMul weight: one scale per output column).
    /// </summary>
    public static QuantParams[] PerChannel(ReadOnlySpan<float> values, long[] shape, int axis, QuantType type, bool symmetric, bool reduceRange, string? what = null)
    {
        var (outer, channels, inner) = Split(shape, axis);
        var mins = new float[channels];
        var maxs = new float[channels];
        mins.AsSpan().Fill(float.PositiveInfinity);
        maxs.AsSpan().Fill(float.NegativeInfinity);
        for (long o = 0; o < outer; o++)
            for (int c = 0; c < channels; c++)
            {
                var slice = values.Slice((int)((o * channels + c) * inner), (int)inner);
                var (mn, mx) = MinMax(slice, what);
                if (mn < mins[c]) mins[c] = mn;
                if (mx > maxs[c]) maxs[c] = mx;
            }
        var result = new QuantParams[channels];
        for (int c = 0; c < channels; c++)
            result[c] = inner == 0 || outer == 0 ? new QuantParams(1f, Range(type, symmetric, reduceRange).QMin) : Compute(mins[c], maxs[c], type, symmetric, reduceRange, what);
        return result;
    }

    /// <summary>q = clamp(round_half_even(x / scale) + zp) for one value.</summary>
    public static int Quantize(float x, QuantParams p, int qmin, int qmax)
    {
        float q = MathF.Round(x / p.Scale, MidpointRounding.ToEven) + p.ZeroPoint;
        return q < qmin ? qmin : q > qmax ? qmax : (int)q;
    }

    /// <summary>
    /// Quantizes a span with one parameter pair into bytes (int8 stored as its two's-complement byte), vectorized with
    /// TensorPrimitives in chunks: x / scale, round half to even, + zero point, clamp, narrow.
    /// </summary>
    public static void Quantize(ReadOnlySpan<float> x, QuantParams p, int qmin, int qmax, Span<byte> destination)
    {
        if (destination.Length < x.Length) throw new ArgumentException("Destination too short.", nameof(destination));
        if (x.Length < 128)
        {
            // Small blocks (weight-only): a scalar loop beats the per-call overhead of the vector kernels.
            float zp = p.ZeroPoint, lo = qmin, hi = qmax;
            for (int i = 0; i < x.Length; i++)
            {
                float q = MathF.Round(x[i] / p.Scale) + zp; // MathF.Round rounds half to even
                destination[i] = (byte)(sbyte)(int)(q < lo ? lo : q > hi ? hi : q);
            }
            return;
        }
        const int Chunk = 4096;
        Span<float> tmp = stackalloc float[Math.Min(Chunk, Math.Max(1, x.Length))];
        for (int start = 0; start < x.Length; start += Chunk)
        {
            int n = Math.Min(Chunk, x.Length - start);
            var t = tmp[..n];
            TensorPrimitives.Divide(x.Slice(start, n), p.Scale, t);
            TensorPrimitives.Round(t, t);
            TensorPrimitives.Add(t, (float)p.ZeroPoint, t);
            TensorPrimitives.Max(t, (float)qmin, t);
            TensorPrimitives.Min(t, (float)qmax, t);
            var d = destination.Slice(start, n);
            for (int i = 0; i < n; i++) d[i] = (byte)(sbyte)(int)t[i];
        }
    }

    /// <summary><see cref="Quantize(ReadOnlySpan{float}, QuantParams, int, int, Span{byte})"/> over large arrays, in parallel slices.</summary>
    public static void QuantizeParallel(float[] x, QuantParams p, int qmin, int qmax, byte[] destination)
    {
        const int Slice = 1 << 18;
        if (x.Length <= Slice) { Quantize(x, p, qmin, qmax, destination); return; }
        Parallelism.Each(0, (x.Length + Slice - 1) / Slice, s =>
        {
            int start = s * Slice, n = Math.Min(Slice, x.Length - start);
            Quantize(x.AsSpan(start, n), p, qmin, qmax, destination.AsSpan(start, n));
        });
    }

    /// <summary>Quantizes a whole tensor per channel along <paramref name="axis"/>.</summary>
    public static byte[] QuantizePerChannel(ReadOnlySpan<float> values, long[] shape, int axis, QuantParams[] p, int qmin, int qmax)
    {
        var (outer, channels, inner) = Split(shape, axis);
        var result = new byte[values.Length];
        for (long o = 0; o < outer; o++)
            for (int c = 0; c < channels; c++)
            {
                int start = (int)((o * channels + c) * inner);
                Quantize(values.Slice(start, (int)inner), p[c], qmin, qmax, result.AsSpan(start, (int)inner));
            }
        return result;
    }

    /// <summary>real = (q - zp) * scale.</summary>
    public static void Dequantize(ReadOnlySpan<byte> q, bool signed, QuantParams p, Span<float> destination)
    {
        for (int i = 0; i < q.Length; i++)
        {
            int v = signed ? (sbyte)q[i] : q[i];
            destination[i] = (v - p.ZeroPoint) * p.Scale;
        }
    }

    /// <summary>float32 → float16 (round to nearest even; out-of-range values become ±infinity, which the caller checks).</summary>
    public static Half[] ToHalf(ReadOnlySpan<float> values)
    {
        var result = new Half[values.Length];
        TensorPrimitives.ConvertToHalf(values, result);
        return result;
    }

    public static byte[] HalfBytes(Half[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    /// <summary>Smallest scale used; below it 1/scale is not finite.</summary>
    public const float MinScale = 1e-30f;

    /// <summary>Largest finite float16 value.</summary>
    public const float HalfMax = 65504f;

    /// <summary>(outer, channels, inner) sizes for iterating a tensor along one axis.</summary>
    public static (long Outer, int Channels, long Inner) Split(long[] shape, int axis)
    {
        if (axis < 0) axis += shape.Length;
        if (axis < 0 || axis >= shape.Length) throw new ArgumentOutOfRangeException(nameof(axis));
        long outer = 1, inner = 1;
        for (int i = 0; i < axis; i++) outer *= shape[i];
        for (int i = axis + 1; i < shape.Length; i++) inner *= shape[i];
        return (outer, checked((int)shape[axis]), inner);
    }

    static int ClampZeroPoint(int zp, int qmin, int qmax) => Math.Clamp(zp, qmin, qmax);

    static float NonZeroScale(float scale, string? what)
    {
        if (!float.IsFinite(scale)) throw NonFinite(what);
        // A zero or subnormal scale (values around 1e-38) would make 1/scale overflow; such values quantize to the zero point.
        return scale == 0 ? 1f : MathF.Max(scale, MinScale);
    }

    /// <summary>
    /// A scale as float16 stores it (graphs that compute in float16 keep float16 scales): rounded to nearest, and kept
    /// at least the smallest positive float16 so that it never becomes zero.
    /// </summary>
    public static float RoundToHalfScale(float scale)
    {
        float h = (float)(Half)scale;
        if (h == 0) return (float)Half.Epsilon;
        return float.IsFinite(h) ? h : (float)Half.MaxValue;
    }

    internal static EngineException NonFiniteError(string? what) => NonFinite(what);

    static EngineException NonFinite(string? what) =>
        new("QuantizationNonFiniteValues", EngineErrorKind.InvalidData,
            $"{(what is null ? "A tensor" : $"'{what}'")} contains NaN or infinite values; it cannot be quantized (no scale represents them). Fix the model or exclude the node.")
        { Target = what };
}
