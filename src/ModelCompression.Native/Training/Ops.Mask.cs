using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Training;

/// <summary>
/// Where(condition, X, Y) with broadcasting of all three: the masking of attention scores in exported transformers
/// (a causal or padding mask chooses between the scores and a large negative value). The condition (bool, stored as
/// int64 0/1) gets no gradient; X receives the gradient where the condition holds, Y where it does not.
/// </summary>
internal sealed class WhereKernel : TrainOp
{
    public WhereKernel(NodeProto node) : base(node) { }

    public override bool InputDifferentiable(int index) => index != 0;

    static bool[] Condition(Tensor c) => c.IsInt ? Array.ConvertAll(c.Ints!, v => v != 0) : Array.ConvertAll(c.Data, v => v != 0f);

    int[] OutShape(Tensor c, Tensor x, Tensor y) => Broadcast.Shape(Broadcast.Shape(c.Shape, x.Shape, Name), y.Shape, Name);

    /// <summary>Calls <paramref name="visit"/>(output index, condition index, x index, y index) for every output element.</summary>
    static void Walk(int[] shape, int[] cs, int[] xs, int[] ys, Action<int, int, int, int> visit)
    {
        var sc = Broadcast.Strides(cs, shape); var sx = Broadcast.Strides(xs, shape); var sy = Broadcast.Strides(ys, shape);
        int n = Tensor.Count(shape), rank = shape.Length;
        var idx = new int[rank];
        for (int o = 0; o < n; o++)
        {
            int ic = 0, ix = 0, iy = 0;
            for (int d = 0; d < rank; d++) { ic += idx[d] * sc[d]; ix += idx[d] * sx[d]; iy += idx[d] * sy[d]; }
            visit(o, ic, ix, iy);
            for (int d = rank - 1; d >= 0; d--) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
        }
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var c = Required(inputs, 0); var x = Required(inputs, 1); var y = Required(inputs, 2);
        var shape = OutShape(c, x, y);
        var cond = Condition(c);
        if (x.IsInt && y.IsInt)
        {
            var r = new long[Tensor.Count(shape)];
            Walk(shape, c.Shape, x.Shape, y.Shape, (o, ic, ix, iy) => r[o] = cond[ic] ? x.Ints![ix] : y.Ints![iy]);
            return [Tensor.Int64(shape, r)];
        }
        var xv = x.FloatValues(); var yv = y.FloatValues();
        var result = NewTensor(shape);
        var data = result.Data;
        Walk(shape, c.Shape, x.Shape, y.Shape, (o, ic, ix, iy) => data[o] = cond[ic] ? xv[ix] : yv[iy]);
        return [result];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        var c = inputs[0]!; var x = inputs[1]!; var y = inputs[2]!;
        var cond = Condition(c);
        for (int k = 1; k <= 2; k++)
        {
            if (!need[k]) continue;
            bool whenTrue = k == 1;
            var masked = NewTensor(dy.Shape);
            var m = masked.Data; var g = dy.Data;
            Walk(dy.Shape, c.Shape, x.Shape, y.Shape, (o, ic, _, _) => m[o] = cond[ic] == whenTrue ? g[o] : 0f);
            var target = inputs[k]!;
            if (masked.Length == target.Length) { grads[k] = masked.Reshaped(target.Shape); continue; }
            var r = NewTensor(target.Shape);
            Broadcast.Reduce(m, dy.Shape, target.Shape, r.Data);
            Arena.Return(m);
            grads[k] = r;
        }
    }
}

/// <summary>Expand: broadcast to a shape given as a tensor; the gradient sums back over the broadcast dimensions.</summary>
internal sealed class ExpandKernel : TrainOp
{
    public ExpandKernel(NodeProto node) : base(node) { }

    public override bool InputDifferentiable(int index) => index == 0;

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = Required(inputs, 0);
        var target = Required(inputs, 1).IntValues().Select(d => checked((int)d)).ToArray();
        var shape = Broadcast.Shape(x.Shape, target, Name);
        if (x.IsInt)
        {
            var sx = Broadcast.Strides(x.Shape, shape);
            var r = new long[Tensor.Count(shape)];
            var idx = new int[shape.Length];
            for (int o = 0; o < r.Length; o++)
            {
                int i = 0; for (int d = 0; d < shape.Length; d++) i += idx[d] * sx[d];
                r[o] = x.Ints![i];
                for (int d = shape.Length - 1; d >= 0; d--) { if (++idx[d] < shape[d]) break; idx[d] = 0; }
            }
            return [Tensor.Int64(shape, r)];
        }
        var y = NewTensor(shape);
        Broadcast.Apply(Broadcast.BinaryOp.Add, x.Data, x.Shape, [0f], [1], shape, y.Data);
        return [y];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var x = inputs[0]!;
        if (x.Length == dy.Length) { grads[0] = dy.Reshaped(x.Shape); return; }
        var r = NewTensor(x.Shape);
        Broadcast.Reduce(dy.Data, dy.Shape, x.Shape, r.Data);
        grads[0] = r;
    }
}

/// <summary>
/// Trilu: keeps the lower (upper = 0) or upper triangle of the last two dimensions, shifted by the optional k; the
/// rest is zero. Exporters use it to build causal masks; on a float tensor the gradient is masked the same way.
/// </summary>
internal sealed class TriluKernel : TrainOp
{
    public TriluKernel(NodeProto node) : base(node) { }

    public override bool InputDifferentiable(int index) => index == 0;

    bool Keep(Tensor?[] inputs, int row, int col)
    {
        long k = inputs.Length > 1 && inputs[1] is { } kt ? kt.IntValues()[0] : 0;
        return Int("upper", 1) != 0 ? col - row >= k : col - row <= k;
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = Required(inputs, 0);
        if (x.Rank < 2) throw Error("TrainingShapeMismatch", $"Trilu needs at least 2 dimensions, got {ShapeText(x.Shape)}.");
        int rows = x.Shape[^2], cols = x.Shape[^1];
        if (x.IsInt)
        {
            var r = (long[])x.Ints!.Clone();
            for (int i = 0; i < r.Length; i++) if (!Keep(inputs, i / cols % rows, i % cols)) r[i] = 0;
            return [Tensor.Int64(x.Shape, r)];
        }
        var y = NewTensor(x.Shape);
        for (int i = 0; i < y.Length; i++) y.Data[i] = Keep(inputs, i / cols % rows, i % cols) ? x.Data[i] : 0f;
        return [y];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        int rows = dy.Shape[^2], cols = dy.Shape[^1];
        var dx = NewTensor(dy.Shape);
        for (int i = 0; i < dx.Length; i++) dx.Data[i] = Keep(inputs, i / cols % rows, i % cols) ? dy.Data[i] : 0f;
        grads[0] = dx;
    }
}

/// <summary>
/// Comparisons and logic that build masks (Equal, Less, LessOrEqual, Greater, GreaterOrEqual, Not, And, Or, Xor) and
/// ConstantOfShape: no gradient; booleans are int64 0/1 tensors, as everywhere in the training engine.
/// </summary>
internal sealed class LogicKernel : TrainOp
{
    public LogicKernel(NodeProto node) : base(node) { }

    public override bool Differentiable => false;
    public override bool InputDifferentiable(int index) => false;

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        switch (Node.OpType)
        {
            case "Not":
                {
                    var x = Required(inputs, 0);
                    return [Tensor.Int64(x.Shape, x.IsInt ? Array.ConvertAll(x.Ints!, v => v == 0 ? 1L : 0L) : Array.ConvertAll(x.Data, v => v == 0f ? 1L : 0L))];
                }
            case "ConstantOfShape":
                {
                    var shape = (inputs.Length > 0 && inputs[0] is { } s ? s.IntValues() : []).Select(d => checked((int)d)).ToArray();
                    var value = Attribute("value")?.T;
                    if (value is null || (DT)value.DataType == DT.Float)
                    {
                        float v = value is null ? 0f : TensorData.ToFloat(value)[0];
                        var y = NewTensor(shape);
                        Array.Fill(y.Data, v);
                        return [y];
                    }
                    long iv = TensorData.ToInt64(value)[0];
                    var r = new long[Tensor.Count(shape)];
                    Array.Fill(r, iv);
                    return [Tensor.Int64(shape, r)];
                }
        }
        var a = Required(inputs, 0); var b = Required(inputs, 1);
        var outShape = Broadcast.Shape(a.Shape, b.Shape, Name);
        var sa = Broadcast.Strides(a.Shape, outShape); var sb = Broadcast.Strides(b.Shape, outShape);
        bool ints = a.IsInt && b.IsInt;
        var av = ints ? null : a.FloatValues(); var bv = ints ? null : b.FloatValues();
        Func<int, int, bool> test = Node.OpType switch
        {
            "Equal" => ints ? (i, j) => a.Ints![i] == b.Ints![j] : (i, j) => av![i] == bv![j],
            "Less" => ints ? (i, j) => a.Ints![i] < b.Ints![j] : (i, j) => av![i] < bv![j],
            "LessOrEqual" => ints ? (i, j) => a.Ints![i] <= b.Ints![j] : (i, j) => av![i] <= bv![j],
            "Greater" => ints ? (i, j) => a.Ints![i] > b.Ints![j] : (i, j) => av![i] > bv![j],
            "GreaterOrEqual" => ints ? (i, j) => a.Ints![i] >= b.Ints![j] : (i, j) => av![i] >= bv![j],
            "And" => (i, j) => Truth(a, i) && Truth(b, j),
            "Or" => (i, j) => Truth(a, i) || Truth(b, j),
            "Xor" => (i, j) => Truth(a, i) ^ Truth(b, j),
            _ => throw Unsupported("this op"),
        };
        var result = new long[Tensor.Count(outShape)];
        var idx = new int[outShape.Length];
        for (int o = 0; o < result.Length; o++)
        {
            int ia = 0, ib = 0;
            for (int d = 0; d < idx.Length; d++) { ia += idx[d] * sa[d]; ib += idx[d] * sb[d]; }
            result[o] = test(ia, ib) ? 1 : 0;
            for (int d = idx.Length - 1; d >= 0; d--) { if (++idx[d] < outShape[d]) break; idx[d] = 0; }
        }
        return [Tensor.Int64(outShape, result)];
    }

    static bool Truth(Tensor t, int i) => t.IsInt ? t.Ints![i] != 0 : t.Data[i] != 0f;

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor gradOutput, bool[] need, Tensor?[] grads) { }
}
