using System.Numerics.Tensors;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Training;

/// <summary>
/// BatchNormalization. Training: normalizes with the batch's mean and (biased) variance per channel and moves the
/// running mean and variance (inputs 3 and 4, updated in place) by momentum, as ONNX defines it. Inference: uses
/// the running statistics. The running statistics are written back with the other initializers, so the exported
/// node is an ordinary inference BatchNormalization.
/// </summary>
internal sealed class BatchNormKernel : TrainOp
{
    readonly float epsilon, momentum;
    float[]? xhat, invStd;
    bool usedBatchStats;

    public BatchNormKernel(NodeProto node) : base(node)
    {
        epsilon = Float("epsilon", 1e-5f);
        momentum = Float("momentum", 0.9f);
    }

    public override bool InputDifferentiable(int index) => index <= 2;

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = FloatInput(inputs, 0);
        var scale = FloatInput(inputs, 1).Data; var bias = FloatInput(inputs, 2).Data;
        var mean = FloatInput(inputs, 3).Data; var variance = FloatInput(inputs, 4).Data;
        if (x.Rank < 2) throw Error("TrainingShapeMismatch", $"input {ShapeText(x.Shape)} has no channel dimension.");
        int n = x.Shape[0], c = x.Shape[1], size = x.Length / Math.Max(1, n * c);
        var yt = NewTensor(x.Shape);
        var y = yt.Data;
        usedBatchStats = ctx.Training;
        invStd = new float[c];
        if (ctx.Training)
        {
            xhat = Arena.Rent(x.Length);
            int count = n * size;
            for (int ch = 0; ch < c; ch++)
            {
                double s = 0, s2 = 0;
                for (int b = 0; b < n; b++)
                {
                    var span = x.Data.AsSpan((b * c + ch) * size, size);
                    s += TensorPrimitives.Sum(span);
                }
                double mu = s / count;
                for (int b = 0; b < n; b++)
                    foreach (float v in x.Data.AsSpan((b * c + ch) * size, size)) s2 += (v - mu) * (v - mu);
                double var = s2 / count;
                float inv = (float)(1 / Math.Sqrt(var + epsilon));
                invStd[ch] = inv;
                for (int b = 0; b < n; b++)
                {
                    int o = (b * c + ch) * size;
                    for (int i = 0; i < size; i++)
                    {
                        float h = (float)((x.Data[o + i] - mu) * inv);
                        xhat[o + i] = h;
                        y[o + i] = h * scale[ch] + bias[ch];
                    }
                }
                mean[ch] = (float)(momentum * mean[ch] + (1 - momentum) * mu);
                variance[ch] = (float)(momentum * variance[ch] + (1 - momentum) * var);
            }
        }
        else
        {
            xhat = null;
            for (int ch = 0; ch < c; ch++)
            {
                float inv = 1f / MathF.Sqrt(variance[ch] + epsilon);
                invStd[ch] = inv;
                float a = scale[ch] * inv, b0 = bias[ch] - mean[ch] * a;
                for (int b = 0; b < n; b++)
                {
                    var src = x.Data.AsSpan((b * c + ch) * size, size);
                    var dst = y.AsSpan((b * c + ch) * size, size);
                    TensorPrimitives.Multiply(src, a, dst);
                    TensorPrimitives.Add(dst, b0, dst);
                }
            }
        }
        return [yt];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        var x = inputs[0]!;
        var scale = inputs[1]!.Data;
        int n = x.Shape[0], c = x.Shape[1], size = x.Length / Math.Max(1, n * c);
        var dx = need[0] ? Arena.Rent(x.Length) : null;
        var dscale = new float[c]; var dbias = new float[c];
        for (int ch = 0; ch < c; ch++)
        {
            double sg = 0, sgh = 0;
            for (int b = 0; b < n; b++)
            {
                int o = (b * c + ch) * size;
                for (int i = 0; i < size; i++)
                {
                    float g = dy.Data[o + i];
                    float h = usedBatchStats ? xhat![o + i] : (x.Data[o + i] - inputs[3]!.Data[ch]) * invStd![ch];
                    sg += g; sgh += g * h;
                }
            }
            dscale[ch] = (float)sgh; dbias[ch] = (float)sg;
            if (dx is null) continue;
            float k = scale[ch] * invStd![ch];
            int count = n * size;
            for (int b = 0; b < n; b++)
            {
                int o = (b * c + ch) * size;
                for (int i = 0; i < size; i++)
                {
                    if (usedBatchStats)
                        dx[o + i] = (float)(k * (dy.Data[o + i] - sg / count - xhat![o + i] * sgh / count));
                    else dx[o + i] = k * dy.Data[o + i];
                }
            }
        }
        if (dx is not null) grads[0] = Tensor.Float(x.Shape, dx);
        if (need[1]) grads[1] = Tensor.Float(inputs[1]!.Shape, dscale);
        if (need[2]) grads[2] = Tensor.Float(inputs[2]!.Shape, dbias);
    }
}

/// <summary>
/// LayerNormalization over the trailing dimensions from axis (default -1), with scale and optional bias. Rows are
/// independent, so both passes run rows in parallel; the scale and bias gradients are summed per fixed piece of rows
/// and then in order, so they do not depend on the thread count.
/// </summary>
internal sealed class LayerNormKernel : TrainOp
{
    readonly float epsilon;
    readonly long axisAttr;
    float[]? xhat, invStd;

    public LayerNormKernel(NodeProto node) : base(node)
    {
        epsilon = Float("epsilon", 1e-5f);
        axisAttr = Int("axis", -1);
        if (Int("stash_type", 1) != 1) throw Unsupported("stash_type other than float");
    }

    (int Outer, int Inner) Layout(int[] shape)
    {
        int axis = Axis(axisAttr, shape.Length);
        int inner = 1; for (int i = axis; i < shape.Length; i++) inner *= shape[i];
        return (Tensor.Count(shape) / Math.Max(1, inner), inner);
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = FloatInput(inputs, 0);
        var scale = FloatInput(inputs, 1);
        var bias = inputs.Length > 2 ? inputs[2] : null;
        var (outer, inner) = Layout(x.Shape);
        if (scale.Length != inner) throw Unsupported($"a scale of shape {ShapeText(scale.Shape)} for normalized size {inner}");
        var y = NewTensor(x.Shape);
        var h = xhat = Arena.Rent(x.Length);
        var inv = invStd = Arena.Rent(outer);
        Parallelism.For(outer, Math.Max(1, Broadcast.Grain / Math.Max(1, inner)), (o0, o1) =>
        {
            for (int o = o0; o < o1; o++)
            {
                var src = x.Data.AsSpan(o * inner, inner);
                float mu = TensorPrimitives.Sum(src) / inner;
                var hs = h.AsSpan(o * inner, inner);
                TensorPrimitives.Subtract(src, mu, hs);
                float var = TensorPrimitives.SumOfSquares(hs) / inner;
                float r = 1f / MathF.Sqrt(var + epsilon);
                inv[o] = r;
                TensorPrimitives.Multiply(hs, r, hs);
                var dst = y.Data.AsSpan(o * inner, inner);
                TensorPrimitives.Multiply(hs, scale.Data, dst);
                if (bias is not null) TensorPrimitives.Add(dst, bias.Data, dst);
            }
        });
        return [y];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        var x = inputs[0]!; var scale = inputs[1]!;
        var (outer, inner) = Layout(x.Shape);
        var dx = need[0] ? NewTensor(x.Shape) : null;
        var h = xhat!; var inv = invStd!;
        int pieces = Math.Clamp(x.Length / Broadcast.Grain, 1, 16);
        var partial = System.Buffers.ArrayPool<float>.Shared.Rent(pieces * 2 * inner);   // per piece: dscale, then dbias
        partial.AsSpan(0, pieces * 2 * inner).Clear();
        Parallelism.Each(0, pieces, p =>
        {
            var dscale = partial.AsSpan(p * 2 * inner, inner);
            var dbias = partial.AsSpan((p * 2 + 1) * inner, inner);
            var rented = System.Buffers.ArrayPool<float>.Shared.Rent(inner);
            var dh = rented.AsSpan(0, inner);
            for (int o = (int)((long)outer * p / pieces), end = (int)((long)outer * (p + 1) / pieces); o < end; o++)
            {
                var g = dy.Data.AsSpan(o * inner, inner);
                var hs = h.AsSpan(o * inner, inner);
                TensorPrimitives.Add(dbias, g, dbias);
                TensorPrimitives.MultiplyAdd(g, hs, dscale, dscale);
                if (dx is null) continue;
                // dx = invStd · (dh − mean(dh) − h·mean(dh·h)), dh = g·scale
                TensorPrimitives.Multiply(g, scale.Data, dh);
                float mean = TensorPrimitives.Sum(dh) / inner;
                float meanH = TensorPrimitives.Dot(dh, hs) / inner;
                var d = dx.Data.AsSpan(o * inner, inner);
                TensorPrimitives.Subtract(dh, mean, d);
                TensorPrimitives.MultiplyAdd(hs, -meanH, d, d);
                TensorPrimitives.Multiply(d, inv[o], d);
            }
            System.Buffers.ArrayPool<float>.Shared.Return(rented);
        });
        if (dx is not null) grads[0] = dx;
        bool wantScale = need[1], wantBias = inputs.Length > 2 && inputs[2] is not null && need[2];
        if (wantScale || wantBias)
        {
            var ds = NewZeroed(scale.Shape);
            var dbs = wantBias ? NewZeroed(inputs[2]!.Shape) : null;
            for (int p = 0; p < pieces; p++)
            {
                TensorPrimitives.Add(ds.Data, partial.AsSpan(p * 2 * inner, inner), ds.Data);
                if (dbs is not null) TensorPrimitives.Add(dbs.Data, partial.AsSpan((p * 2 + 1) * inner, inner), dbs.Data);
            }
            if (wantScale) grads[1] = ds;
            if (dbs is not null) grads[2] = dbs;
        }
        System.Buffers.ArrayPool<float>.Shared.Return(partial);
    }
}
