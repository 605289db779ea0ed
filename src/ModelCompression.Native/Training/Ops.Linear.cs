using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Training;

/// <summary>
/// MatMul: A[..., M, K] · B[K, N] (leading dimensions of A folded into M, one product), or batched
/// A[b..., M, K] · B[b..., K, N] with NumPy broadcasting of the batch dimensions (attention: one product per sequence
/// and head, spread over the cores by <see cref="Gemm.MultiplyBatched"/>). Forward and backward go through <see cref="Gemm"/>.
/// With a bias (a MatMul and the Add of a 1-D bias after it, fused by <see cref="Fusions"/>), the product starts from
/// the bias rows instead of adding them in another pass, and input 2 gets the bias gradient.
/// </summary>
internal sealed class MatMulKernel : TrainOp
{
    readonly bool bias;
    public MatMulKernel(NodeProto node, bool bias = false) : base(node) { this.bias = bias; }

    /// <summary>One product per batch index; A_i at OffA[i], B_i at OffB[i]. Broadcast operands repeat an offset.</summary>
    sealed record Plan(int Batch, int M, int K, int N, int[] OutShape, int[] OffA, int[] OffB, bool ABroadcast, bool BBroadcast)
    {
        public bool Uniform(int[] off, out int stride)
        {
            stride = off.Length > 1 ? off[1] - off[0] : 0;
            for (int i = 2; i < off.Length; i++) if (off[i] - off[i - 1] != stride) return false;
            return stride >= 0;
        }
    }

    int[]? planA, planB;
    Plan? plan;

    Plan Make(int[] a, int[] b)
    {
        if (plan is not null && a.AsSpan().SequenceEqual(planA) && b.AsSpan().SequenceEqual(planB)) return plan;
        if (a.Length < 2 || b.Length < 2) throw Unsupported($"MatMul of ranks {a.Length} and {b.Length} (1-D operands)");
        int k = a[^1], n = b[^1];
        if (b[^2] != k) throw Error("TrainingShapeMismatch", $"inner dimensions differ: {ShapeText(a)} x {ShapeText(b)}.");
        Plan p;
        if (b.Length == 2)
        {
            int m = Tensor.Count(a) / Math.Max(1, k);
            var outShape = (int[])a.Clone(); outShape[^1] = n;
            p = new Plan(1, m, k, n, outShape, [0], [0], false, false);
        }
        else
        {
            var batchShape = Broadcast.Shape(a[..^2], b[..^2], Name);
            int batch = Tensor.Count(batchShape), rows = a[^2];
            var sa = Broadcast.Strides(a[..^2], batchShape);
            var sb = Broadcast.Strides(b[..^2], batchShape);
            var offA = new int[batch]; var offB = new int[batch];
            var idx = new int[batchShape.Length];
            for (int i = 0; i < batch; i++)
            {
                int ia = 0, ib = 0;
                for (int d = 0; d < idx.Length; d++) { ia += idx[d] * sa[d]; ib += idx[d] * sb[d]; }
                offA[i] = ia * rows * k; offB[i] = ib * k * n;
                for (int d = idx.Length - 1; d >= 0; d--) { if (++idx[d] < batchShape[d]) break; idx[d] = 0; }
            }
            int[] outShape = [.. batchShape, rows, n];
            p = new Plan(batch, rows, k, n, outShape, offA, offB, Tensor.Count(a[..^2]) != batch, Tensor.Count(b[..^2]) != batch);
        }
        planA = (int[])a.Clone(); planB = (int[])b.Clone();
        return plan = p;
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var a = FloatInput(inputs, 0); var b = FloatInput(inputs, 1);
        var p = Make(a.Shape, b.Shape);
        var y = NewTensor(p.OutShape);
        int m = p.M, k = p.K, n = p.N;
        if (bias)
        {
            var row = FloatInput(inputs, 2).Data;
            if (p.Batch != 1 || row.Length != n) throw Error("TrainingShapeMismatch", $"a bias of {row.Length} values for {n} columns.");
            for (int i = 0; i < m; i++) row.AsSpan().CopyTo(y.Data.AsSpan(i * n, n));
            Gemm.Multiply(false, false, m, n, k, 1f, a.Data, k, b.Data, n, 1f, y.Data, n);
        }
        else if (p.Uniform(p.OffA, out int sa) && p.Uniform(p.OffB, out int sb))
            Gemm.MultiplyBatched(p.Batch, false, false, m, n, k, 1f, a.Data, sa, k, b.Data, sb, n, 0f, y.Data, m * n, n);
        else
            for (int i = 0; i < p.Batch; i++)
                Gemm.Multiply(false, false, m, n, k, 1f, a.Data.AsSpan(p.OffA[i], m * k), k, b.Data.AsSpan(p.OffB[i], k * n), n, 0f, y.Data.AsSpan(i * m * n, m * n), n);
        return [y];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        var a = inputs[0]!; var b = inputs[1]!;
        var p = Make(a.Shape, b.Shape);
        int m = p.M, k = p.K, n = p.N;
        if (need[0])
        {
            // dA_i = dY_i · B_iᵀ; a broadcast A sums the products of the batch entries that share it
            var da = NewTensor(a.Shape);
            if (!p.ABroadcast && p.Uniform(p.OffB, out int sb))
                Gemm.MultiplyBatched(p.Batch, false, true, m, k, n, 1f, dy.Data, m * n, n, b.Data, sb, n, 0f, da.Data, m * k, k);
            else
            {
                Array.Clear(da.Data);
                for (int i = 0; i < p.Batch; i++)
                    Gemm.Multiply(false, true, m, k, n, 1f, dy.Data.AsSpan(i * m * n, m * n), n, b.Data.AsSpan(p.OffB[i], k * n), n, 1f, da.Data.AsSpan(p.OffA[i], m * k), k);
            }
            grads[0] = da;
        }
        if (need[1])
        {
            // dB_i = A_iᵀ · dY_i; a 2-D B is one product over all rows of A
            var db = NewTensor(b.Shape);
            if (!p.BBroadcast && p.Uniform(p.OffA, out int sa))
                Gemm.MultiplyBatched(p.Batch, true, false, k, n, m, 1f, a.Data, sa, k, dy.Data, m * n, n, 0f, db.Data, k * n, n);
            else
            {
                Array.Clear(db.Data);
                for (int i = 0; i < p.Batch; i++)
                    Gemm.Multiply(true, false, k, n, m, 1f, a.Data.AsSpan(p.OffA[i], m * k), k, dy.Data.AsSpan(i * m * n, m * n), n, 1f, db.Data.AsSpan(p.OffB[i], k * n), n);
            }
            grads[1] = db;
        }
        if (bias && need[2])
        {
            var dbias = NewTensor(inputs[2]!.Shape);
            Broadcast.Reduce(dy.Data, [m, n], [n], dbias.Data);
            grads[2] = dbias;
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
        var y = NewTensor(shape);
        float betaUsed = 0f;
        if (inputs.Length > 2 && inputs[2] is { } c && beta != 0f)
        {
            Broadcast.Shape(c.Shape, shape, Name);
            Broadcast.Apply(Broadcast.BinaryOp.Add, [0f], [1], c.FloatValues(), c.Shape, shape, y.Data);
            betaUsed = beta;
        }
        Gemm.Multiply(transA, transB, m, n, k, alpha, a.Data, a.Shape[1], b.Data, b.Shape[1], betaUsed, y.Data, n);
        return [y];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        var a = inputs[0]!; var b = inputs[1]!;
        var (m, k, n) = Dims(a, b);
        int ldb = b.Shape[1], lda = a.Shape[1];
        if (need[0])
        {
            var da = NewTensor(a.Shape);
            if (!transA) Gemm.Multiply(false, !transB, m, k, n, alpha, dy.Data, n, b.Data, ldb, 0f, da.Data, k);
            else Gemm.Multiply(transB, true, k, m, n, alpha, b.Data, ldb, dy.Data, n, 0f, da.Data, m);
            grads[0] = da;
        }
        if (need[1])
        {
            var db = NewTensor(b.Shape);
            if (!transB) Gemm.Multiply(!transA, false, k, n, m, alpha, a.Data, lda, dy.Data, n, 0f, db.Data, n);
            else Gemm.Multiply(true, transA, n, k, m, alpha, dy.Data, n, a.Data, lda, 0f, db.Data, k);
            grads[1] = db;
        }
        if (inputs.Length > 2 && inputs[2] is { } c && need[2])
        {
            var dc = NewTensor(c.Shape);
            Broadcast.Reduce(dy.Data, dy.Shape, c.Shape, dc.Data);
            if (beta != 1f) System.Numerics.Tensors.TensorPrimitives.Multiply(dc.Data, beta, dc.Data);
            grads[2] = dc;
        }
    }
}
