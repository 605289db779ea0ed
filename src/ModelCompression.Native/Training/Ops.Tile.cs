using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Training;

/// <summary>
/// Tile: the input repeated along each axis (float or int64). Some exporters repeat the key/value heads of
/// grouped-query attention this way instead of Expand and Reshape. The gradient of an input element is the sum of the
/// gradients of its copies.
/// </summary>
internal sealed class TileKernel : TrainOp
{
    int[]? cachedKey;
    int[]? cachedSources;

    public TileKernel(NodeProto node) : base(node) { }

    public override bool InputDifferentiable(int index) => index == 0;

    int[] OutShape(Tensor x, Tensor repeats)
    {
        var r = repeats.IntValues();
        if (r.Length != x.Rank || r.Any(v => v < 0))
            throw Error("TrainingShapeMismatch", $"repeats [{string.Join(",", r)}] do not fit an input of shape {ShapeText(x.Shape)}.");
        return x.Shape.Select((d, i) => checked(d * (int)r[i])).ToArray();
    }

    /// <summary>For each output element, the input element it copies; the same shapes (every training step) reuse them.</summary>
    int[] Sources(int[] inShape, int[] outShape)
    {
        int[] key = [.. inShape, .. outShape];
        if (cachedKey is not null && cachedKey.AsSpan().SequenceEqual(key)) return cachedSources!;
        int rank = inShape.Length, n = Tensor.Count(outShape);
        var strides = new int[rank];
        for (int i = rank - 1, s = 1; i >= 0; i--) { strides[i] = s; s *= inShape[i]; }
        var sources = new int[n];
        var idx = new int[rank];
        for (int o = 0; o < n; o++)
        {
            int at = 0;
            for (int d = 0; d < rank; d++) at += idx[d] % inShape[d] * strides[d];
            sources[o] = at;
            for (int d = rank - 1; d >= 0; d--) { if (++idx[d] < outShape[d]) break; idx[d] = 0; }
        }
        (cachedKey, cachedSources) = (key, sources);
        return sources;
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = Required(inputs, 0);
        var shape = OutShape(x, Required(inputs, 1));
        var sources = Sources(x.Shape, shape);
        if (x.IsInt) return [Tensor.Int64(shape, Array.ConvertAll(sources, i => x.Ints![i]))];
        var y = NewTensor(shape);
        for (int o = 0; o < sources.Length; o++) y.Data[o] = x.Data[sources[o]];
        return [y];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var x = inputs[0]!;
        var sources = Sources(x.Shape, dy.Shape);
        var dx = NewZeroed(x.Shape);
        for (int o = 0; o < sources.Length; o++) dx.Data[sources[o]] += dy.Data[o];
        grads[0] = dx;
    }
}
