using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModelCompression.Native.Kernels;

/// <summary>
/// Single-precision matrix product C = alpha·op(A)·op(B) + beta·C on row-major storage, the engine's GEMM.
/// Blocked in the classic way: K is cut into KC-deep slices; for each slice op(B) is packed into NR-wide column
/// strips and op(A) (scaled by alpha) into MR-tall row strips, so the register-blocked micro-kernel reads both
/// with unit stride from cache. The micro-kernel keeps an MR×NR block of C in vector registers and updates it with
/// fused multiply-adds: 8×32 with Vector512 where AVX-512 runs, 6×16 with Vector256 (FMA when the CPU has it).
/// For the cores, C is cut along its longer side into a few chunks per thread, each a complete serial product with
/// its own packed panels (no barrier between K slices), spread with Parallelism.Each; a small C over a long K is cut along
/// K instead (see DeepProduct). How a product is cut depends on its shape only, never on the thread count, so results
/// do not depend on the thread count or scheduling.
/// </summary>
public static partial class Gemm
{
    const int KC = 256;
    const int MCStrips = 12;   // MC = MR * MCStrips rows of A per tile
    const int NCStrips = 8;    // NC = NR * NCStrips columns of B per tile
    const long ParallelFlops = 1L << 20;

    internal enum Path { V512, V256, Portable }

    static readonly Path Best = Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? Path.V512
        : Vector256.IsHardwareAccelerated ? Path.V256 : Path.Portable;

    /// <summary>Tests run every kernel the machine can execute by forcing a slower one on their thread; null means the best.</summary>
    internal static Path? Forced { get => forced; set => forced = value; }

    [ThreadStatic] static Path? forced;

    static Path Chosen => Forced ?? Best;

    /// <summary>The kernels this machine can run, best first.</summary>
    internal static IReadOnlyList<Path> Available => Best switch
    {
        Path.V512 => [Path.V512, Path.V256, Path.Portable],
        Path.V256 => [Path.V256, Path.Portable],
        _ => [Path.Portable],
    };

    /// <summary>The micro-kernel in use, for benches and notes.</summary>
    public static string KernelName => Chosen switch
    {
        Path.V512 => "Vector512 FMA 8x32",
        Path.V256 => Fma.IsSupported ? "Vector256 FMA 6x16" : "Vector256 6x16 (no FMA)",
        _ => "portable (TensorPrimitives rows)",
    };

    /// <summary>Threads a product may use; 0 means all processors.</summary>
    public static int MaxThreads { get; set; }

    /// <summary>
    /// C[m,n] = alpha·op(A)·op(B) + beta·C. op(A) is m×k (A stored k×m with leading dimension lda when transA);
    /// op(B) is k×n (B stored n×k when transB). beta = 0 overwrites C without reading it.
    /// </summary>
    public static unsafe void Multiply(bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int lda, ReadOnlySpan<float> b, int ldb, float beta, Span<float> c, int ldc)
    {
        if (m < 0 || n < 0 || k < 0) throw new ArgumentOutOfRangeException(nameof(m), "Matrix dimensions must be non-negative.");
        if (m == 0 || n == 0) return;
        CheckExtent(a.Length, transA ? k : m, transA ? m : k, lda, nameof(a));
        CheckExtent(b.Length, transB ? n : k, transB ? k : n, ldb, nameof(b));
        CheckExtent(c.Length, m, n, ldc, nameof(c));
        if (k == 0 || alpha == 0f)
        {
            for (int i = 0; i < m; i++)
            {
                var row = c.Slice(i * ldc, n);
                if (beta == 0f) row.Clear(); else if (beta != 1f) TensorPrimitives.Multiply(row, beta, row);
            }
            return;
        }
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
        {
            if (Chosen == Path.Portable) Portable(transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
            else Blocked(Chosen == Path.V512 ? 8 : 6, Chosen == Path.V512 ? 32 : 16, transA, transB, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
        }
    }

    /// <summary>C = A·B for contiguous row-major A[m,k], B[k,n], C[m,n].</summary>
    public static void Multiply(int m, int n, int k, ReadOnlySpan<float> a, ReadOnlySpan<float> b, Span<float> c)
        => Multiply(false, false, m, n, k, 1f, a, k, b, n, 0f, c, n);

    /// <summary>
    /// <paramref name="batch"/> independent products C_i = alpha·op(A_i)·op(B_i) + beta·C_i, where A_i starts at
    /// i·<paramref name="strideA"/> in <paramref name="a"/> (likewise B and C; a stride of 0 shares one matrix). Attention
    /// multiplies many small matrices (one per sequence and head): they are spread over the cores whole, each a serial
    /// product, rather than each cut into pieces too small to pay for the threads. Large products run one after the other,
    /// each on all cores. Every element is summed in the same order either way.
    /// </summary>
    public static unsafe void MultiplyBatched(int batch, bool transA, bool transB, int m, int n, int k, float alpha,
        ReadOnlySpan<float> a, int strideA, int lda, ReadOnlySpan<float> b, int strideB, int ldb, float beta, Span<float> c, int strideC, int ldc)
    {
        if (batch < 0 || m < 0 || n < 0 || k < 0) throw new ArgumentOutOfRangeException(nameof(batch), "Batch and matrix dimensions must be non-negative.");
        if (batch == 0 || m == 0 || n == 0) return;
        if (strideC < (long)(m - 1) * ldc + n) throw new ArgumentException("The products' outputs overlap: strideC is smaller than one output matrix.", nameof(strideC));
        CheckExtent(a.Length - (long)(batch - 1) * strideA, transA ? k : m, transA ? m : k, lda, nameof(a));
        CheckExtent(b.Length - (long)(batch - 1) * strideB, transB ? n : k, transB ? k : n, ldb, nameof(b));
        CheckExtent(c.Length - (long)(batch - 1) * strideC, m, n, ldc, nameof(c));
        int threads = Parallelism.Threads;
        if (batch == 1 || threads <= 1 || k == 0 || alpha == 0f || Chosen == Path.Portable || 2L * m * n * k >= 4 * ParallelFlops || 2L * m * n * k * batch < ParallelFlops)
        {
            for (int i = 0; i < batch; i++)
                Multiply(transA, transB, m, n, k, alpha, a[(i * strideA)..], lda, b[(i * strideB)..], ldb, beta, c[(i * strideC)..], ldc);
            return;
        }
        int mr = Chosen == Path.V512 ? 8 : 6, nr = Chosen == Path.V512 ? 32 : 16;
        fixed (float* pa = a) fixed (float* pb = b) fixed (float* pc = c)
        {
            nint A = (nint)pa, B = (nint)pb, C = (nint)pc;
            int chunks = Math.Min(batch, threads * 4);
            Parallelism.Each(0, chunks, t =>
            {
                int i0 = (int)((long)batch * t / chunks), i1 = (int)((long)batch * (t + 1) / chunks);
                for (int i = i0; i < i1; i++)
                    Serial(mr, nr, transA, transB, m, n, k, alpha, (float*)A + (long)i * strideA, lda, (float*)B + (long)i * strideB, ldb, beta, (float*)C + (long)i * strideC, ldc);
            });
        }
    }

    static void CheckExtent(long length, int rows, int cols, int ld, string name)
    {
        if (rows == 0 || cols == 0) return;
        if (ld < cols || (long)(rows - 1) * ld + cols > length)
            throw new ArgumentException($"Matrix '{name}' ({rows}x{cols}, leading dimension {ld}) does not fit in {length} values.", name);
    }

    static unsafe void Blocked(int mr, int nr, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        int threads = Parallelism.Threads;
        if (k >= 1024 && k >= 4 * Math.Max(m, n) && 2L * m * n * k >= ParallelFlops)
        {
            DeepProduct(mr, nr, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, threads);
            return;
        }
        if (threads <= 1 || 2L * m * n * k < ParallelFlops)
        {
            Serial(mr, nr, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
            return;
        }
        // Cut C along its longer side into a few chunks per thread; each chunk is a whole serial product with its own
        // packed panels, so the threads never wait for each other until the end (on a busy machine a descheduled
        // thread would otherwise stall every barrier), and a late chunk is picked up by whichever thread is free.
        bool byColumns = n >= m;
        int strips = byColumns ? (n + nr - 1) / nr : (m + mr - 1) / mr;
        int chunks = Math.Min(strips, threads * 4);
        nint A = (nint)a, B = (nint)b, C = (nint)c;
        Parallelism.Each(0, chunks, i =>
        {
            int s0 = (int)((long)strips * i / chunks), s1 = (int)((long)strips * (i + 1) / chunks);
            if (byColumns)
            {
                int c0 = s0 * nr, cols = Math.Min(n, s1 * nr) - c0;
                float* bc = (float*)B + (transB ? (long)c0 * ldb : c0);
                Serial(mr, nr, transA, transB, m, cols, k, alpha, (float*)A, lda, bc, ldb, beta, (float*)C + c0, ldc);
            }
            else
            {
                int r0 = s0 * mr, rows = Math.Min(m, s1 * mr) - r0;
                float* ar = (float*)A + (transA ? r0 : (long)r0 * lda);
                Serial(mr, nr, transA, transB, rows, n, k, alpha, ar, lda, (float*)B, ldb, beta, (float*)C + (long)r0 * ldc, ldc);
            }
        });
    }

    /// <summary>
    /// A small C from a long K (weight gradients: Xᵀ·dY over thousands of tokens). Cutting C would make every chunk pack
    /// all of the other operand again; instead K is cut into pieces (their number depends on K alone, so the sums are the
    /// same on any number of threads), each piece is a serial product into its own buffer, and the buffers are added in order.
    /// </summary>
    static unsafe void DeepProduct(int mr, int nr, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, int threads)
    {
        int pieces = Math.Min(8, k / 512);
        int size = m * n;
        float[] partial = ArrayPool<float>.Shared.Rent(pieces * size);
        try
        {
            nint A = (nint)a, B = (nint)b;
            Parallelism.Each(0, pieces, p =>
            {
                int k0 = (int)((long)k * p / pieces), k1 = (int)((long)k * (p + 1) / pieces);
                float* ap = (float*)A + (transA ? (long)k0 * lda : k0);
                float* bp = (float*)B + (transB ? k0 : (long)k0 * ldb);
                fixed (float* part = &partial[p * size])
                    Serial(mr, nr, transA, transB, m, n, k1 - k0, alpha, ap, lda, bp, ldb, 0f, part, n);
            });
            for (int i = 0; i < m; i++)
            {
                var row = new Span<float>(c + (long)i * ldc, n);
                var first = partial.AsSpan(i * n, n);
                if (beta == 0f) first.CopyTo(row);
                else { TensorPrimitives.Multiply(row, beta, row); TensorPrimitives.Add(row, first, row); }
                for (int p = 1; p < pieces; p++) TensorPrimitives.Add(row, partial.AsSpan(p * size + i * n, n), row);
            }
        }
        finally { ArrayPool<float>.Shared.Return(partial); }
    }
}
