using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Training;

/// <summary>Ops that only rearrange values: Identity, Flatten, Reshape, Squeeze, Unsqueeze (gradient: reshape back).</summary>
internal sealed class ReshapeLikeKernel : TrainOp
{
    readonly int opset;
    public ReshapeLikeKernel(NodeProto node, int opset) : base(node) { this.opset = opset; }

    public override bool InputDifferentiable(int index) => index == 0;

    long[] AxesOf(Tensor?[] inputs) => (opset >= 13 && inputs.Length > 1 && inputs[1] is { } t) ? t.IntValues() : Ints("axes") ?? [];

    int[] OutShape(Tensor?[] inputs)
    {
        var x = Required(inputs, 0);
        var s = x.Shape;
        switch (Node.OpType)
        {
            case "Identity": return s;
            case "Flatten":
                {
                    int axis = Axis(Int("axis", 1), s.Length);
                    int a = 1; for (int i = 0; i < axis; i++) a *= s[i];
                    return [a, x.Length / Math.Max(1, a)];
                }
            case "Reshape":
                {
                    var target = Required(inputs, 1).IntValues();
                    bool allowZero = Int("allowzero", 0) != 0;
                    var r = new int[target.Length];
                    int infer = -1; long known = 1;
                    for (int i = 0; i < r.Length; i++)
                    {
                        long d = target[i];
                        if (d == 0 && !allowZero) d = s[i];
                        if (d == -1) { if (infer >= 0) throw Error("TrainingShapeMismatch", "Reshape has two -1 dimensions."); infer = i; continue; }
                        r[i] = (int)d; known *= d;
                    }
                    if (infer >= 0) r[infer] = known == 0 ? 0 : (int)(x.Length / known);
                    if (Tensor.Count(r) != x.Length) throw Error("TrainingShapeMismatch", $"cannot reshape {ShapeText(s)} to [{string.Join(",", target)}].");
                    return r;
                }
            case "Squeeze":
                {
                    var axes = AxesOf(inputs).Select(a => Axis(a, s.Length)).ToHashSet();
                    return s.Where((d, i) => axes.Count == 0 ? d != 1 : !axes.Contains(i)).ToArray();
                }
            case "Unsqueeze":
                {
                    var axesRaw = AxesOf(inputs);
                    int rank = s.Length + axesRaw.Length;
                    var axes = axesRaw.Select(a => Axis(a, rank)).ToHashSet();
                    var r = new int[rank]; int j = 0;
                    for (int i = 0; i < rank; i++) r[i] = axes.Contains(i) ? 1 : s[j++];
                    return r;
                }
            default: throw Unsupported("this op");
        }
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx) => [Required(inputs, 0).Reshaped(OutShape(inputs))];

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (need[0]) grads[0] = dy.Reshaped(inputs[0]!.Shape);
    }
}

/// <summary>Transpose with a permutation (default: reversed dimensions); the gradient is the inverse permutation.</summary>
internal sealed class TransposeKernel : TrainOp
{
    public TransposeKernel(NodeProto node) : base(node) { }

    int[] Perm(int rank) => Ints("perm")?.Select(p => (int)p).ToArray() ?? Enumerable.Range(0, rank).Reverse().ToArray();

    internal static Tensor Permute(Tensor x, int[] perm, TensorArena arena)
    {
        int rank = x.Rank;
        var outShape = perm.Select(p => x.Shape[p]).ToArray();
        var inStrides = new int[rank];
        int st = 1;
        for (int i = rank - 1; i >= 0; i--) { inStrides[i] = st; st *= x.Shape[i]; }
        var srcStride = perm.Select(p => inStrides[p]).ToArray();
        int n = x.Length;
        if (x.IsInt)
        {
            var idx = new int[rank];
            var r = new long[n];
            for (int o = 0; o < n; o++)
            {
                int i = 0; for (int d = 0; d < rank; d++) i += idx[d] * srcStride[d];
                r[o] = x.Ints![i];
                for (int d = rank - 1; d >= 0; d--) { if (++idx[d] < outShape[d]) break; idx[d] = 0; }
            }
            return Tensor.Int64(outShape, r);
        }
        var y = arena.Rent(n);
        if (rank == 0 || n == 0) return Tensor.Float(outShape, y);
        int inner = outShape[rank - 1], innerStride = srcStride[rank - 1];
        int rows = n / inner;
        var src = x.Data;
        // rows of the output in parallel pieces; each row is a copy (inner dimension kept) or a strided gather
        Parallelism.For(rows, Math.Max(1, (1 << 14) / Math.Max(1, inner)), (r0, r1) =>
        {
            var idx = new int[rank];
            for (int d = rank - 2, r = r0; d >= 0; d--) { idx[d] = r % outShape[d]; r /= outShape[d]; }
            for (int row = r0; row < r1; row++)
            {
                int i = 0; for (int d = 0; d < rank - 1; d++) i += idx[d] * srcStride[d];
                int o = row * inner;
                if (innerStride == 1) Array.Copy(src, i, y, o, inner);
                else for (int k = 0; k < inner; k++) y[o + k] = src[i + k * innerStride];
                for (int d = rank - 2; d >= 0; d--) { if (++idx[d] < outShape[d]) break; idx[d] = 0; }
            }
        });
        return Tensor.Float(outShape, y);
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = Required(inputs, 0);
        var perm = Perm(x.Rank);
        if (perm.Length != x.Rank) throw Error("TrainingShapeMismatch", $"perm [{string.Join(",", perm)}] does not match rank {x.Rank}.");
        return [Permute(x, perm, Arena)];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var perm = Perm(dy.Rank);
        var inverse = new int[perm.Length];
        for (int i = 0; i < perm.Length; i++) inverse[perm[i]] = i;
        grads[0] = Permute(dy, inverse, Arena);
    }
}

/// <summary>Concat along an axis (float or int64); the gradient is split back.</summary>
internal sealed class ConcatKernel : TrainOp
{
    public ConcatKernel(NodeProto node) : base(node) { }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var xs = inputs.Select((t, i) => Required(inputs, i)).ToArray();
        int rank = xs[0].Rank;
        int axis = Axis(Int("axis", 0), rank);
        bool ints = xs.All(t => t.IsInt);
        var shape = (int[])xs[0].Shape.Clone();
        shape[axis] = 0;
        foreach (var t in xs)
        {
            if (t.Rank != rank || t.Shape.Where((d, i) => i != axis && d != xs[0].Shape[i]).Any())
                throw Error("TrainingShapeMismatch", $"cannot concatenate {string.Join(", ", xs.Select(v => ShapeText(v.Shape)))} on axis {axis}.");
            shape[axis] += t.Shape[axis];
        }
        int outer = 1; for (int i = 0; i < axis; i++) outer *= shape[i];
        int inner = 1; for (int i = axis + 1; i < rank; i++) inner *= shape[i];
        int rowOut = shape[axis] * inner;
        if (ints)
        {
            var r = new long[Tensor.Count(shape)];
            int off = 0;
            foreach (var t in xs)
            {
                int row = t.Shape[axis] * inner;
                for (int o = 0; o < outer; o++) Array.Copy(t.Ints!, o * row, r, o * rowOut + off, row);
                off += row;
            }
            return [Tensor.Int64(shape, r)];
        }
        var y = NewTensor(shape);
        int offset = 0;
        foreach (var t in xs)
        {
            var v = t.FloatValues();
            int row = t.Shape[axis] * inner;
            for (int o = 0; o < outer; o++) Array.Copy(v, o * row, y.Data, o * rowOut + offset, row);
            offset += row;
        }
        return [y];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        int rank = dy.Rank;
        int axis = Axis(Int("axis", 0), rank);
        int outer = 1; for (int i = 0; i < axis; i++) outer *= dy.Shape[i];
        int inner = 1; for (int i = axis + 1; i < rank; i++) inner *= dy.Shape[i];
        int rowOut = dy.Shape[axis] * inner, offset = 0;
        for (int k = 0; k < inputs.Length; k++)
        {
            var t = inputs[k]!;
            int row = t.Shape[axis] * inner;
            if (need[k])
            {
                var g = NewTensor(t.Shape);
                for (int o = 0; o < outer; o++) Array.Copy(dy.Data, o * rowOut + offset, g.Data, o * row, row);
                grads[k] = g;
            }
            offset += row;
        }
    }
}

/// <summary>Constant, Shape, Gather, Cast and friends: computed every pass, no gradient (shape arithmetic around Reshape).</summary>
internal sealed class ShapeOpKernel : TrainOp
{
    public ShapeOpKernel(NodeProto node) : base(node) { }

    public override bool Differentiable => false;
    public override bool InputDifferentiable(int index) => false;

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        switch (Node.OpType)
        {
            case "Constant": return [ConstantValue()];
            case "Shape":
                {
                    var s = Required(inputs, 0).Shape;
                    int start = (int)Int("start", 0), end = (int)Int("end", s.Length);
                    if (start < 0) start += s.Length; if (end < 0) end += s.Length;
                    start = Math.Clamp(start, 0, s.Length); end = Math.Clamp(end, start, s.Length);
                    return [Tensor.Int64([end - start], s[start..end].Select(d => (long)d).ToArray())];
                }
            case "Range":
                {
                    var start = Required(inputs, 0); var limit = Required(inputs, 1); var delta = Required(inputs, 2);
                    if (start.IsInt)
                    {
                        long s0 = start.IntValues()[0], l = limit.IntValues()[0], d = delta.IntValues()[0];
                        if (d == 0) throw Error("TrainingRangeInvalid", "a delta of 0.");
                        long count = Math.Max(0, (long)Math.Ceiling((double)(l - s0) / d));
                        return [Tensor.Int64([(int)count], Enumerable.Range(0, (int)count).Select(i => s0 + i * d).ToArray())];
                    }
                    float fs = start.Data[0], fl = limit.FloatValues()[0], fd = delta.FloatValues()[0];
                    int fc = Math.Max(0, (int)Math.Ceiling((fl - fs) / fd));
                    return [Tensor.Float([fc], Enumerable.Range(0, fc).Select(i => fs + i * fd).ToArray())];
                }
            case "Cast":
                {
                    var x = Required(inputs, 0);
                    var to = (DT)Int("to", 0);
                    return to switch
                    {
                        DT.Float => [Tensor.Float(x.Shape, (float[])x.FloatValues().Clone())],
                        DT.Int64 or DT.Int32 => [Tensor.Int64(x.Shape, x.IntValues())],
                        DT.Bool => [Tensor.Int64(x.Shape, x.IsInt ? Array.ConvertAll(x.Ints!, v => v != 0 ? 1L : 0L) : Array.ConvertAll(x.Data, v => v != 0f ? 1L : 0L))],
                        _ => throw Unsupported($"Cast to {ElementTypes.Name((int)to)}"),
                    };
                }
            default: throw Unsupported("this op");
        }
    }

    Tensor ConstantValue()
    {
        if (Attribute("value") is { } v) return FromProto(v.T);
        if (Attribute("value_float") is { } f) return Tensor.Float([], [f.F]);
        if (Attribute("value_floats") is { } fs) return Tensor.Float([fs.Floats.Count], fs.Floats.ToArray());
        if (Attribute("value_int") is { } i) return Tensor.Int64([], [i.I]);
        if (Attribute("value_ints") is { } ints) return Tensor.Int64([ints.Ints.Count], ints.Ints.ToArray());
        throw Unsupported("a Constant without a numeric value");
    }

    internal static Tensor FromProto(TensorProto t)
    {
        var shape = t.Dims.Select(d => checked((int)d)).ToArray();
        var dt = (DT)t.DataType;
        return dt is DT.Int64 or DT.Int32 or DT.Int16 or DT.Int8 or DT.Uint8 or DT.Uint16 or DT.Uint32 or DT.Bool
            ? Tensor.Int64(shape, TensorData.ToInt64(t))
            : Tensor.Float(shape, TensorData.ToFloat(t));
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor gradOutput, bool[] need, Tensor?[] grads) { }
}
