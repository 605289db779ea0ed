using System.Buffers;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
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
public static class Gemm
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

    static unsafe void Serial(int mr, int nr, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        int mStrips = (m + mr - 1) / mr, nStrips = (n + nr - 1) / nr;
        int kcMax = Math.Min(KC, k);
        // The 8x32 kernel can read A where it is (rows of A, or columns of a transposed A, which lie like a packed
        // panel with a longer stride): only a partial last strip is packed then.
        bool direct = mr == 8 && alpha == 1f;
        int fullStrips = direct ? m / mr : 0;
        float[] packA = ArrayPool<float>.Shared.Rent(mStrips * mr * kcMax + 16);
        float[] packB = ArrayPool<float>.Shared.Rent(nStrips * nr * kcMax + 16);
        try
        {
            int mTiles = (mStrips + MCStrips - 1) / MCStrips, nTiles = (nStrips + NCStrips - 1) / NCStrips;
            fixed (float* ppa = packA) fixed (float* ppb = packB)
            {
                for (int p0 = 0; p0 < k; p0 += KC)
                {
                    int kc = Math.Min(KC, k - p0);
                    float betaHere = p0 == 0 ? beta : 1f;
                    for (int j = 0; j < nStrips; j++) PackB(b, ldb, transB, p0, kc, j * nr, Math.Min(nr, n - j * nr), nr, ppb + (long)j * nr * kc);
                    for (int i = fullStrips; i < mStrips; i++) PackA(a, lda, transA, p0, kc, i * mr, Math.Min(mr, m - i * mr), mr, alpha, ppa + (long)i * mr * kc);
                    float* aSlice = a + (transA ? (long)p0 * lda : p0);
                    for (int t = 0; t < mTiles * nTiles; t++) Tile(mr, nr, t / nTiles, t % nTiles, mStrips, nStrips, m, n, kc, ppa, ppb, c, ldc, betaHere, aSlice, lda, transA, fullStrips);
                }
            }
        }
        finally
        {
            ArrayPool<float>.Shared.Return(packA);
            ArrayPool<float>.Shared.Return(packB);
        }
    }

    /// <summary>One MC×NC tile of C; strips below <paramref name="direct"/> read A in place (<paramref name="a"/>: this K slice of A), the others from the packed panel.</summary>
    static unsafe void Tile(int mr, int nr, int mt, int nt, int mStrips, int nStrips, int m, int n, int kc, float* pa, float* pb, float* c, int ldc, float beta,
        float* a, int lda, bool transA, int direct)
    {
        int i0 = mt * MCStrips, i1 = Math.Min(mStrips, i0 + MCStrips);
        int j0 = nt * NCStrips, j1 = Math.Min(nStrips, j0 + NCStrips);
        for (int j = j0; j < j1; j++)
        {
            float* bs = pb + (long)j * nr * kc;
            int cols = Math.Min(nr, n - j * nr);
            for (int i = i0; i < i1; i++)
            {
                float* As = pa + (long)i * mr * kc;
                int rows = Math.Min(mr, m - i * mr);
                float* cs = c + (long)i * mr * ldc + j * nr;
                if (i < direct && !transA) Kernel512DirectA(kc, a + (long)i * mr * lda, lda, bs, cs, ldc, beta, cols);
                else if (i < direct) Kernel512(kc, a + i * mr, lda, bs, cs, ldc, beta, rows, cols);
                else if (mr == 8) Kernel512(kc, As, 8, bs, cs, ldc, beta, rows, cols);
                else Kernel256(kc, As, bs, cs, ldc, beta, rows, cols);
            }
        }
    }

    /// <summary>Packs op(A)[row0..row0+rows, p0..p0+kc] as kc columns of mr values (rows past the edge are zero), scaled by alpha.</summary>
    static unsafe void PackA(float* a, int lda, bool trans, int p0, int kc, int row0, int rows, int mr, float alpha, float* dst)
    {
        if (!trans)
        {
            for (int r = 0; r < rows; r++)
            {
                float* src = a + (long)(row0 + r) * lda + p0;
                for (int p = 0; p < kc; p++) dst[p * mr + r] = alpha * src[p];
            }
        }
        else
        {
            for (int p = 0; p < kc; p++)
            {
                float* src = a + (long)(p0 + p) * lda + row0;
                float* d = dst + p * mr;
                for (int r = 0; r < rows; r++) d[r] = alpha * src[r];
            }
        }
        if (rows < mr)
            for (int p = 0; p < kc; p++)
                for (int r = rows; r < mr; r++) dst[p * mr + r] = 0f;
    }

    /// <summary>Packs op(B)[p0..p0+kc, col0..col0+cols] as kc rows of nr values (columns past the edge are zero).</summary>
    static unsafe void PackB(float* b, int ldb, bool trans, int p0, int kc, int col0, int cols, int nr, float* dst)
    {
        if (!trans)
        {
            if (cols == nr)
            {
                for (int p = 0; p < kc; p++)
                    new ReadOnlySpan<float>(b + (long)(p0 + p) * ldb + col0, nr).CopyTo(new Span<float>(dst + p * nr, nr));
                return;
            }
            for (int p = 0; p < kc; p++)
            {
                float* src = b + (long)(p0 + p) * ldb + col0;
                float* d = dst + p * nr;
                int q = 0;
                for (; q < cols; q++) d[q] = src[q];
                for (; q < nr; q++) d[q] = 0f;
            }
        }
        else
        {
            for (int q = 0; q < cols; q++)
            {
                float* src = b + (long)(col0 + q) * ldb + p0;
                for (int p = 0; p < kc; p++) dst[p * nr + q] = src[p];
            }
            for (int q = cols; q < nr; q++)
                for (int p = 0; p < kc; p++) dst[p * nr + q] = 0f;
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Fmadd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Fma.IsSupported ? Fma.MultiplyAdd(a, b, c) : a * b + c;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Fmadd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Avx512F.IsSupported ? Avx512F.FusedMultiplyAdd(a, b, c) : a * b + c;

    /// <summary>6×16 block of C from packed panels, Vector256.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Kernel256(int kc, float* pa, float* pb, float* c, int ldc, float beta, int rows, int cols)
    {
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(pb);
            var b1 = Vector256.Load(pb + 8);
            var a0 = Vector256.Create(pa[0]); c00 = Fmadd(a0, b0, c00); c01 = Fmadd(a0, b1, c01);
            var a1 = Vector256.Create(pa[1]); c10 = Fmadd(a1, b0, c10); c11 = Fmadd(a1, b1, c11);
            var a2 = Vector256.Create(pa[2]); c20 = Fmadd(a2, b0, c20); c21 = Fmadd(a2, b1, c21);
            var a3 = Vector256.Create(pa[3]); c30 = Fmadd(a3, b0, c30); c31 = Fmadd(a3, b1, c31);
            var a4 = Vector256.Create(pa[4]); c40 = Fmadd(a4, b0, c40); c41 = Fmadd(a4, b1, c41);
            var a5 = Vector256.Create(pa[5]); c50 = Fmadd(a5, b0, c50); c51 = Fmadd(a5, b1, c51);
            pa += 6; pb += 16;
        }
        if (rows == 6 && cols == 16)
        {
            Store256(c, beta, c00, c01); Store256(c + ldc, beta, c10, c11); Store256(c + 2 * ldc, beta, c20, c21);
            Store256(c + 3 * ldc, beta, c30, c31); Store256(c + 4 * ldc, beta, c40, c41); Store256(c + 5 * ldc, beta, c50, c51);
            return;
        }
        float* tmp = stackalloc float[6 * 16];
        c00.Store(tmp); c01.Store(tmp + 8); c10.Store(tmp + 16); c11.Store(tmp + 24); c20.Store(tmp + 32); c21.Store(tmp + 40);
        c30.Store(tmp + 48); c31.Store(tmp + 56); c40.Store(tmp + 64); c41.Store(tmp + 72); c50.Store(tmp + 80); c51.Store(tmp + 88);
        StoreEdge(tmp, 16, c, ldc, beta, rows, cols);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Store256(float* c, float beta, Vector256<float> v0, Vector256<float> v1)
    {
        if (beta == 0f) { v0.Store(c); v1.Store(c + 8); return; }
        var vb = Vector256.Create(beta);
        Fmadd(vb, Vector256.Load(c), v0).Store(c);
        Fmadd(vb, Vector256.Load(c + 8), v1).Store(c + 8);
    }

    /// <summary>
    /// 8×32 block of C from a packed B panel and eight values of A per k, <paramref name="aStep"/> apart from one k to
    /// the next: 8 in a packed A panel, lda in a transposed A read in place. Vector512.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Kernel512(int kc, float* pa, int aStep, float* pb, float* c, int ldc, float beta, int rows, int cols)
    {
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default,
            c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(pb);
            var b1 = Vector512.Load(pb + 16);
            var a0 = Vector512.Create(pa[0]); c00 = Fmadd(a0, b0, c00); c01 = Fmadd(a0, b1, c01);
            var a1 = Vector512.Create(pa[1]); c10 = Fmadd(a1, b0, c10); c11 = Fmadd(a1, b1, c11);
            var a2 = Vector512.Create(pa[2]); c20 = Fmadd(a2, b0, c20); c21 = Fmadd(a2, b1, c21);
            var a3 = Vector512.Create(pa[3]); c30 = Fmadd(a3, b0, c30); c31 = Fmadd(a3, b1, c31);
            var a4 = Vector512.Create(pa[4]); c40 = Fmadd(a4, b0, c40); c41 = Fmadd(a4, b1, c41);
            var a5 = Vector512.Create(pa[5]); c50 = Fmadd(a5, b0, c50); c51 = Fmadd(a5, b1, c51);
            var a6 = Vector512.Create(pa[6]); c60 = Fmadd(a6, b0, c60); c61 = Fmadd(a6, b1, c61);
            var a7 = Vector512.Create(pa[7]); c70 = Fmadd(a7, b0, c70); c71 = Fmadd(a7, b1, c71);
            pa += aStep; pb += 32;
        }
        Store8x32(c, ldc, beta, rows, cols, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71);
    }

    /// <summary>
    /// 8×32 block of C with A read in place: eight rows of a row-major A, <paramref name="lda"/> apart, instead of a
    /// packed panel. Packing A costs a strided pass over it per K slice, which is a third of the work when C has few
    /// columns (the 128-wide projections of an attention block); the eight rows stream through L1 just as well.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe void Kernel512DirectA(int kc, float* a, int lda, float* pb, float* c, int ldc, float beta, int cols)
    {
        float* a0 = a, a1 = a + lda, a2 = a1 + lda, a3 = a2 + lda, a4 = a3 + lda, a5 = a4 + lda, a6 = a5 + lda, a7 = a6 + lda;
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default,
            c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(pb);
            var b1 = Vector512.Load(pb + 16);
            var x0 = Vector512.Create(a0[p]); c00 = Fmadd(x0, b0, c00); c01 = Fmadd(x0, b1, c01);
            var x1 = Vector512.Create(a1[p]); c10 = Fmadd(x1, b0, c10); c11 = Fmadd(x1, b1, c11);
            var x2 = Vector512.Create(a2[p]); c20 = Fmadd(x2, b0, c20); c21 = Fmadd(x2, b1, c21);
            var x3 = Vector512.Create(a3[p]); c30 = Fmadd(x3, b0, c30); c31 = Fmadd(x3, b1, c31);
            var x4 = Vector512.Create(a4[p]); c40 = Fmadd(x4, b0, c40); c41 = Fmadd(x4, b1, c41);
            var x5 = Vector512.Create(a5[p]); c50 = Fmadd(x5, b0, c50); c51 = Fmadd(x5, b1, c51);
            var x6 = Vector512.Create(a6[p]); c60 = Fmadd(x6, b0, c60); c61 = Fmadd(x6, b1, c61);
            var x7 = Vector512.Create(a7[p]); c70 = Fmadd(x7, b0, c70); c71 = Fmadd(x7, b1, c71);
            pb += 32;
        }
        Store8x32(c, ldc, beta, 8, cols, c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71);
    }

    /// <summary>Writes an 8×32 block (rows × cols of it inside C), with beta.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Store8x32(float* c, int ldc, float beta, int rows, int cols,
        Vector512<float> c00, Vector512<float> c01, Vector512<float> c10, Vector512<float> c11, Vector512<float> c20, Vector512<float> c21, Vector512<float> c30, Vector512<float> c31,
        Vector512<float> c40, Vector512<float> c41, Vector512<float> c50, Vector512<float> c51, Vector512<float> c60, Vector512<float> c61, Vector512<float> c70, Vector512<float> c71)
    {
        if (rows == 8 && cols == 32)
        {
            Store512(c, beta, c00, c01); Store512(c + ldc, beta, c10, c11); Store512(c + 2 * ldc, beta, c20, c21); Store512(c + 3 * ldc, beta, c30, c31);
            Store512(c + 4 * ldc, beta, c40, c41); Store512(c + 5 * ldc, beta, c50, c51); Store512(c + 6 * ldc, beta, c60, c61); Store512(c + 7 * ldc, beta, c70, c71);
            return;
        }
        float* tmp = stackalloc float[8 * 32];
        c00.Store(tmp); c01.Store(tmp + 16); c10.Store(tmp + 32); c11.Store(tmp + 48); c20.Store(tmp + 64); c21.Store(tmp + 80); c30.Store(tmp + 96); c31.Store(tmp + 112);
        c40.Store(tmp + 128); c41.Store(tmp + 144); c50.Store(tmp + 160); c51.Store(tmp + 176); c60.Store(tmp + 192); c61.Store(tmp + 208); c70.Store(tmp + 224); c71.Store(tmp + 240);
        StoreEdge(tmp, 32, c, ldc, beta, rows, cols);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Store512(float* c, float beta, Vector512<float> v0, Vector512<float> v1)
    {
        if (beta == 0f) { v0.Store(c); v1.Store(c + 16); return; }
        var vb = Vector512.Create(beta);
        Fmadd(vb, Vector512.Load(c), v0).Store(c);
        Fmadd(vb, Vector512.Load(c + 16), v1).Store(c + 16);
    }

    static unsafe void StoreEdge(float* tmp, int nr, float* c, int ldc, float beta, int rows, int cols)
    {
        for (int r = 0; r < rows; r++)
        {
            float* cr = c + (long)r * ldc;
            float* tr = tmp + r * nr;
            if (beta == 0f) for (int q = 0; q < cols; q++) cr[q] = tr[q];
            else for (int q = 0; q < cols; q++) cr[q] = tr[q] + beta * cr[q];
        }
    }

    /// <summary>Hardware without 256-bit vectors: row-by-row multiply-adds through TensorPrimitives (which use Vector128 or scalar code).</summary>
    static unsafe void Portable(bool transA, bool transB, int m, int n, int k, float alpha, float* a, int lda, float* b, int ldb, float beta, float* c, int ldc)
    {
        float[]? bt = null;
        if (transB)
        {
            bt = new float[(long)k * n];
            for (int p = 0; p < k; p++) for (int q = 0; q < n; q++) bt[(long)p * n + q] = b[(long)q * ldb + p];
        }
        for (int i = 0; i < m; i++)
        {
            var row = new Span<float>(c + (long)i * ldc, n);
            if (beta == 0f) row.Clear(); else if (beta != 1f) TensorPrimitives.Multiply(row, beta, row);
            for (int p = 0; p < k; p++)
            {
                float av = alpha * (transA ? a[(long)p * lda + i] : a[(long)i * lda + p]);
                if (av == 0f) continue;
                ReadOnlySpan<float> brow = bt is null ? new ReadOnlySpan<float>(b + (long)p * ldb, n) : bt.AsSpan((int)((long)p * n), n);
                TensorPrimitives.MultiplyAdd(brow, av, row, row);
            }
        }
    }
}
