using System.Numerics.Tensors;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Training;

/// <summary>Add, Sub, Mul, Div with NumPy broadcasting (float), and the same on int64 for shape arithmetic.</summary>
internal sealed class BinaryOpKernel : TrainOp
{
    readonly Broadcast.BinaryOp op;
    public BinaryOpKernel(NodeProto node, Broadcast.BinaryOp op) : base(node) { this.op = op; }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var a = Required(inputs, 0);
        var b = Required(inputs, 1);
        var shape = Broadcast.Shape(a.Shape, b.Shape, Name);
        if (a.IsInt && b.IsInt) return [IntOp(a, b, shape)];
        var y = NewTensor(shape);
        Broadcast.Apply(op, a.FloatValues(), a.Shape, b.FloatValues(), b.Shape, shape, y.Data);
        return [y];
    }

    Tensor IntOp(Tensor a, Tensor b, int[] shape)
    {
        int n = Tensor.Count(shape);
        var r = new long[n];
        var sa = Broadcast.Strides(a.Shape, shape);
        var sb = Broadcast.Strides(b.Shape, shape);
        var idx = new int[shape.Length];
        for (int i = 0; i < n; i++)
        {
            int ia = 0, ib = 0;
            for (int d = 0; d < shape.Length; d++) { ia += idx[d] * sa[d]; ib += idx[d] * sb[d]; }
            long x = a.Ints![ia], y = b.Ints![ib];
            r[i] = op switch { Broadcast.BinaryOp.Add => x + y, Broadcast.BinaryOp.Sub => x - y, Broadcast.BinaryOp.Mul => x * y, _ => x / y };
            for (int d = shape.Length - 1; d >= 0; d--) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
        }
        return Tensor.Int64(shape, r);
    }

    /// <summary>The gradient <paramref name="g"/> (of the output's shape) summed back to <paramref name="x"/>'s shape; passed through when no dimension was broadcast.</summary>
    Tensor SumTo(Tensor g, Tensor x)
    {
        if (g.Length == x.Length) return g.Reshaped(x.Shape);
        var r = NewTensor(x.Shape);
        Broadcast.Reduce(g.Data, g.Shape, x.Shape, r.Data);
        return r;
    }

    /// <summary>dy (op) v, broadcast to the output's shape, then summed back to <paramref name="x"/>'s shape.</summary>
    Tensor Through(Broadcast.BinaryOp with, Tensor dy, float[] v, int[] vShape, Tensor x)
    {
        var t = NewTensor(dy.Shape);
        Broadcast.Apply(with, dy.Data, dy.Shape, v, vShape, dy.Shape, t.Data);
        if (t.Length == x.Length) return t.Reshaped(x.Shape);
        var r = SumTo(t, x);
        Arena.Return(t.Data);
        return r;
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        var a = inputs[0]!; var b = inputs[1]!;
        switch (op)
        {
            case Broadcast.BinaryOp.Add:
                if (need[0]) grads[0] = SumTo(dy, a);
                if (need[1]) grads[1] = SumTo(dy, b);
                break;
            case Broadcast.BinaryOp.Sub:
                if (need[0]) grads[0] = SumTo(dy, a);
                if (need[1])
                {
                    var g = NewTensor(b.Shape);
                    Broadcast.Reduce(dy.Data, dy.Shape, b.Shape, g.Data);
                    TensorPrimitives.Negate(g.Data, g.Data);
                    grads[1] = g;
                }
                break;
            case Broadcast.BinaryOp.Mul:
                if (need[0]) grads[0] = Through(Broadcast.BinaryOp.Mul, dy, b.FloatValues(), b.Shape, a);
                if (need[1]) grads[1] = Through(Broadcast.BinaryOp.Mul, dy, a.FloatValues(), a.Shape, b);
                break;
            default:
                if (need[0]) grads[0] = Through(Broadcast.BinaryOp.Div, dy, b.FloatValues(), b.Shape, a);
                if (need[1])
                {
                    // d(a/b)/db = -y/b
                    var t = NewTensor(dy.Shape);
                    TensorPrimitives.Multiply(dy.Data, outputs[0].Data, t.Data);
                    TensorPrimitives.Negate(t.Data, t.Data);
                    grads[1] = Through(Broadcast.BinaryOp.Div, t, b.FloatValues(), b.Shape, b);
                    if (!ReferenceEquals(grads[1]!.Data, t.Data)) Arena.Return(t.Data);
                }
                break;
        }
    }
}

internal enum UnaryKind { Relu, LeakyRelu, Sigmoid, Tanh, Erf, Gelu, GeluTanh, Neg, Exp, Sqrt }

/// <summary>Elementwise activations and functions of one input; large tensors in parallel pieces.</summary>
internal sealed class UnaryOpKernel : TrainOp
{
    readonly UnaryKind kind;
    readonly float alpha;

    public UnaryOpKernel(NodeProto node, UnaryKind kind) : base(node)
    {
        this.kind = kind;
        alpha = Float("alpha", 0.01f);
        if (kind == UnaryKind.Gelu)
        {
            string approx = String("approximate") ?? "none";
            if (approx == "tanh") this.kind = UnaryKind.GeluTanh;
            else if (approx != "none") throw Unsupported($"approximate='{approx}'");
        }
    }

    const float Sqrt2OverPi = 0.7978845608f;
    const float GeluC = 0.044715f;

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var xt = FloatInput(inputs, 0);
        var x = xt.Data;
        var yt = NewTensor(xt.Shape);
        var y = yt.Data;
        Parallelism.For(x.Length, Broadcast.Grain, (s, e) =>
        {
            var xs = x.AsSpan(s, e - s); var ys = y.AsSpan(s, e - s);
            switch (kind)
            {
                case UnaryKind.Relu: TensorPrimitives.Max(xs, 0f, ys); break;
                case UnaryKind.LeakyRelu: for (int i = 0; i < xs.Length; i++) ys[i] = xs[i] >= 0 ? xs[i] : alpha * xs[i]; break;
                case UnaryKind.Sigmoid: TensorPrimitives.Sigmoid(xs, ys); break;
                case UnaryKind.Tanh: TensorPrimitives.Tanh(xs, ys); break;
                case UnaryKind.Neg: TensorPrimitives.Negate(xs, ys); break;
                case UnaryKind.Exp: TensorPrimitives.Exp(xs, ys); break;
                case UnaryKind.Sqrt: TensorPrimitives.Sqrt(xs, ys); break;
                case UnaryKind.Erf: Activations.Erf(xs, ys); break;
                case UnaryKind.Gelu: Activations.Gelu(xs, ys); break;
                case UnaryKind.GeluTanh:
                    for (int i = 0; i < xs.Length; i++) { float v = xs[i]; ys[i] = 0.5f * v * (1 + MathF.Tanh(Sqrt2OverPi * (v + GeluC * v * v * v))); }
                    break;
            }
        });
        return [yt];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var x = inputs[0]!.Data; var y = outputs[0].Data; var g = dy.Data;
        var dxt = NewTensor(inputs[0]!.Shape);
        var dx = dxt.Data;
        Parallelism.For(x.Length, Broadcast.Grain, (s, e) =>
        {
            var xs = x.AsSpan(s, e - s); var ys = y.AsSpan(s, e - s); var gs = g.AsSpan(s, e - s); var d = dx.AsSpan(s, e - s);
            switch (kind)
            {
                case UnaryKind.Relu: for (int i = 0; i < xs.Length; i++) d[i] = xs[i] > 0 ? gs[i] : 0f; break;
                case UnaryKind.LeakyRelu: for (int i = 0; i < xs.Length; i++) d[i] = xs[i] >= 0 ? gs[i] : alpha * gs[i]; break;
                case UnaryKind.Sigmoid: for (int i = 0; i < xs.Length; i++) d[i] = gs[i] * ys[i] * (1 - ys[i]); break;
                case UnaryKind.Tanh: for (int i = 0; i < xs.Length; i++) d[i] = gs[i] * (1 - ys[i] * ys[i]); break;
                case UnaryKind.Neg: TensorPrimitives.Negate(gs, d); break;
                case UnaryKind.Exp: TensorPrimitives.Multiply(gs, ys, d); break;
                case UnaryKind.Sqrt: for (int i = 0; i < xs.Length; i++) d[i] = gs[i] * 0.5f / ys[i]; break;
                case UnaryKind.Erf: Activations.ErfBackward(xs, gs, d); break;
                case UnaryKind.Gelu: Activations.GeluBackward(xs, gs, d); break;
                case UnaryKind.GeluTanh:
                    for (int i = 0; i < xs.Length; i++)
                    {
                        float v = xs[i];
                        float t = MathF.Tanh(Sqrt2OverPi * (v + GeluC * v * v * v));
                        d[i] = gs[i] * (0.5f * (1 + t) + 0.5f * v * (1 - t * t) * Sqrt2OverPi * (1 + 3 * GeluC * v * v));
                    }
                    break;
            }
        });
        grads[0] = dxt;
    }
}

/// <summary>Softmax and LogSoftmax along one axis (opset 13+), or over the flattened trailing block (before opset 13).</summary>
internal sealed class SoftmaxKernel : TrainOp
{
    readonly bool log;
    readonly long axisAttr;
    readonly bool coerce2D;

    public SoftmaxKernel(NodeProto node, bool log, int opset) : base(node)
    {
        this.log = log;
        coerce2D = opset < 13;
        axisAttr = Int("axis", coerce2D ? 1 : -1);
    }

    (int Outer, int Len, int Inner) Layout(int[] shape)
    {
        int axis = Axis(axisAttr, shape.Length);
        if (axis < 0 || axis >= shape.Length) throw Error("TrainingAxisInvalid", $"axis {axisAttr} is out of range for shape {ShapeText(shape)}.");
        int outer = 1; for (int i = 0; i < axis; i++) outer *= shape[i];
        if (coerce2D) return (outer, Tensor.Count(shape) / Math.Max(1, outer), 1);
        int inner = 1; for (int i = axis + 1; i < shape.Length; i++) inner *= shape[i];
        return (outer, shape[axis], inner);
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = FloatInput(inputs, 0);
        var (outer, len, inner) = Layout(x.Shape);
        var yt = NewTensor(x.Shape);
        var y = yt.Data;
        if (inner == 1)
        {
            // rows along the last axis (attention scores, logits): one TensorPrimitives pass per row, rows in parallel
            Parallelism.For(outer, Math.Max(1, Broadcast.Grain / Math.Max(1, len)), (o0, o1) =>
            {
                for (int o = o0; o < o1; o++)
                {
                    var src = x.Data.AsSpan(o * len, len); var dst = y.AsSpan(o * len, len);
                    if (log) Softmax.LogRow(src, dst);
                    else Softmax.Row(src, dst);
                }
            });
            return [yt];
        }
        var buf = new float[len];
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++)
            {
                int b0 = o * len * inner + i;
                for (int k = 0; k < len; k++) buf[k] = x.Data[b0 + k * inner];
                if (log) Softmax.LogRow(buf, buf);
                else Softmax.Row(buf, buf);
                for (int k = 0; k < len; k++) y[b0 + k * inner] = buf[k];
            }
        return [yt];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var (outer, len, inner) = Layout(dy.Shape);
        var y = outputs[0].Data; var g = dy.Data;
        var dxt = NewTensor(dy.Shape);
        var dx = dxt.Data;
        if (inner == 1)
        {
            Parallelism.For(outer, Math.Max(1, Broadcast.Grain / Math.Max(1, len)), (o0, o1) =>
            {
                for (int o = o0; o < o1; o++)
                {
                    var ys = y.AsSpan(o * len, len); var gs = g.AsSpan(o * len, len); var d = dx.AsSpan(o * len, len);
                    if (log)
                    {
                        // dx = g - softmax · sum(g)
                        float s = TensorPrimitives.Sum(gs);
                        TensorPrimitives.Exp(ys, d);
                        TensorPrimitives.Multiply(d, -s, d);
                        TensorPrimitives.Add(d, gs, d);
                    }
                    else
                    {
                        // dx = y · (g - sum(g·y))
                        float s = TensorPrimitives.Dot(gs, ys);
                        TensorPrimitives.Subtract(gs, s, d);
                        TensorPrimitives.Multiply(d, ys, d);
                    }
                }
            });
            grads[0] = dxt;
            return;
        }
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++)
            {
                int b0 = o * len * inner + i;
                double s = 0;
                if (log)
                {
                    for (int k = 0; k < len; k++) s += g[b0 + k * inner];
                    for (int k = 0; k < len; k++) { int j = b0 + k * inner; dx[j] = (float)(g[j] - Math.Exp(y[j]) * s); }
                }
                else
                {
                    for (int k = 0; k < len; k++) { int j = b0 + k * inner; s += g[j] * y[j]; }
                    for (int k = 0; k < len; k++) { int j = b0 + k * inner; dx[j] = (float)(y[j] * (g[j] - s)); }
                }
            }
        grads[0] = dxt;
    }
}

/// <summary>Dropout: scaled random mask while training (seeded by the trainer), identity otherwise.</summary>
internal sealed class DropoutKernel : TrainOp
{
    readonly float ratioAttr;
    float[]? mask;

    public DropoutKernel(NodeProto node) : base(node) { ratioAttr = Float("ratio", 0.5f); }

    public override bool InputDifferentiable(int index) => index == 0;

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = FloatInput(inputs, 0);
        float ratio = inputs.Length > 1 && inputs[1] is { } r ? r.FloatValues()[0] : ratioAttr;
        // opset 12+: an explicit training_mode input that is false makes the node an identity, as in ONNX Runtime
        bool training = ctx.Training && !(inputs.Length > 2 && inputs[2] is { } tm && tm.FloatValues()[0] == 0f);
        var maskOut = NewTensor(x.Shape);
        if (!training || ratio <= 0f)
        {
            mask = null;
            Array.Fill(maskOut.Data, 1f);
            return [x, maskOut];
        }
        if (ratio >= 1f) throw Error("TrainingDropoutRatioInvalid", $"ratio {ratio} must be below 1.");
        float scale = 1f / (1f - ratio);
        mask = Arena.Rent(x.Length);
        for (int i = 0; i < mask.Length; i++) { bool keep = ctx.Rng.NextSingle() >= ratio; mask[i] = keep ? scale : 0f; maskOut.Data[i] = keep ? 1f : 0f; }
        var y = NewTensor(x.Shape);
        TensorPrimitives.Multiply(x.Data, mask, y.Data);
        return [y, maskOut];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        if (mask is null) { grads[0] = dy; return; }
        var dx = NewTensor(dy.Shape);
        TensorPrimitives.Multiply(dy.Data, mask, dx.Data);
        grads[0] = dx;
    }
}
