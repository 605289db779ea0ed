using System.Numerics.Tensors;

namespace ModelCompression.Native.Training;

/// <summary>NumPy-style broadcasting for the elementwise ops, and its reverse (summing a gradient back to an input's shape).</summary>
internal static class Broadcast
{
    public enum BinaryOp { Add, Sub, Mul, Div }

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

    /// <summary>out = a (op) b with broadcasting; the innermost dimension runs through TensorPrimitives.</summary>
    public static float[] Apply(BinaryOp op, float[] a, int[] aShape, float[] b, int[] bShape, int[] outShape)
    {
        int n = Tensor.Count(outShape);
        var result = new float[n];
        if (n == 0) return result;
        if (a.Length == n && b.Length == n) { Kernel(op, a, b, result); return result; }
        if (b.Length == 1 && a.Length == n) { KernelScalarRight(op, a, b[0], result); return result; }
        if (a.Length == 1 && b.Length == n) { KernelScalarLeft(op, a[0], b, result); return result; }
        int rank = outShape.Length;
        var sa = Strides(aShape, outShape);
        var sb = Strides(bShape, outShape);
        int inner = outShape[rank - 1];
        int sai = sa[rank - 1], sbi = sb[rank - 1];
        var idx = new int[rank];
        int outer = n / inner;
        for (int o = 0; o < outer; o++)
        {
            int ia = 0, ib = 0;
            for (int d = 0; d < rank - 1; d++) { ia += idx[d] * sa[d]; ib += idx[d] * sb[d]; }
            var dst = result.AsSpan(o * inner, inner);
            if (sai == 1 && sbi == 1) Kernel(op, a.AsSpan(ia, inner), b.AsSpan(ib, inner), dst);
            else if (sai == 1) KernelScalarRight(op, a.AsSpan(ia, inner), b[ib], dst);
            else if (sbi == 1) KernelScalarLeft(op, a[ia], b.AsSpan(ib, inner), dst);
            else { float v = op switch { BinaryOp.Add => a[ia] + b[ib], BinaryOp.Sub => a[ia] - b[ib], BinaryOp.Mul => a[ia] * b[ib], _ => a[ia] / b[ib] }; dst.Fill(v); }
            for (int d = rank - 2; d >= 0; d--)
            {
                if (++idx[d] < outShape[d]) break;
                idx[d] = 0;
            }
        }
        return result;
    }

    /// <summary>Sums <paramref name="grad"/> (of shape <paramref name="outShape"/>) over the dimensions along which <paramref name="shape"/> was broadcast.</summary>
    public static float[] Reduce(float[] grad, int[] outShape, int[] shape)
    {
        int n = Tensor.Count(shape);
        if (n == grad.Length) return (float[])grad.Clone();
        var result = new float[n];
        if (n == 1) { result[0] = TensorPrimitives.Sum(grad); return result; }
        int rank = outShape.Length;
        var s = Strides(shape, outShape);
        int inner = outShape[rank - 1];
        int si = s[rank - 1];
        var idx = new int[rank];
        int outer = grad.Length / inner;
        for (int o = 0; o < outer; o++)
        {
            int i = 0;
            for (int d = 0; d < rank - 1; d++) i += idx[d] * s[d];
            var src = grad.AsSpan(o * inner, inner);
            if (si == 1) TensorPrimitives.Add(result.AsSpan(i, inner), src, result.AsSpan(i, inner));
            else result[i] += TensorPrimitives.Sum(src);
            for (int d = rank - 2; d >= 0; d--)
            {
                if (++idx[d] < outShape[d]) break;
                idx[d] = 0;
            }
        }
        return result;
    }
}
