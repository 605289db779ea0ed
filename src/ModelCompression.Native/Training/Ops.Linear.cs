using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Training;

/// <summary>
/// MatMul: A[..., M, K] · B[K, N] (leading dimensions of A folded into M), or batched A[b..., M, K] · B[b..., K, N]
/// with equal batch dimensions. Forward and backward go through <see cref="Gemm"/>.
/// </summary>
internal sealed class MatMulKernel : TrainOp
{
    public MatMulKernel(NodeProto node) : base(node) { }

    (int Batch, int M, int K, int N, bool SharedB, int[] OutShape) Plan(int[] a, int[] b)
    {
        if (a.Length < 2 || b.Length < 2) throw Unsupported($"MatMul of ranks {a.Length} and {b.Length} (1-D operands)");
        int k = a[^1], n = b[^1];
        if (b[^2] != k) throw Error("TrainingShapeMismatch", $"inner dimensions differ: {ShapeText(a)} x {ShapeText(b)}.");
        if (b.Length == 2)
        {
            int m = Tensor.Count(a) / Math.Max(1, k);
            var outShape = (int[])a.Clone(); outShape[^1] = n;
            return (1, m, k, n, true, outShape);
        }
        if (a.Length != b.Length || !a[..^2].SequenceEqual(b[..^2]))
            throw Unsupported($"batched MatMul with broadcast batch dimensions ({ShapeText(a)} x {ShapeText(b)})");
        int batch = Tensor.Count(a[..^2]);
        var o = (int[])a.Clone(); o[^1] = n;
        return (batch, a[^2], k, n, false, o);
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var a = FloatInput(inputs, 0); var b = FloatInput(inputs, 1);
        var (batch, m, k, n, _, outShape) = Plan(a.Shape, b.Shape);
        var y = new float[Tensor.Count(outShape)];
        for (int i = 0; i < batch; i++)
            Gemm.Multiply(false, false, m, n, k, 1f, a.Data.AsSpan(i * m * k, m * k), k, b.Data.AsSpan(batch == 1 ? 0 : i * k * n, k * n), n, 0f, y.AsSpan(i * m * n, m * n), n);
        return [Tensor.Float(outShape, y)];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        var a = inputs[0]!; var b = inputs[1]!;
        var (batch, m, k, n, _, _) = Plan(a.Shape, b.Shape);
        if (need[0])
        {
            var da = new float[a.Length];
            for (int i = 0; i < batch; i++)
                Gemm.Multiply(false, true, m, k, n, 1f, dy.Data.AsSpan(i * m * n, m * n), n, b.Data.AsSpan(batch == 1 ? 0 : i * k * n, k * n), n, 0f, da.AsSpan(i * m * k, m * k), k);
            grads[0] = Tensor.Float(a.Shape, da);
        }
        if (need[1])
        {
            var db = new float[b.Length];
            for (int i = 0; i < batch; i++)
                Gemm.Multiply(true, false, k, n, m, 1f, a.Data.AsSpan(i * m * k, m * k), k, dy.Data.AsSpan(i * m * n, m * n), n, 0f, db.AsSpan(i * k * n, k * n), n);
            grads[1] = Tensor.Float(b.Shape, db);
        }
    }
}

/// <summary>Gemm: Y = alpha·op(A)·op(B) + beta·C with transA/transB and C broadcast to [M, N].</summary>
internal sealed class GemmKernel : TrainOp
{
    readonly bool transA, transB;
    readonly float alpha, beta;

    public GemmKernel(NodeProto node) : base(node)
    {
        transA = Int("transA", 0) != 0;
        transB = Int("transB", 0) != 0;
        alpha = Float("alpha", 1f);
        beta = Float("beta", 1f);
    }

    (int M, int K, int N) Dims(Tensor a, Tensor b)
    {
        if (a.Rank != 2 || b.Rank != 2) throw Error("TrainingShapeMismatch", $"Gemm needs 2-D A and B, got {ShapeText(a.Shape)} and {ShapeText(b.Shape)}.");
        int m = transA ? a.Shape[1] : a.Shape[0], k = transA ? a.Shape[0] : a.Shape[1];
        int kb = transB ? b.Shape[1] : b.Shape[0], n = transB ? b.Shape[0] : b.Shape[1];
        if (k != kb) throw Error("TrainingShapeMismatch", $"inner dimensions differ: {ShapeText(a.Shape)} x {ShapeText(b.Shape)} (transA={transA}, transB={transB}).");
        return (m, k, n);
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var a = FloatInput(inputs, 0); var b = FloatInput(inputs, 1);
        var (m, k, n) = Dims(a, b);
        int[] shape = [m, n];
        float[] y;
        float betaUsed = 0f;
        if (inputs.Length > 2 && inputs[2] is { } c && beta != 0f)
        {
            Broadcast.Shape(c.Shape, shape, Name);
            y = Broadcast.Apply(Broadcast.BinaryOp.Add, new float[1], [1], c.FloatValues(), c.Shape, shape);
            betaUsed = beta;
        }
        else y = new float[m * n];
        Gemm.Multiply(transA, transB, m, n, k, alpha, a.Data, a.Shape[1], b.Data, b.Shape[1], betaUsed, y, n);
        return [Tensor.Float(shape, y)];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        var a = inputs[0]!; var b = inputs[1]!;
        var (m, k, n) = Dims(a, b);
        int ldb = b.Shape[1], lda = a.Shape[1];
        if (need[0])
        {
            var da = new float[a.Length];
            if (!transA) Gemm.Multiply(false, !transB, m, k, n, alpha, dy.Data, n, b.Data, ldb, 0f, da, k);
            else Gemm.Multiply(transB, true, k, m, n, alpha, b.Data, ldb, dy.Data, n, 0f, da, m);
            grads[0] = Tensor.Float(a.Shape, da);
        }
        if (need[1])
        {
            var db = new float[b.Length];
            if (!transB) Gemm.Multiply(!transA, false, k, n, m, alpha, a.Data, lda, dy.Data, n, 0f, db, n);
            else Gemm.Multiply(true, transA, n, k, m, alpha, dy.Data, n, a.Data, lda, 0f, db, k);
            grads[1] = Tensor.Float(b.Shape, db);
        }
        if (inputs.Length > 2 && inputs[2] is { } c && need[2])
        {
            var dc = Broadcast.Reduce(dy.Data, dy.Shape, c.Shape);
            if (beta != 1f) System.Numerics.Tensors.TensorPrimitives.Multiply(dc, beta, dc);
            grads[2] = Tensor.Float(c.Shape, dc);
        }
    }
}
