using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace ModelCompression.Native.Kernels;

/// <summary>
/// The register-blocked micro-kernels: an MR×NR block of C held in vector registers and updated with fused
/// multiply-adds (8×32 with Vector512, 6×16 with Vector256), their stores with beta and at the edges of C, and the
/// portable row-by-row product for hardware without 256-bit vectors.
/// </summary>
public static partial class Gemm
{
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
