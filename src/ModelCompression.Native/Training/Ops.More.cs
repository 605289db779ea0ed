using System.Numerics.Tensors;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Training;

/// <summary>Clip (bounds as attributes before opset 11, as inputs after) and HardSigmoid: piecewise-linear activations.</summary>
internal sealed class ClipKernel : TrainOp
{
    readonly bool hardSigmoid;
    readonly int opset;
    public ClipKernel(NodeProto node, bool hardSigmoid, int opset) : base(node) { this.hardSigmoid = hardSigmoid; this.opset = opset; }

    public override bool InputDifferentiable(int index) => index == 0;

    (float Lo, float Hi, float A, float B) Params(Tensor?[] inputs)
    {
        if (hardSigmoid) return (0f, 1f, Float("alpha", 0.2f), Float("beta", 0.5f));
        if (opset < 11) return (Float("min", float.MinValue), Float("max", float.MaxValue), 1f, 0f);
        float lo = inputs.Length > 1 && inputs[1] is { } mn ? mn.FloatValues()[0] : float.MinValue;
        float hi = inputs.Length > 2 && inputs[2] is { } mx ? mx.FloatValues()[0] : float.MaxValue;
        return (lo, hi, 1f, 0f);
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = FloatInput(inputs, 0);
        var (lo, hi, a, b) = Params(inputs);
        var yt = NewTensor(x.Shape);
        var y = yt.Data;
        if (a != 1f || b != 0f) { TensorPrimitives.Multiply(x.Data, a, y); TensorPrimitives.Add(y, b, y); }
        else x.Data.CopyTo(y, 0);
        TensorPrimitives.Max(y, lo, y);
        TensorPrimitives.Min(y, hi, y);
        return [yt];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var x = inputs[0]!.Data;
        var (lo, hi, a, b) = Params(inputs);
        var dxt = NewTensor(inputs[0]!.Shape);
        var dx = dxt.Data;
        for (int i = 0; i < x.Length; i++)
        {
            float v = a * x[i] + b;
            dx[i] = v > lo && v < hi ? a * dy.Data[i] : 0f;
        }
        grads[0] = dxt;
    }
}

/// <summary>Pow with broadcasting: gradients for the base and (where the base is positive) the exponent.</summary>
internal sealed class PowKernel : TrainOp
{
    public PowKernel(NodeProto node) : base(node) { }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var a = FloatInput(inputs, 0); var b = Required(inputs, 1);
        var shape = Broadcast.Shape(a.Shape, b.Shape, Name);
        var bf = b.FloatValues();
        var yt = NewTensor(shape);
        var y = yt.Data;
        if (bf.Length == 1 && a.Length == y.Length)
        {
            float e = bf[0];
            if (e == 2f) TensorPrimitives.Multiply(a.Data, a.Data, y);
            else for (int i = 0; i < y.Length; i++) y[i] = MathF.Pow(a.Data[i], e);
            return [yt];
        }
        var ab = Expand(a.Data, a.Shape, shape); var bb = Expand(bf, b.Shape, shape);
        for (int i = 0; i < y.Length; i++) y[i] = MathF.Pow(ab[i], bb[i]);
        return [yt];
    }

    /// <summary><paramref name="v"/> broadcast to <paramref name="to"/> (itself when it already has that size).</summary>
    internal static float[] Expand(float[] v, int[] from, int[] to)
    {
        if (v.Length == Tensor.Count(to)) return v;
        var r = new float[Tensor.Count(to)];
        Broadcast.Apply(Broadcast.BinaryOp.Add, v, from, [0f], [1], to, r);
        return r;
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        var a = inputs[0]!; var b = inputs[1]!;
        var shape = dy.Shape;
        var ab = Expand(a.Data, a.Shape, shape); var bb = Expand(b.FloatValues(), b.Shape, shape);
        var y = outputs[0].Data;
        if (need[0])
        {
            var g = Arena.Rent(y.Length);
            for (int i = 0; i < g.Length; i++) g[i] = dy.Data[i] * bb[i] * (bb[i] == 2f ? ab[i] : MathF.Pow(ab[i], bb[i] - 1));
            grads[0] = SumTo(g, shape, a.Shape);
        }
        if (need[1] && !b.IsInt)
        {
            var g = Arena.Rent(y.Length);
            for (int i = 0; i < g.Length; i++) g[i] = ab[i] > 0 ? dy.Data[i] * y[i] * MathF.Log(ab[i]) : 0f;
            grads[1] = SumTo(g, shape, b.Shape);
        }
    }

    Tensor SumTo(float[] g, int[] shape, int[] to)
    {
        if (g.Length == Tensor.Count(to)) return Tensor.Float(to, g);
        var r = NewTensor(to);
        Broadcast.Reduce(g, shape, to, r.Data);
        Arena.Return(g);
        return r;
    }
}

/// <summary>ReduceMean and ReduceSum over axes (attribute, or input from opset 13/18), keepdims.</summary>
internal sealed class ReduceKernel : TrainOp
{
    readonly bool mean;
    readonly int opset;
    public ReduceKernel(NodeProto node, bool mean, int opset) : base(node) { this.mean = mean; this.opset = opset; }

    public override bool InputDifferentiable(int index) => index == 0;

    (int[] Kept, int[] Out, int Count) Plan(Tensor?[] inputs, int[] shape)
    {
        bool axesAsInput = mean ? opset >= 18 : opset >= 13;
        long[]? axes = axesAsInput ? (inputs.Length > 1 && inputs[1] is { } t ? t.IntValues() : null) : Ints("axes");
        bool keep = Int("keepdims", 1) != 0;
        var set = new HashSet<int>();
        if (axes is null || axes.Length == 0)
        {
            if (axesAsInput && Int("noop_with_empty_axes", 0) != 0) return (shape, shape, 1);
            for (int i = 0; i < shape.Length; i++) set.Add(i);
        }
        else foreach (var a in axes) set.Add(Axis(a, shape.Length));
        var kept = shape.Select((d, i) => set.Contains(i) ? 1 : d).ToArray();
        var outShape = keep ? kept : shape.Where((d, i) => !set.Contains(i)).ToArray();
        int count = shape.Where((d, i) => set.Contains(i)).Aggregate(1, (x, y) => x * y);
        return (kept, outShape, count);
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = FloatInput(inputs, 0);
        var (kept, outShape, count) = Plan(inputs, x.Shape);
        var s = NewTensor(outShape);
        Broadcast.Reduce(x.Data, x.Shape, kept, s.Data);
        if (mean && count > 0) TensorPrimitives.Multiply(s.Data, 1f / count, s.Data);
        return [s];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var x = inputs[0]!;
        var (kept, _, count) = Plan(inputs, x.Shape);
        var dx = NewTensor(x.Shape);
        Broadcast.Apply(Broadcast.BinaryOp.Mul, dy.Data, kept, [mean && count > 0 ? 1f / count : 1f], [1], x.Shape, dx.Data);
        grads[0] = dx;
    }
}

/// <summary>Slice (attributes before opset 10; starts, ends, axes, steps inputs after), float or int64; the gradient scatters back.</summary>
internal sealed class SliceKernel : TrainOp
{
    readonly int opset;
    public SliceKernel(NodeProto node, int opset) : base(node) { this.opset = opset; }

    public override bool InputDifferentiable(int index) => index == 0;

    (int[] Start, int[] Step, int[] OutShape) Plan(Tensor?[] inputs, int[] shape)
    {
        long[] starts, ends; long[]? axes, steps;
        if (opset < 10) { starts = Ints("starts") ?? []; ends = Ints("ends") ?? []; axes = Ints("axes"); steps = null; }
        else
        {
            starts = Required(inputs, 1).IntValues(); ends = Required(inputs, 2).IntValues();
            axes = inputs.Length > 3 && inputs[3] is { } ax ? ax.IntValues() : null;
            steps = inputs.Length > 4 && inputs[4] is { } st ? st.IntValues() : null;
        }
        int rank = shape.Length;
        var start = new int[rank]; var step = Enumerable.Repeat(1, rank).ToArray(); var outShape = (int[])shape.Clone();
        for (int i = 0; i < starts.Length; i++)
        {
            int axis = Axis(axes?[i] ?? i, rank);
            long dim = shape[axis], st = steps?[i] ?? 1;
            if (st == 0) throw Error("TrainingSliceInvalid", "a step of 0.");
            long s = starts[i], e = ends[i];
            if (s < 0) s += dim; if (e < 0) e += dim;
            if (st > 0) { s = Math.Clamp(s, 0, dim); e = Math.Clamp(e, 0, dim); }
            else { s = Math.Clamp(s, 0, dim - 1); e = Math.Clamp(e, -1, dim - 1); }
            long n = st > 0 ? Math.Max(0, (e - s + st - 1) / st) : Math.Max(0, (s - e - st - 1) / -st);
            start[axis] = (int)s; step[axis] = (int)st; outShape[axis] = (int)n;
        }
        return (start, step, outShape);
    }

    int[]? cachedKey;
    int[]? cachedOffsets;

    /// <summary>Offsets of the sliced elements; the same slice of the same shape (every training step) reuses them.</summary>
    int[] OffsetsOf(int[] shape, int[] start, int[] step, int[] outShape)
    {
        int[] key = [.. shape, .. start, .. step, .. outShape];
        if (cachedKey is not null && cachedKey.AsSpan().SequenceEqual(key)) return cachedOffsets!;
        cachedOffsets = Offsets(shape, start, step, outShape);
        cachedKey = key;
        return cachedOffsets;
    }

    static int[] Offsets(int[] shape, int[] start, int[] step, int[] outShape)
    {
        int rank = shape.Length;
        var strides = new int[rank];
        int acc = 1;
        for (int i = rank - 1; i >= 0; i--) { strides[i] = acc; acc *= shape[i]; }
        int n = Tensor.Count(outShape);
        var result = new int[n];
        var idx = new int[rank];
        for (int o = 0; o < n; o++)
        {
            int at = 0;
            for (int d = 0; d < rank; d++) at += (start[d] + idx[d] * step[d]) * strides[d];
            result[o] = at;
            for (int d = rank - 1; d >= 0; d--) { if (++idx[d] < outShape[d]) break; idx[d] = 0; }
        }
        return result;
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = Required(inputs, 0);
        var (start, step, outShape) = Plan(inputs, x.Shape);
        var offsets = OffsetsOf(x.Shape, start, step, outShape);
        if (x.IsInt) return [Tensor.Int64(outShape, offsets.Select(i => x.Ints![i]).ToArray())];
        var y = NewTensor(outShape);
        for (int o = 0; o < offsets.Length; o++) y.Data[o] = x.Data[offsets[o]];
        return [y];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var x = inputs[0]!;
        var (start, step, outShape) = Plan(inputs, x.Shape);
        var offsets = OffsetsOf(x.Shape, start, step, outShape);
        var dx = NewZeroed(x.Shape);
        for (int o = 0; o < offsets.Length; o++) dx.Data[offsets[o]] += dy.Data[o];
        grads[0] = dx;
    }
}

/// <summary>Gather along an axis: int64 data (shape arithmetic) or float data (embedding tables, trained by scatter-add).</summary>
internal sealed class GatherKernel : TrainOp
{
    public GatherKernel(NodeProto node) : base(node) { }

    public override bool InputDifferentiable(int index) => index == 0;

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var data = Required(inputs, 0);
        var indexTensor = Required(inputs, 1);
        var indices = indexTensor.IntValues();
        int axis = Axis(Int("axis", 0), data.Rank);
        int outer = 1; for (int i = 0; i < axis; i++) outer *= data.Shape[i];
        int inner = 1; for (int i = axis + 1; i < data.Rank; i++) inner *= data.Shape[i];
        int len = data.Shape[axis];
        var shape = data.Shape[..axis].Concat(indexTensor.Shape).Concat(data.Shape[(axis + 1)..]).ToArray();
        var rows = new int[indices.Length];
        for (int j = 0; j < indices.Length; j++)
        {
            long ix = indices[j] < 0 ? indices[j] + len : indices[j];
            if (ix < 0 || ix >= len) throw Error("TrainingIndexOutOfRange", $"index {indices[j]} is out of range for a dimension of {len}.");
            rows[j] = (int)ix;
        }
        if (data.IsInt)
        {
            var r = new long[outer * indices.Length * inner];
            for (int o = 0; o < outer; o++)
                for (int j = 0; j < rows.Length; j++) Array.Copy(data.Ints!, (o * len + rows[j]) * inner, r, (o * rows.Length + j) * inner, inner);
            return [Tensor.Int64(shape, r)];
        }
        var y = NewTensor(shape);
        for (int o = 0; o < outer; o++)
            for (int j = 0; j < rows.Length; j++) Array.Copy(data.Data, (o * len + rows[j]) * inner, y.Data, (o * rows.Length + j) * inner, inner);
        return [y];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var data = inputs[0]!;
        var indices = inputs[1]!.IntValues();
        int axis = Axis(Int("axis", 0), data.Rank);
        int outer = 1; for (int i = 0; i < axis; i++) outer *= data.Shape[i];
        int inner = 1; for (int i = axis + 1; i < data.Rank; i++) inner *= data.Shape[i];
        int len = data.Shape[axis];
        var dx = NewZeroed(data.Shape);
        for (int o = 0; o < outer; o++)
            for (int j = 0; j < indices.Length; j++)
            {
                int ix = (int)(indices[j] < 0 ? indices[j] + len : indices[j]);
                var dst = dx.Data.AsSpan((o * len + ix) * inner, inner);
                TensorPrimitives.Add(dst, dy.Data.AsSpan((o * indices.Length + j) * inner, inner), dst);
            }
        grads[0] = dx;
    }
}
