namespace ModelCompression.Native.Kernels;

/// <summary>
/// Block-wise low-bit quantization of a [K, N] MatMul weight along K (each column split into blocks of
/// <c>blockSize</c> rows, one scale per block, and one zero point per block when asymmetric).
/// Scales and zero points come from <see cref="QuantMath.Compute"/>.
/// </summary>
public sealed class BlockQuantized
{
    public required int K { get; init; }
    public required int N { get; init; }
    public required int Bits { get; init; }
    public required int BlockSize { get; init; }
    public required bool Symmetric { get; init; }
    public int BlocksPerColumn => (K + BlockSize - 1) / BlockSize;
    /// <summary>Unsigned codes, [N, BlocksPerColumn * BlockSize] (column-major over the original weight; padding rows hold the zero point).</summary>
    public required byte[] Codes { get; init; }
    /// <summary>[N, BlocksPerColumn] scales.</summary>
    public required float[] Scales { get; init; }
    /// <summary>[N, BlocksPerColumn] unsigned zero points (2^(bits-1) when symmetric).</summary>
    public required byte[] ZeroPoints { get; init; }

    /// <summary>Quantizes weight[K, N] (row-major) block-wise along K.</summary>
    public static BlockQuantized Quantize(ReadOnlySpan<float> weight, int k, int n, int bits, int blockSize, bool symmetric, string? what = null)
    {
        if (bits is not (4 or 8)) throw new ArgumentOutOfRangeException(nameof(bits));
        var type = bits == 4 ? QuantType.UInt4 : QuantType.UInt8;
        // Symmetric codes are the signed values shifted by 2^(bits-1), which is the default zero point of MatMulNBits.
        var signedType = bits == 4 ? QuantType.Int4 : QuantType.Int8;
        int offset = 1 << (bits - 1);
        int blocks = (k + blockSize - 1) / blockSize;
        int padded = blocks * blockSize;
        var codes = new byte[(long)n * padded];
        var scales = new float[n * blocks];
        var zps = new byte[n * blocks];
        var (uqmin, uqmax) = QuantMath.Range(type);
        var (sqmin, sqmax) = QuantMath.Range(signedType, symmetric: true);
        // Columns become contiguous rows ([N, K]) with a tiled transpose, so every block is a contiguous span.
        var columns = Transpose(weight, k, n);
        Parallel.For(0, n, c =>
        {
            Span<byte> buffer = stackalloc byte[blockSize];
            for (int b = 0; b < blocks; b++)
            {
                int start = b * blockSize, len = Math.Min(blockSize, k - start);
                var block = columns.AsSpan(c * k + start, len);
                var (min, max) = QuantMath.MinMax(block, what);
                QuantParams p;
                int qmin, qmax, shift;
                if (symmetric) { p = QuantMath.Compute(min, max, signedType, symmetric: true, what: what); qmin = sqmin; qmax = sqmax; shift = offset; }
                else { p = QuantMath.Compute(min, max, type, what: what); qmin = uqmin; qmax = uqmax; shift = 0; }
                scales[c * blocks + b] = p.Scale;
                zps[c * blocks + b] = (byte)(p.ZeroPoint + shift);
                QuantMath.Quantize(block, p, qmin, qmax, buffer);
                long rowStart = (long)c * padded + start;
                for (int i = 0; i < blockSize; i++)
                    codes[rowStart + i] = (byte)((i < len ? (symmetric ? (sbyte)buffer[i] : buffer[i]) : p.ZeroPoint) + shift);
            }
        });
        return new BlockQuantized { K = k, N = n, Bits = bits, BlockSize = blockSize, Symmetric = symmetric, Codes = codes, Scales = scales, ZeroPoints = zps };
    }

    /// <summary>[K, N] row-major → [N, K] row-major, in cache-sized tiles.</summary>
    static float[] Transpose(ReadOnlySpan<float> w, int k, int n)
    {
        var t = new float[(long)k * n];
        const int Tile = 32;
        for (int r0 = 0; r0 < k; r0 += Tile)
            for (int c0 = 0; c0 < n; c0 += Tile)
            {
                int r1 = Math.Min(k, r0 + Tile), c1 = Math.Min(n, c0 + Tile);
                for (int r = r0; r < r1; r++)
                    for (int c = c0; c < c1; c++) t[(long)c * k + r] = w[r * n + c];
            }
        return t;
    }

    /// <summary>Codes packed as MatMulNBits' B: [N, blocks, blockSize*bits/8], two 4-bit codes per byte, low nibble first.</summary>
    public byte[] PackedCodes()
    {
        if (Bits == 8) return Codes;
        var packed = new byte[Codes.Length / 2];
        for (int i = 0; i < packed.Length; i++) packed[i] = (byte)((Codes[2 * i] & 0x0F) | (Codes[2 * i + 1] << 4));
        return packed;
    }

    /// <summary>Zero points packed per column as MatMulNBits expects: [N * ceil(blocks * bits / 8)].</summary>
    public byte[] PackedZeroPoints()
    {
        int blocks = BlocksPerColumn;
        if (Bits == 8) return ZeroPoints;
        int perColumn = (blocks + 1) / 2;
        var packed = new byte[N * perColumn];
        for (int c = 0; c < N; c++)
            for (int b = 0; b < blocks; b++)
            {
                byte z = ZeroPoints[c * blocks + b];
                int idx = c * perColumn + b / 2;
                packed[idx] |= (byte)((b & 1) == 0 ? z & 0x0F : z << 4);
            }
        return packed;
    }

    /// <summary>The dequantized weight [K, N], for checks.</summary>
    public float[] Dequantize()
    {
        int blocks = BlocksPerColumn, padded = blocks * BlockSize;
        var w = new float[K * N];
        for (int c = 0; c < N; c++)
            for (int r = 0; r < K; r++)
            {
                int b = r / BlockSize;
                w[r * N + c] = (Codes[(long)c * padded + r] - ZeroPoints[c * blocks + b]) * Scales[c * blocks + b];
            }
        return w;
    }
}
