using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace ModelCompression.Native.Kernels;

/// <summary>
/// A [K, N] weight quantized block-wise along K: each column n is cut into blocks of <see cref="BlockSize"/> rows with
/// one scale and one integer zero point per block. Codes are unsigned (symmetric codes are the signed values shifted by
/// 2^(bits-1), which is the default zero point of MatMulNBits and GatherBlockQuantized).
/// Layouts are column-major, as ONNX Runtime's block formats store them: column n's K codes are contiguous.
/// Every weight-only algorithm (<see cref="RoundToNearest"/>, <see cref="Hqq"/>, <see cref="Gptq"/>) produces one.
/// </summary>
public sealed class BlockQuantized
{
    BlockQuantized(int k, int n, int bits, int blockSize, bool symmetric)
    {
        if (bits is not (4 or 8)) throw new ArgumentOutOfRangeException(nameof(bits));
        if (blockSize < 1) throw new ArgumentOutOfRangeException(nameof(blockSize));
        K = k; N = n; Bits = bits; BlockSize = blockSize; Symmetric = symmetric;
        Codes = new byte[(long)n * k];
        Scales = new float[(long)n * BlocksPerColumn];
        ZeroPoints = new byte[(long)n * BlocksPerColumn];
    }

    /// <summary>An empty result to fill (codes 0, scales 0).</summary>
    public static BlockQuantized Create(int k, int n, int bits, int blockSize, bool symmetric) => new(k, n, bits, blockSize, symmetric);

    public int K { get; }
    public int N { get; }
    public int Bits { get; }
    public int BlockSize { get; }
    public bool Symmetric { get; }
    public int BlocksPerColumn => (K + BlockSize - 1) / BlockSize;
    /// <summary>Unsigned codes [N, K]: column n's codes are Codes[n*K .. n*K+K).</summary>
    public byte[] Codes { get; }
    /// <summary>[N, BlocksPerColumn] scales.</summary>
    public float[] Scales { get; }
    /// <summary>[N, BlocksPerColumn] unsigned zero points (2^(bits-1) when symmetric).</summary>
    public byte[] ZeroPoints { get; }

    /// <summary>The code range of the grid: [1, 15] / [1, 255] symmetric (a level each side of the zero point), [0, 15] / [0, 255] asymmetric.</summary>
    public (int QMin, int QMax) CodeRange => Range(Bits, Symmetric);

    internal static (int QMin, int QMax) Range(int bits, bool symmetric)
    {
        var (lo, hi) = QuantMath.Range(Type(bits, symmetric), symmetric);
        int shift = symmetric ? 1 << (bits - 1) : 0;
        return (lo + shift, hi + shift);
    }

    /// <summary>Symmetric grids are the signed types, asymmetric ones the unsigned.</summary>
    static QuantType Type(int bits, bool symmetric) =>
        bits == 4 ? (symmetric ? QuantType.Int4 : QuantType.UInt4) : (symmetric ? QuantType.Int8 : QuantType.UInt8);

    /// <summary>Scale and zero point of a block of values in [min, max], on this grid (the one formula: <see cref="QuantMath.Compute"/>).</summary>
    internal static (float Scale, byte ZeroPoint) Params(float min, float max, int bits, bool symmetric, bool halfScale, string? what)
    {
        var p = QuantMath.Compute(min, max, Type(bits, symmetric), symmetric, what: what);
        float scale = halfScale ? QuantMath.RoundToHalfScale(p.Scale) : p.Scale;
        return (scale, (byte)(p.ZeroPoint + (symmetric ? 1 << (bits - 1) : 0)));
    }

    /// <summary>Codes packed as MatMulNBits' B: [N, blocks, blockSize*bits/8], low nibble first; padding rows hold the zero point.</summary>
    public byte[] PackedCodes()
    {
        int blocks = BlocksPerColumn, blob = BlockSize * Bits / 8;
        // Without padding, each column's blocks are its codes in order: packing is one pass over all of them.
        if (K % BlockSize == 0) return Bits == 8 ? (byte[])Codes.Clone() : PackPairs(Codes);
        var packed = new byte[(long)N * blocks * blob];
        Parallelism.Each(0, N, c =>
        {
            var column = Codes.AsSpan((int)((long)c * K), K);
            var dst = packed.AsSpan((int)((long)c * blocks * blob), blocks * blob);
            for (int b = 0; b < blocks; b++)
            {
                int start = b * BlockSize, len = Math.Min(BlockSize, K - start);
                byte pad = ZeroPoints[(long)c * blocks + b];
                var block = dst.Slice(b * blob, blob);
                if (Bits == 8)
                {
                    column.Slice(start, len).CopyTo(block);
                    block[len..].Fill(pad);
                    continue;
                }
                for (int i = 0; i < BlockSize; i += 2)
                {
                    int lo = i < len ? column[start + i] : pad, hi = i + 1 < len ? column[start + i + 1] : pad;
                    block[i >> 1] = (byte)((lo & 0x0F) | (hi << 4));
                }
            }
        });
        return packed;
    }

    /// <summary>Codes packed per column without block padding, [N, ceil(K*bits/8)] (GatherBlockQuantized's uint8 data, one row per table row).</summary>
    public byte[] PackedRows()
    {
        if (Bits == 8) return (byte[])Codes.Clone();
        if (K % 2 == 0) return PackPairs(Codes);
        int rowBytes = (K * Bits + 7) / 8;
        var packed = new byte[(long)N * rowBytes];
        Parallelism.Each(0, N, c =>
        {
            var column = Codes.AsSpan((int)((long)c * K), K);
            var dst = packed.AsSpan((int)((long)c * rowBytes), rowBytes);
            for (int i = 0; i < K; i += 2) dst[i >> 1] = (byte)((column[i] & 0x0F) | (i + 1 < K ? column[i + 1] << 4 : 0));
        });
        return packed;
    }

    /// <summary>Two 4-bit codes per byte, low nibble first, over a whole array of even length (16 pairs per vector).</summary>
    static unsafe byte[] PackPairs(byte[] codes)
    {
        var packed = new byte[codes.Length / 2];
        fixed (byte* src = codes) fixed (byte* dst = packed)
        {
            long i = 0, pairs = packed.Length;
            var low = Vector256.Create((ushort)0x000F);
            var high = Vector256.Create((ushort)0x00F0);
            for (; i + 32 <= pairs; i += 32)
            {
                // Each ushort holds a pair (first code in its low byte): (u & 0x0F) | ((u >> 4) & 0xF0).
                var a = Vector256.Load((ushort*)(src + 2 * i));
                var b = Vector256.Load((ushort*)(src + 2 * i + 32));
                var pa = (a & low) | (Vector256.ShiftRightLogical(a, 4) & high);
                var pb = (b & low) | (Vector256.ShiftRightLogical(b, 4) & high);
                Vector256.Narrow(pa, pb).Store(dst + i);
            }
            for (; i < pairs; i++) dst[i] = (byte)((src[2 * i] & 0x0F) | (src[2 * i + 1] << 4));
        }
        return packed;
    }

    /// <summary>Zero points packed per column: [N, ceil(blocks * bits / 8)], low nibble first.</summary>
    public byte[] PackedZeroPoints()
    {
        int blocks = BlocksPerColumn;
        if (Bits == 8) return ZeroPoints;
        int perColumn = (blocks + 1) / 2;
        var packed = new byte[(long)N * perColumn];
        for (long c = 0; c < N; c++)
            for (int b = 0; b < blocks; b++)
            {
                byte z = ZeroPoints[c * blocks + b];
                long idx = c * perColumn + b / 2;
                packed[idx] |= (byte)((b & 1) == 0 ? z & 0x0F : z << 4);
            }
        return packed;
    }

    /// <summary>Code of row k, column n.</summary>
    public int Code(int k, int n) => Codes[(long)n * K + k];

    /// <summary>The dequantized weight [K, N] row-major.</summary>
    public float[] Dequantize()
    {
        int blocks = BlocksPerColumn;
        var w = new float[(long)K * N];
        Parallelism.Each(0, N, c =>
        {
            for (int r = 0; r < K; r++)
            {
                long p = (long)c * blocks + r / BlockSize;
                w[(long)r * N + c] = (Codes[(long)c * K + r] - ZeroPoints[p]) * Scales[p];
            }
        });
        return w;
    }
}

/// <summary>
/// Round to nearest: each block's scale and zero point from its minimum and maximum (<see cref="QuantMath.Compute"/>),
/// each value rounded to the nearest level. The reference every other weight-only algorithm is measured against.
/// </summary>
public static class RoundToNearest
{
    /// <summary>Quantizes weight[K, N] (row-major) block-wise along K.</summary>
    /// <param name="halfScales">Round scales to float16 (the graph computes in float16) before the codes are chosen.</param>
    public static BlockQuantized Quantize(ReadOnlySpan<float> weight, int k, int n, int bits, int blockSize, bool symmetric, bool halfScales = false, string? what = null)
    {
        var q = BlockQuantized.Create(k, n, bits, blockSize, symmetric);
        BlockTiles.Run(weight, q, new Rtn(bits, symmetric, halfScales, what));
        return q;
    }

    readonly unsafe struct Rtn(int bits, bool symmetric, bool halfScales, string? what) : BlockTiles.ITileQuantizer
    {
        public void Quantize(float* tile, int stride, int rows, float* scales, byte* zeroPoints, byte* codes)
        {
            const int L = BlockTiles.Lanes;
            float* min = stackalloc float[L], max = stackalloc float[L];
            BlockTiles.MinMax(tile, stride, rows, min, max, what);
            for (int j = 0; j < L; j++) (scales[j], zeroPoints[j]) = BlockQuantized.Params(min[j], max[j], bits, symmetric, halfScales, what);
            var (qmin, qmax) = BlockQuantized.Range(bits, symmetric);
            BlockTiles.Codes(tile, stride, rows, scales, zeroPoints, qmin, qmax, codes);
        }
    }
}

/// <summary>
/// Walks a row-major [K, N] weight in tiles of one block (up to BlockSize rows) by <see cref="Lanes"/> columns, so every
/// vector holds the same row of <see cref="Lanes"/> neighbouring columns (contiguous in memory) and per-column sums are
/// plain vector additions; no transposed copy of the weight is made. Blocks run in parallel; a tile at the right edge
/// is copied and padded with zero columns, the others are read in place.
/// </summary>
internal static unsafe class BlockTiles
{
    public const int Lanes = 8;

    public interface ITileQuantizer
    {
        /// <summary>
        /// Quantizes a tile of <paramref name="rows"/> x <see cref="Lanes"/> values (rows <paramref name="stride"/> floats
        /// apart): one scale and zero point per lane, codes row-major [rows, Lanes].
        /// </summary>
        void Quantize(float* tile, int stride, int rows, float* scales, byte* zeroPoints, byte* codes);
    }

    public static void Run<T>(ReadOnlySpan<float> weight, BlockQuantized q, T quantizer) where T : struct, ITileQuantizer
    {
        int k = q.K, n = q.N, bs = q.BlockSize, blocks = q.BlocksPerColumn, strips = (n + Lanes - 1) / Lanes;
        if ((long)k * n > weight.Length) throw new ArgumentException("The weight holds fewer than K*N values.", nameof(weight));
        fixed (float* w = weight) fixed (byte* codesOut = q.Codes) fixed (float* scalesOut = q.Scales) fixed (byte* zerosOut = q.ZeroPoints)
        {
            nint wp = (nint)w, cp = (nint)codesOut, sp = (nint)scalesOut, zp = (nint)zerosOut;
            Parallelism.Each(0, blocks, b =>
            {
                int start = b * bs, rows = Math.Min(bs, k - start);
                float* pad = stackalloc float[rows * Lanes];
                byte* codes = stackalloc byte[rows * Lanes];
                float* scales = stackalloc float[Lanes];
                byte* zps = stackalloc byte[Lanes];
                for (int s = 0; s < strips; s++)
                {
                    int c0 = s * Lanes, width = Math.Min(Lanes, n - c0);
                    float* src = (float*)wp + (long)start * n + c0;
                    int stride = n;
                    if (width < Lanes)
                    {
                        for (int r = 0; r < rows; r++)
                            for (int j = 0; j < Lanes; j++) pad[r * Lanes + j] = j < width ? src[(long)r * n + j] : 0;
                        src = pad;
                        stride = Lanes;
                    }
                    quantizer.Quantize(src, stride, rows, scales, zps, codes);
                    for (int j = 0; j < width; j++)
                    {
                        long c = c0 + j;
                        ((float*)sp)[c * blocks + b] = scales[j];
                        ((byte*)zp)[c * blocks + b] = zps[j];
                        byte* dst = (byte*)cp + c * k + start;
                        for (int r = 0; r < rows; r++) dst[r] = codes[r * Lanes + j];
                    }
                }
            });
        }
    }

    /// <summary>Per-lane minimum and maximum; NaN or infinity is refused naming <paramref name="what"/>.</summary>
    public static void MinMax(float* tile, int stride, int rows, float* min, float* max, string? what)
    {
        var mn = Vector256.Create(float.PositiveInfinity);
        var mx = Vector256.Create(float.NegativeInfinity);
        var bad = Vector256<float>.Zero;
        for (int r = 0; r < rows; r++)
        {
            var v = Vector256.Load(tile + (long)r * stride);
            mn = Vector256.Min(mn, v);
            mx = Vector256.Max(mx, v);
            bad |= ~Vector256.Equals(v - v, Vector256<float>.Zero); // NaN and ±infinity give NaN
        }
        if (bad != Vector256<float>.Zero) throw QuantMath.NonFiniteError(what);
        mn.Store(min);
        mx.Store(max);
    }

    /// <summary>codes = clamp(round_half_even(x / scale) + zero point, qmin, qmax) per lane.</summary>
    public static void Codes(float* tile, int stride, int rows, float* scales, byte* zeroPoints, int qmin, int qmax, byte* codes)
    {
        var s = Vector256.Load(scales);
        var z = ZeroPointVector(zeroPoints);
        var lo = Vector256.Create((float)qmin);
        var hi = Vector256.Create((float)qmax);
        for (int r = 0; r < rows; r++)
        {
            var v = Vector256.Load(tile + (long)r * stride);
            var c = Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(Simd.RoundEven(v / s) + z, lo), hi));
            var shorts = Vector128.Narrow(c.GetLower(), c.GetUpper());
            *(ulong*)(codes + r * Lanes) = Vector128.Narrow(shorts, shorts).AsUInt64().ToScalar();
        }
    }

    public static Vector256<float> ZeroPointVector(byte* zeroPoints) =>
        Vector256.Create((float)zeroPoints[0], zeroPoints[1], zeroPoints[2], zeroPoints[3], zeroPoints[4], zeroPoints[5], zeroPoints[6], zeroPoints[7]);
}

/// <summary>Small vector helpers the kernels share.</summary>
internal static class Simd
{
    const float Magic = 12582912f; // 1.5 * 2^23: adding and subtracting it rounds to an integer, half to even

    /// <summary>Rounds to the nearest integer, half to even (as MathF.Round), for |x| below 2^22; larger values are clamped there first.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> RoundEven(Vector256<float> x)
    {
        var limit = Vector256.Create(4194304f);
        x = Vector256.Min(Vector256.Max(x, -limit), limit);
        var m = Vector256.Create(Magic);
        return (x + m) - m;
    }
}
