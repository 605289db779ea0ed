using System.Numerics.Tensors;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Training;

/// <summary>Geometry shared by 2-D convolution and pooling: kernel, strides, dilations, pads (auto_pad resolved).</summary>
internal struct Window2D
{
    public int KH, KW, SH, SW, DH, DW, PadTop, PadLeft, PadBottom, PadRight, OH, OW;

    public static Window2D Resolve(TrainOp op, string name, int h, int w, int kh, int kw, long[]? strides, long[]? dilations, long[]? pads, string? autoPad, bool ceil)
    {
        var g = new Window2D
        {
            KH = kh, KW = kw,
            SH = (int)(strides?[0] ?? 1), SW = (int)(strides?[1] ?? 1),
            DH = (int)(dilations?[0] ?? 1), DW = (int)(dilations?[1] ?? 1),
        };
        int ekh = (kh - 1) * g.DH + 1, ekw = (kw - 1) * g.DW + 1;
        switch (autoPad ?? "NOTSET")
        {
            case "NOTSET":
                if (pads is { Length: 4 }) { g.PadTop = (int)pads[0]; g.PadLeft = (int)pads[1]; g.PadBottom = (int)pads[2]; g.PadRight = (int)pads[3]; }
                break;
            case "VALID": break;
            case "SAME_UPPER" or "SAME_LOWER":
                {
                    int oh = (h + g.SH - 1) / g.SH, ow = (w + g.SW - 1) / g.SW;
                    int ph = Math.Max(0, (oh - 1) * g.SH + ekh - h), pw = Math.Max(0, (ow - 1) * g.SW + ekw - w);
                    bool upper = autoPad == "SAME_UPPER";
                    g.PadTop = upper ? ph / 2 : ph - ph / 2; g.PadBottom = ph - g.PadTop;
                    g.PadLeft = upper ? pw / 2 : pw - pw / 2; g.PadRight = pw - g.PadLeft;
                    break;
                }
            default:
                throw new EngineException("TrainingOpUnsupported", EngineErrorKind.NotImplemented, $"Node '{name}': auto_pad '{autoPad}' is not supported by the training engine.");
        }
        int spanH = h + g.PadTop + g.PadBottom - ekh, spanW = w + g.PadLeft + g.PadRight - ekw;
        g.OH = (ceil ? (spanH + g.SH - 1) / g.SH : spanH / g.SH) + 1;
        g.OW = (ceil ? (spanW + g.SW - 1) / g.SW : spanW / g.SW) + 1;
        if (ceil)
        {
            // the last window must start inside the input or the left padding
            if ((g.OH - 1) * g.SH >= h + g.PadTop) g.OH--;
            if ((g.OW - 1) * g.SW >= w + g.PadLeft) g.OW--;
        }
        if (g.OH <= 0 || g.OW <= 0)
            throw new EngineException("TrainingShapeMismatch", EngineErrorKind.InvalidData, $"Node '{name}': a {kh}x{kw} window does not fit a {h}x{w} input.");
        return g;
    }
}

/// <summary>2-D convolution (groups, pads, strides, dilations) as im2col + GEMM per image and group; backward by col2im.</summary>
internal sealed class ConvKernel : TrainOp
{
    readonly int group;
    public ConvKernel(NodeProto node) : base(node) { group = (int)Int("group", 1); }

    Window2D Geometry(Tensor x, Tensor w)
    {
        if (x.Rank != 4 || w.Rank != 4) throw Unsupported($"a convolution that is not 2-D (input {ShapeText(x.Shape)}, weight {ShapeText(w.Shape)})");
        if (x.Shape[1] != w.Shape[1] * group || w.Shape[0] % group != 0)
            throw Error("TrainingShapeMismatch", $"input {ShapeText(x.Shape)} and weight {ShapeText(w.Shape)} disagree for group={group}.");
        return Window2D.Resolve(this, Name, x.Shape[2], x.Shape[3], w.Shape[2], w.Shape[3], Ints("strides"), Ints("dilations"), Ints("pads"), String("auto_pad"), false);
    }

    static void Im2Col(ReadOnlySpan<float> x, int channels, int h, int w, in Window2D g, Span<float> col)
    {
        int ohw = g.OH * g.OW;
        for (int c = 0; c < channels; c++)
            for (int ki = 0; ki < g.KH; ki++)
                for (int kj = 0; kj < g.KW; kj++)
                {
                    var row = col.Slice(((c * g.KH + ki) * g.KW + kj) * ohw, ohw);
                    var plane = x.Slice(c * h * w, h * w);
                    for (int oy = 0; oy < g.OH; oy++)
                    {
                        int iy = oy * g.SH - g.PadTop + ki * g.DH;
                        var dst = row.Slice(oy * g.OW, g.OW);
                        if ((uint)iy >= (uint)h) { dst.Clear(); continue; }
                        int ix0 = -g.PadLeft + kj * g.DW;
                        if (g.SW == 1 && ix0 >= 0 && ix0 + g.OW <= w) { plane.Slice(iy * w + ix0, g.OW).CopyTo(dst); continue; }
                        for (int ox = 0; ox < g.OW; ox++)
                        {
                            int ix = ix0 + ox * g.SW;
                            dst[ox] = (uint)ix < (uint)w ? plane[iy * w + ix] : 0f;
                        }
                    }
                }
    }

    static void Col2Im(ReadOnlySpan<float> col, int channels, int h, int w, in Window2D g, Span<float> x)
    {
        int ohw = g.OH * g.OW;
        for (int c = 0; c < channels; c++)
            for (int ki = 0; ki < g.KH; ki++)
                for (int kj = 0; kj < g.KW; kj++)
                {
                    var row = col.Slice(((c * g.KH + ki) * g.KW + kj) * ohw, ohw);
                    var plane = x.Slice(c * h * w, h * w);
                    for (int oy = 0; oy < g.OH; oy++)
                    {
                        int iy = oy * g.SH - g.PadTop + ki * g.DH;
                        if ((uint)iy >= (uint)h) continue;
                        int ix0 = -g.PadLeft + kj * g.DW;
                        var src = row.Slice(oy * g.OW, g.OW);
                        if (g.SW == 1 && ix0 >= 0 && ix0 + g.OW <= w)
                        {
                            var dst = plane.Slice(iy * w + ix0, g.OW);
                            TensorPrimitives.Add(dst, src, dst);
                            continue;
                        }
                        for (int ox = 0; ox < g.OW; ox++)
                        {
                            int ix = ix0 + ox * g.SW;
                            if ((uint)ix < (uint)w) plane[iy * w + ix] += src[ox];
                        }
                    }
                }
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = FloatInput(inputs, 0); var w = FloatInput(inputs, 1);
        var g = Geometry(x, w);
        int n = x.Shape[0], c = x.Shape[1], h = x.Shape[2], wd = x.Shape[3], m = w.Shape[0];
        int cg = c / group, mg = m / group, ohw = g.OH * g.OW, kk = cg * g.KH * g.KW;
        var y = Arena.Rent(n * m * ohw);
        var xd = x.Data; var wdata = w.Data;
        // images in parallel (each writes its own slice of y), one im2col buffer per worker
        Parallelism.Chunks(n, (long)m * kk * ohw, (b0, b1) =>
        {
            var col = new float[kk * ohw];
            for (int b = b0; b < b1; b++)
                for (int gi = 0; gi < group; gi++)
                {
                    Im2Col(xd.AsSpan((b * c + gi * cg) * h * wd, cg * h * wd), cg, h, wd, g, col);
                    Gemm.Multiply(false, false, mg, ohw, kk, 1f, wdata.AsSpan(gi * mg * kk, mg * kk), kk, col, ohw, 0f, y.AsSpan((b * m + gi * mg) * ohw, mg * ohw), ohw);
                }
        });
        if (inputs.Length > 2 && inputs[2] is { } bias)
            for (int b = 0; b < n; b++)
                for (int o = 0; o < m; o++)
                {
                    var s = y.AsSpan((b * m + o) * ohw, ohw);
                    TensorPrimitives.Add(s, bias.Data[o], s);
                }
        return [Tensor.Float([n, m, g.OH, g.OW], y)];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        var x = inputs[0]!; var w = inputs[1]!;
        var g = Geometry(x, w);
        int n = x.Shape[0], c = x.Shape[1], h = x.Shape[2], wd = x.Shape[3], m = w.Shape[0];
        int cg = c / group, mg = m / group, ohw = g.OH * g.OW, kk = cg * g.KH * g.KW;
        float[]? dx = need[0] ? Arena.RentZeroed(x.Length) : null;
        float[]? dw = need[1] ? Arena.RentZeroed(w.Length) : null;
        var xd = x.Data; var wdata = w.Data; var dyd = dy.Data;
        // Images in fixed contiguous chunks, one per worker: dx slices are disjoint; each chunk sums its own dW,
        // and the chunks' dW are added in chunk order, so the result does not depend on scheduling.
        var partial = new List<(int Start, float[] Dw)>();
        Parallelism.Chunks(n, (long)m * kk * ohw * 2, (b0, b1) =>
        {
            var col = new float[kk * ohw];
            var dwLocal = dw is null ? null : new float[w.Length];
            for (int b = b0; b < b1; b++)
                for (int gi = 0; gi < group; gi++)
                {
                    var dyg = dyd.AsSpan((b * m + gi * mg) * ohw, mg * ohw);
                    if (dwLocal is not null)
                    {
                        Im2Col(xd.AsSpan((b * c + gi * cg) * h * wd, cg * h * wd), cg, h, wd, g, col);
                        Gemm.Multiply(false, true, mg, kk, ohw, 1f, dyg, ohw, col, ohw, 1f, dwLocal.AsSpan(gi * mg * kk, mg * kk), kk);
                    }
                    if (dx is not null)
                    {
                        Gemm.Multiply(true, false, kk, ohw, mg, 1f, wdata.AsSpan(gi * mg * kk, mg * kk), kk, dyg, ohw, 0f, col, ohw);
                        Col2Im(col, cg, h, wd, g, dx.AsSpan((b * c + gi * cg) * h * wd, cg * h * wd));
                    }
                }
            if (dwLocal is not null) lock (partial) partial.Add((b0, dwLocal));
        });
        if (dw is not null)
            foreach (var (_, part) in partial.OrderBy(p => p.Start)) TensorPrimitives.Add(dw, part, dw);
        if (dx is not null) grads[0] = Tensor.Float(x.Shape, dx);
        if (dw is not null) grads[1] = Tensor.Float(w.Shape, dw);
        if (inputs.Length > 2 && inputs[2] is { } bias && need[2])
        {
            var db = Arena.RentZeroed(m);
            for (int b = 0; b < n; b++)
                for (int o = 0; o < m; o++) db[o] += TensorPrimitives.Sum(dy.Data.AsSpan((b * m + o) * ohw, ohw));
            grads[2] = Tensor.Float(bias.Shape, db);
        }
    }
}

/// <summary>MaxPool and AveragePool over 2-D windows (pads, strides, ceil_mode; count_include_pad for averages).</summary>
internal sealed class PoolKernel : TrainOp
{
    readonly bool max;
    int[]? argmax;

    public PoolKernel(NodeProto node, bool max) : base(node)
    {
        this.max = max;
        if (Ints("kernel_shape") is not { Length: 2 }) throw Unsupported("a pooling window that is not 2-D");
        if (max && Int("storage_order", 0) != 0) throw Unsupported("storage_order=1");
        if (!max && Ints("dilations") is { } d && d.Any(v => v != 1)) throw Unsupported("dilated average pooling");
    }

    Window2D Geometry(Tensor x)
    {
        if (x.Rank != 4) throw Unsupported($"pooling of a {x.Rank}-D tensor");
        var k = Ints("kernel_shape")!;
        return Window2D.Resolve(this, Name, x.Shape[2], x.Shape[3], (int)k[0], (int)k[1], Ints("strides"), Ints("dilations"), Ints("pads"), String("auto_pad"), Int("ceil_mode", 0) != 0);
    }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = FloatInput(inputs, 0);
        var g = Geometry(x);
        int planes = x.Shape[0] * x.Shape[1], h = x.Shape[2], w = x.Shape[3];
        bool includePad = Int("count_include_pad", 0) != 0;
        var y = Arena.RentZeroed(planes * g.OH * g.OW);
        if (max) argmax = new int[y.Length];
        for (int p = 0; p < planes; p++)
            for (int oy = 0; oy < g.OH; oy++)
                for (int ox = 0; ox < g.OW; ox++)
                {
                    int o = (p * g.OH + oy) * g.OW + ox;
                    float best = float.NegativeInfinity; int bestAt = -1; double sum = 0; int count = 0;
                    for (int ki = 0; ki < g.KH; ki++)
                    {
                        int iy = oy * g.SH - g.PadTop + ki * g.DH;
                        for (int kj = 0; kj < g.KW; kj++)
                        {
                            int ix = ox * g.SW - g.PadLeft + kj * g.DW;
                            bool inside = (uint)iy < (uint)h && (uint)ix < (uint)w;
                            if (!inside)
                            {
                                // padding counts for averages when asked, but only inside the padded extent
                                if (includePad && iy < h + g.PadBottom && ix < w + g.PadRight) count++;
                                continue;
                            }
                            int at = p * h * w + iy * w + ix;
                            float v = x.Data[at];
                            if (max) { if (v > best || bestAt < 0) { best = v; bestAt = at; } }
                            else { sum += v; count++; }
                        }
                    }
                    if (max) { y[o] = best; argmax![o] = bestAt; }
                    else y[o] = count > 0 ? (float)(sum / count) : 0f;
                }
        return [Tensor.Float([x.Shape[0], x.Shape[1], g.OH, g.OW], y)];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var x = inputs[0]!;
        var dx = Arena.RentZeroed(x.Length);
        if (max)
        {
            for (int o = 0; o < dy.Length; o++) if (argmax![o] >= 0) dx[argmax[o]] += dy.Data[o];
            grads[0] = Tensor.Float(x.Shape, dx);
            return;
        }
        var g = Geometry(x);
        int planes = x.Shape[0] * x.Shape[1], h = x.Shape[2], w = x.Shape[3];
        bool includePad = Int("count_include_pad", 0) != 0;
        for (int p = 0; p < planes; p++)
            for (int oy = 0; oy < g.OH; oy++)
                for (int ox = 0; ox < g.OW; ox++)
                {
                    int count = 0;
                    for (int ki = 0; ki < g.KH; ki++)
                        for (int kj = 0; kj < g.KW; kj++)
                        {
                            int iy = oy * g.SH - g.PadTop + ki, ix = ox * g.SW - g.PadLeft + kj;
                            bool inside = (uint)iy < (uint)h && (uint)ix < (uint)w;
                            if (inside || (includePad && iy < h + g.PadBottom && ix < w + g.PadRight)) count++;
                        }
                    if (count == 0) continue;
                    float share = dy.Data[(p * g.OH + oy) * g.OW + ox] / count;
                    for (int ki = 0; ki < g.KH; ki++)
                        for (int kj = 0; kj < g.KW; kj++)
                        {
                            int iy = oy * g.SH - g.PadTop + ki, ix = ox * g.SW - g.PadLeft + kj;
                            if ((uint)iy < (uint)h && (uint)ix < (uint)w) dx[p * h * w + iy * w + ix] += share;
                        }
                }
        grads[0] = Tensor.Float(x.Shape, dx);
    }
}

/// <summary>GlobalAveragePool: the mean of each channel's spatial values.</summary>
internal sealed class GlobalAveragePoolKernel : TrainOp
{
    public GlobalAveragePoolKernel(NodeProto node) : base(node) { }

    public override Tensor[] Forward(Tensor?[] inputs, PassContext ctx)
    {
        var x = FloatInput(inputs, 0);
        if (x.Rank < 3) throw Error("TrainingShapeMismatch", $"input {ShapeText(x.Shape)} has no spatial dimensions.");
        int planes = x.Shape[0] * x.Shape[1], size = x.Length / Math.Max(1, planes);
        var y = Arena.RentZeroed(planes);
        for (int p = 0; p < planes; p++) y[p] = TensorPrimitives.Sum(x.Data.AsSpan(p * size, size)) / size;
        var shape = x.Shape.Select((d, i) => i < 2 ? d : 1).ToArray();
        return [Tensor.Float(shape, y)];
    }

    public override void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor dy, bool[] need, Tensor?[] grads)
    {
        if (!need[0]) return;
        var x = inputs[0]!;
        int planes = x.Shape[0] * x.Shape[1], size = x.Length / Math.Max(1, planes);
        var dx = Arena.RentZeroed(x.Length);
        for (int p = 0; p < planes; p++) dx.AsSpan(p * size, size).Fill(dy.Data[p] / size);
        grads[0] = Tensor.Float(x.Shape, dx);
    }
}
