using System.Numerics.Tensors;
using ModelCompression.Native.Kernels;

namespace ModelCompression.Native.Training;

/// <summary>NumPy-style broadcasting for the elementwise ops, and its reverse (summing a gradient back to an input's shape).</summary>
internal static class Broadcast
{
    public enum BinaryOp { Add, Sub, Mul, Div }

    /// <summary>Elements per parallel piece of an elementwise loop: below this, threads cost more than they save.</summary>
    internal const int Grain = 1 << 15;

    public static int[] Shape(int[] a, int[] b, string node)
    {
        int rank = Math.Max(a.Length, b.Length);
        var r = new int[rank];
        for (int i = 0; i < rank; i++)
        {
            int da = i - (rank - a.Length) >= 0 ? a[i - (rank - a.Length)] : 1;
            int db = i - (rank - b.Length) >= 0 ? b[i - (rank - b.Length)] : 1;
            if (da != db && da != 1 && db != 1)
                throw new EngineException("TrainingShapeMismatch", EngineErrorKind.InvalidData,
                    $"Node '{node}': shapes [{string.Join(",", a)}] and [{string.Join(",", b)}] do not broadcast.");
            r[i] = da == 1 ? db : da;
        }
        return r;
    }

    /// <summary>Strides of <paramref name="shape"/> aligned to the (longer) output shape; 0 on broadcast dimensions.</summary>
    public static int[] Strides(int[] shape, int[] outShape)
    {
        var s = new int[outShape.Length];
        int stride = 1;
        for (int i = outShape.Length - 1; i >= 0; i--)
        {
            int j = i - (outShape.Length - shape.Length);
            int d = j >= 0 ? shape[j] : 1;
            s[i] = d == 1 ? 0 : stride;
            stride *= d;
        }
        return s;
    }

    static void Kernel(BinaryOp op, ReadOnlySpan<float> x, ReadOnlySpan<float> y, Span<float> d)
    {
        switch (op)
        {
            case BinaryOp.Add: TensorPrimitives.Add(x, y, d); break;
            case BinaryOp.Sub: TensorPrimitives.Subtract(x, y, d); break;
            case BinaryOp.Mul: TensorPrimitives.Multiply(x, y, d); break;
            default: TensorPrimitives.Divide(x, y, d); break;
        }
    }

    static void KernelScalarRight(BinaryOp op, ReadOnlySpan<float> x, float y, Span<float> d)
    {
        switch (op)
        {
            case BinaryOp.Add: TensorPrimitives.Add(x, y, d); break;
            case BinaryOp.Sub: TensorPrimitives.Subtract(x, y, d); break;
            case BinaryOp.Mul: TensorPrimitives.Multiply(x, y, d); break;
            default: TensorPrimitives.Divide(x, y, d); break;
        }
    }

    static void KernelScalarLeft(BinaryOp op, float x, ReadOnlySpan<float> y, Span<float> d)
    {
        switch (op)
        {
            case BinaryOp.Add: TensorPrimitives.Add(y, x, d); break;
            case BinaryOp.Sub: TensorPrimitives.Subtract(x, y, d); break;
            case BinaryOp.Mul: TensorPrimitives.Multiply(y, x, d); break;
            default: TensorPrimitives.Divide(x, y, d); break;
        }
    }

    /// <summary>out = a (op) b with broadcasting, into <paramref name="result"/> (of the output's size); rows run through TensorPrimitives, large ones on all cores.</summary>
    public static void Apply(BinaryOp op, float[] a, int[] aShape, float[] b, int[] bShape, int[] outShape, float[] result)
    {
        int n = Tensor.Count(outShape);
        if (n == 0) return;
        if (a.Length == n && b.Length == n) { Parallelism.For(n, Grain, (s, e) => Kernel(op, a.AsSpan(s, e - s), b.AsSpan(s, e - s), result.AsSpan(s, e - s))); return; }
        if (b.Length == 1 && a.Length == n) { float v = b[0]; Parallelism.For(n, Grain, (s, e) => KernelScalarRight(op, a.AsSpan(s, e - s), v, result.AsSpan(s, e - s))); return; }
        if (a.Length == 1 && b.Length == n) { float v = a[0]; Parallelism.For(n, Grain, (s, e) => KernelScalarLeft(op, v, b.AsSpan(s, e - s), result.AsSpan(s, e - s))); return; }
        int rank = outShape.Length;
        var sa = Strides(aShape, outShape);
        var sb = Strides(bShape, outShape);
        int inner = outShape[rank - 1];
        int sai = sa[rank - 1], sbi = sb[rank - 1];
        int outer = n / inner;
        Parallelism.For(outer, Math.Max(1, Grain / inner), (o0, o1) =>
        {
            var idx = Unravel(o0, outShape);
            for (int o = o0; o < o1; o++)
            {
                int ia = 0, ib = 0;
                for (int d = 0; d < rank - 1; d++) { ia += idx[d] * sa[d]; ib += idx[d] * sb[d]; }
                var dst = result.AsSpan(o * inner, inner);
                if (sai == 1 && sbi == 1) Kernel(op, a.AsSpan(ia, inner), b.AsSpan(ib, inner), dst);
                else if (sai == 1) KernelScalarRight(op, a.AsSpan(ia, inner), b[ib], dst);
                else if (sbi == 1) KernelScalarLeft(op, a[ia], b.AsSpan(ib, inner), dst);
                else { float v = op switch { BinaryOp.Add => a[ia] + b[ib], BinaryOp.Sub => a[ia] - b[ib], BinaryOp.Mul => a[ia] * b[ib], _ => a[ia] / b[ib] }; dst.Fill(v); }
                Next(idx, outShape);
            }
        });
    }

    /// <summary>Index (over all but the last dimension) of row <paramref name="row"/> of a tensor of <paramref name="shape"/>.</summary>
    static int[] Unravel(int row, int[] shape)
    {
        var idx = new int[shape.Length];
        for (int d = shape.Length - 2; d >= 0; d--) { idx[d] = row % shape[d]; row /= shape[d]; }
        return idx;
    }

    static void Next(int[] idx, int[] shape)
    {
        for (int d = shape.Length - 2; d >= 0; d--)
        {
            if (++idx[d] < shape[d]) break;
            idx[d] = 0;
        }
    }

    /// <summary>
    /// Sums <paramref name="grad"/> (of shape <paramref name="outShape"/>) over the dimensions along which
    /// <paramref name="shape"/> was broadcast, into <paramref name="result"/> (of <paramref name="shape"/>'s size).
    /// </summary>
    public static void Reduce(float[] grad, int[] outShape, int[] shape, float[] result)
    {
        int n = result.Length;
        if (n == grad.Length) { grad.AsSpan().CopyTo(result); return; }
        if (n == 1) { result[0] = TensorPrimitives.Sum(grad); return; }
        Array.Clear(result);
        int rank = outShape.Length;
        var s = Strides(shape, outShape);
        int inner = outShape[rank - 1];
        int si = s[rank - 1];
        int outer = grad.Length / inner;
        // A bias gradient ([rows, n] summed to [n]) is the common case: pieces of rows are summed in parallel, then the
        // partial sums in order. The pieces depend on the size only, so the sum does not depend on the thread count.
        bool rowsIntoOne = si == 1 && n == inner;
        if (rowsIntoOne && outer * inner >= 2 * Grain)
        {
            int pieces = Math.Min(16, outer * inner / Grain);
            var partial = System.Buffers.ArrayPool<float>.Shared.Rent(pieces * inner);
            partial.AsSpan(0, pieces * inner).Clear();
            Parallelism.Each(0, pieces, p =>
            {
                var acc = partial.AsSpan(p * inner, inner);
                for (int o = (int)((long)outer * p / pieces), end = (int)((long)outer * (p + 1) / pieces); o < end; o++)
                    TensorPrimitives.Add(acc, grad.AsSpan(o * inner, inner), acc);
            });
            for (int p = 0; p < pieces; p++) TensorPrimitives.Add(result, partial.AsSpan(p * inner, inner), result);
            System.Buffers.ArrayPool<float>.Shared.Return(partial);
            return;
        }
        var idx = new int[rank];
        for (int o = 0; o < outer; o++)
        {
            int i = 0;
            for (int d = 0; d < rank - 1; d++) i += idx[d] * s[d];
            var src = grad.AsSpan(o * inner, inner);
            if (si == 1) TensorPrimitives.Add(result.AsSpan(i, inner), src, result.AsSpan(i, inner));
            else result[i] += TensorPrimitives.Sum(src);
            Next(idx, outShape);
        }
    }
}
