using System.Numerics.Tensors;
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
        return [Tensor.Float(shape, Broadcast.Apply(op, a.FloatValues(), a.Shape, b.FloatValues(), b.Shape, shape))];
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

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        var a = inputs[0]!; var b = inputs[1]!;
        var shape = dy.Shape;
        switch (op)
        {
            case Broadcast.BinaryOp.Add:
                if (need[0]) grads[0] = Tensor.Float(a.Shape, Broadcast.Reduce(dy.Data, shape, a.Shape));
                if (need[1]) grads[1] = Tensor.Float(b.Shape, Broadcast.Reduce(dy.Data, shape, b.Shape));
                break;
            case Broadcast.BinaryOp.Sub:
                if (need[0]) grads[0] = Tensor.Float(a.Shape, Broadcast.Reduce(dy.Data, shape, a.Shape));
                if (need[1]) { var g = Broadcast.Reduce(dy.Data, shape, b.Shape); TensorPrimitives.Negate(g, g); grads[1] = Tensor.Float(b.Shape, g); }
                break;
            case Broadcast.BinaryOp.Mul:
                if (need[0]) grads[0] = Tensor.Float(a.Shape, Broadcast.Reduce(Broadcast.Apply(Broadcast.BinaryOp.Mul, dy.Data, shape, b.Data, b.Shape, shape), shape, a.Shape));
                if (need[1]) grads[1] = Tensor.Float(b.Shape, Broadcast.Reduce(Broadcast.Apply(Broadcast.BinaryOp.Mul, dy.Data, shape, a.Data, a.Shape, shape), shape, b.Shape));
                break;
            default:
                if (need[0]) grads[0] = Tensor.Float(a.Shape, Broadcast.Reduce(Broadcast.Apply(Broadcast.BinaryOp.Div, dy.Data, shape, b.Data, b.Shape, shape), shape, a.Shape));
                if (need[1])
                {
                    // d(a/b)/db = -y/b
                    var t = Broadcast.Apply(Broadcast.BinaryOp.Mul, dy.Data, shape, outputs[0].Data, shape, shape);
                    t = Broadcast.Apply(Broadcast.BinaryOp.Div, t, shape, b.Data, b.Shape, shape);
                    TensorPrimitives.Negate(t, t);
                    grads[1] = Tensor.Float(b.Shape, Broadcast.Reduce(t, shape, b.Shape));
                }
                break;
        }
    }
}

internal enum UnaryKind { Relu, LeakyRelu, Sigmoid, Tanh, Erf, Gelu, GeluTanh, Neg, Exp, Sqrt }

/// <summary>Elementwise activations and functions of one input.</summary>
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
        var x = FloatInput(inputs, 0).Data;
        var y = new float[x.Length];
        switch (kind)
        {
            case UnaryKind.Relu: TensorPrimitives.Max(x, 0f, y); break;
            case UnaryKind.LeakyRelu: for (int i = 0; i < x.Length; i++) y[i] = x[i] >= 0 ? x[i] : alpha * x[i]; break;
            case UnaryKind.Sigmoid: TensorPrimitives.Sigmoid(x, y); break;
            case UnaryKind.Tanh: TensorPrimitives.Tanh(x, y); break;
            case UnaryKind.Neg: TensorPrimitives.Negate(x, y); break;
            case UnaryKind.Exp: TensorPrimitives.Exp(x, y); break;
            case UnaryKind.Sqrt: TensorPrimitives.Sqrt(x, y); break;
            case UnaryKind.Erf: for (int i = 0; i < x.Length; i++) y[i] = (float)MathExtra.Erf(x[i]); break;
            case UnaryKind.Gelu: for (int i = 0; i < x.Length; i++) y[i] = (float)(0.5 * x[i] * (1 + MathExtra.Erf(x[i] / Math.Sqrt(2)))); break;
            case UnaryKind.GeluTanh:
                for (int i = 0; i < x.Length; i++) { float v = x[i]; y[i] = 0.5f * v * (1 + MathF.Tanh(Sqrt2OverPi * (v + GeluC * v * v * v))); }
                break;
        }
        return [Tensor.Float(inputs[0]!.Shape, y)];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var x = inputs[0]!.Data; var y = outputs[0].Data; var g = dy.Data;
        var dx = new float[x.Length];
        switch (kind)
        {
            case UnaryKind.Relu: for (int i = 0; i < x.Length; i++) dx[i] = x[i] > 0 ? g[i] : 0f; break;
            case UnaryKind.LeakyRelu: for (int i = 0; i < x.Length; i++) dx[i] = x[i] >= 0 ? g[i] : alpha * g[i]; break;
            case UnaryKind.Sigmoid: for (int i = 0; i < x.Length; i++) dx[i] = g[i] * y[i] * (1 - y[i]); break;
            case UnaryKind.Tanh: for (int i = 0; i < x.Length; i++) dx[i] = g[i] * (1 - y[i] * y[i]); break;
            case UnaryKind.Neg: TensorPrimitives.Negate(g, dx); break;
            case UnaryKind.Exp: TensorPrimitives.Multiply(g, y, dx); break;
            case UnaryKind.Sqrt: for (int i = 0; i < x.Length; i++) dx[i] = g[i] * 0.5f / y[i]; break;
            case UnaryKind.Erf: for (int i = 0; i < x.Length; i++) dx[i] = g[i] * (float)(2 / Math.Sqrt(Math.PI) * Math.Exp(-(double)x[i] * x[i])); break;
            case UnaryKind.Gelu:
                for (int i = 0; i < x.Length; i++)
                {
                    double v = x[i];
                    dx[i] = g[i] * (float)(0.5 * (1 + MathExtra.Erf(v / Math.Sqrt(2))) + v * Math.Exp(-0.5 * v * v) / Math.Sqrt(2 * Math.PI));
                }
                break;
            case UnaryKind.GeluTanh:
                for (int i = 0; i < x.Length; i++)
                {
                    float v = x[i];
                    float t = MathF.Tanh(Sqrt2OverPi * (v + GeluC * v * v * v));
                    dx[i] = g[i] * (0.5f * (1 + t) + 0.5f * v * (1 - t * t) * Sqrt2OverPi * (1 + 3 * GeluC * v * v));
                }
                break;
        }
        grads[0] = Tensor.Float(inputs[0]!.Shape, dx);
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
        var y = new float[x.Length];
        if (inner == 1)
        {
            for (int o = 0; o < outer; o++)
            {
                var src = x.Data.AsSpan(o * len, len); var dst = y.AsSpan(o * len, len);
                if (log)
                {
                    float max = TensorPrimitives.Max(src);
                    TensorPrimitives.Subtract(src, max, dst);
                    TensorPrimitives.Exp(dst, dst);
                    float lse = MathF.Log(TensorPrimitives.Sum(dst)) + max;
                    TensorPrimitives.Subtract(src, lse, dst);
                }
                else TensorPrimitives.SoftMax(src, dst);
            }
        }
        else
        {
            var buf = new float[len];
            for (int o = 0; o < outer; o++)
                for (int i = 0; i < inner; i++)
                {
                    int b0 = o * len * inner + i;
                    for (int k = 0; k < len; k++) buf[k] = x.Data[b0 + k * inner];
                    float max = TensorPrimitives.Max(buf);
                    double sum = 0;
                    for (int k = 0; k < len; k++) sum += Math.Exp(buf[k] - max);
                    for (int k = 0; k < len; k++)
                        y[b0 + k * inner] = log ? (float)(buf[k] - max - Math.Log(sum)) : (float)(Math.Exp(buf[k] - max) / sum);
                }
        }
        return [Tensor.Float(x.Shape, y)];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var (outer, len, inner) = Layout(dy.Shape);
        var y = outputs[0].Data; var g = dy.Data;
        var dx = new float[y.Length];
        for (int o = 0; o < outer; o++)
            for (int i = 0; i < inner; i++)
            {
                int b0 = o * len * inner + i;
                double s = 0;
                if (log)
                {
                    // dx = g - softmax * sum(g)
                    for (int k = 0; k < len; k++) s += g[b0 + k * inner];
                    for (int k = 0; k < len; k++) { int j = b0 + k * inner; dx[j] = (float)(g[j] - Math.Exp(y[j]) * s); }
                }
                else
                {
                    // dx = y * (g - sum(g*y))
                    for (int k = 0; k < len; k++) { int j = b0 + k * inner; s += g[j] * y[j]; }
                    for (int k = 0; k < len; k++) { int j = b0 + k * inner; dx[j] = (float)(y[j] * (g[j] - s)); }
                }
            }
        grads[0] = Tensor.Float(dy.Shape, dx);
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
        var maskOut = new float[x.Length];
        if (!training || ratio <= 0f)
        {
            mask = null;
            Array.Fill(maskOut, 1f);
            return [x, Tensor.Float(x.Shape, maskOut)];
        }
        if (ratio >= 1f) throw Error("TrainingDropoutRatioInvalid", $"ratio {ratio} must be below 1.");
        float scale = 1f / (1f - ratio);
        mask = new float[x.Length];
        for (int i = 0; i < mask.Length; i++) { bool keep = ctx.Rng.NextSingle() >= ratio; mask[i] = keep ? scale : 0f; maskOut[i] = keep ? 1f : 0f; }
        var y = new float[x.Length];
        TensorPrimitives.Multiply(x.Data, mask, y);
        return [Tensor.Float(x.Shape, y), Tensor.Float(x.Shape, maskOut)];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        if (mask is null) { grads[0] = dy; return; }
        var dx = new float[dy.Length];
        TensorPrimitives.Multiply(dy.Data, mask, dx);
        grads[0] = Tensor.Float(dy.Shape, dx);
    }
}

internal static class MathExtra
{
    /// <summary>
    /// erf(x) in double precision from the everywhere-convergent series with positive terms
    /// erf(x) = 2/sqrt(pi) · exp(-x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1)); beyond |x| = 5.5, erfc is below 1e-14.
    /// </summary>
    public static double Erf(double x)
    {
        double ax = Math.Abs(x);
        if (ax >= 5.5) return Math.Sign(x);
        double x2 = ax * ax, term = ax, sum = ax;
        for (int n = 1; n < 400; n++)
        {
            term *= 2 * x2 / (2 * n + 1);
            sum += term;
            if (term < 1e-17 * sum) break;
        }
        double r = 2 / Math.Sqrt(Math.PI) * Math.Exp(-x2) * sum;
        return x < 0 ? -Math.Min(r, 1) : Math.Min(r, 1);
    }
}
