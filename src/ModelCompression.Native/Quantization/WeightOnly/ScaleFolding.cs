using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Quantization;

/// <summary>One change that divides a value's channels by s, exactly in float.</summary>
internal abstract record FoldEdit;

/// <summary>A node's constant input divided by s along its last axis (a norm's scale or bias, a bias, a Mul's factor).</summary>
internal sealed record ConstantEdit(NodeProto Node, int Slot, float[] Divisor) : FoldEdit;

/// <summary>A layer's output columns divided by s before it is quantized (the up projection of SwiGLU, before down).</summary>
internal sealed record LayerColumnEdit(Layer Layer, float[] Divisor) : FoldEdit;

/// <summary>
/// Where the scale-down of a layer input (X / s, for AWQ) goes: into what produces X where the graph allows it, one
/// handler per operator family (<see cref="Folds"/>), else nowhere (the caller inserts a Mul). Norms take it in their
/// scale (and bias); a Mul by a constant (a decomposed norm's weight) in the constant; a bias Add in the bias and the
/// rest of the chain; a MatMul or Gemm in its output columns; a Mul of two computed values (SwiGLU) in one of them;
/// a Relu passes it to its input (relu(x / s) = relu(x) / s for s &gt; 0). Inner values must have no other consumer.
/// </summary>
internal sealed class ScaleFolding(GraphIndex index, Func<NodeProto, Layer?> pendingLayer, ISet<NodeProto> quantized)
{
    static readonly Dictionary<string, IScaleFold> Folds = new(StringComparer.Ordinal)
    {
        ["LayerNormalization"] = new NormFold(1, 2),
        ["SimplifiedLayerNormalization"] = new NormFold(1, null),
        ["RMSNormalization"] = new NormFold(1, null),
        ["SkipSimplifiedLayerNormalization"] = new NormFold(2, null),
        ["SkipLayerNormalization"] = new NormFold(2, 3),
        ["Mul"] = new MulFold(),
        ["Add"] = new BiasAddFold(),
        ["MatMul"] = new ProducerFold(),
        ["Gemm"] = new ProducerFold(),
        ["Relu"] = new ReluFold(),
    };

    readonly List<FoldEdit> edits = [];

    public GraphIndex Index => index;

    /// <summary>The edits that divide <paramref name="value"/> by <paramref name="s"/>, or null when nothing can take it.</summary>
    public IReadOnlyList<FoldEdit>? Plan(string value, float[] s)
    {
        edits.Clear();
        return Fold(value, s, top: true) ? edits.ToList() : null;
    }

    /// <summary>Folds into the producer of <paramref name="value"/>; inner values (not <paramref name="top"/>) must have one consumer.</summary>
    internal bool Fold(string value, float[] s, bool top = false)
    {
        if (index.GraphOutputs.Contains(value) || !index.Producer.TryGetValue(value, out var producer) || producer.Domain is not ("" or "ai.onnx" or "com.microsoft")) return false;
        if (!top && index.ConsumersOf(value).Count != 1) return false;
        if (!Folds.TryGetValue(producer.OpType, out var fold)) return false;
        int mark = edits.Count;
        if (fold.TryFold(this, producer, value, s)) return true;
        edits.RemoveRange(mark, edits.Count - mark);
        return false;
    }

    internal void Add(FoldEdit edit) => edits.Add(edit);

    internal Layer? Pending(NodeProto node) => pendingLayer(node);

    internal bool Quantized(NodeProto node) => quantized.Contains(node);

    /// <summary>Whether the constant at <paramref name="slot"/> has exactly <paramref name="k"/> values laid out along its last axis.</summary>
    internal bool PerChannel(NodeProto node, int slot, int k) =>
        slot < node.Input.Count && index.Constant(node.Input[slot]) is { } c && index.IsFloatConstant(node.Input[slot], out _)
        && TensorData.ElementCount(c) == k && (c.Dims.Count == 0 ? k == 1 : c.Dims[^1] == k);

    interface IScaleFold
    {
        bool TryFold(ScaleFolding f, NodeProto producer, string value, float[] s);
    }

    sealed class NormFold(int scaleSlot, int? biasSlot) : IScaleFold
    {
        public bool TryFold(ScaleFolding f, NodeProto n, string value, float[] s)
        {
            if (n.Output[0] != value || !f.PerChannel(n, scaleSlot, s.Length)) return false;
            bool hasBias = biasSlot is { } b && b < n.Input.Count && n.Input[b].Length > 0;
            if (hasBias && !f.PerChannel(n, biasSlot!.Value, s.Length)) return false;
            f.Add(new ConstantEdit(n, scaleSlot, s));
            if (hasBias) f.Add(new ConstantEdit(n, biasSlot!.Value, s));
            return true;
        }
    }

    sealed class MulFold : IScaleFold
    {
        public bool TryFold(ScaleFolding f, NodeProto n, string value, float[] s)
        {
            if (n.Input.Count != 2) return false;
            for (int slot = 1; slot >= 0; slot--)
                if (f.PerChannel(n, slot, s.Length)) { f.Add(new ConstantEdit(n, slot, s)); return true; }
            // Two computed factors: scaling either one scales the product.
            if (f.Index.Constant(n.Input[0]) is not null || f.Index.Constant(n.Input[1]) is not null || n.Input[0] == n.Input[1]) return false;
            return f.Fold(n.Input[1], s) || f.Fold(n.Input[0], s);
        }
    }

    sealed class BiasAddFold : IScaleFold
    {
        public bool TryFold(ScaleFolding f, NodeProto n, string value, float[] s)
        {
            if (n.Input.Count != 2) return false;
            int bias = f.PerChannel(n, 1, s.Length) ? 1 : f.PerChannel(n, 0, s.Length) ? 0 : -1;
            if (bias < 0) return false;
            f.Add(new ConstantEdit(n, bias, s));
            return f.Fold(n.Input[1 - bias], s);
        }
    }

    sealed class ProducerFold : IScaleFold
    {
        public bool TryFold(ScaleFolding f, NodeProto n, string value, float[] s)
        {
            if (f.Quantized(n) || f.Pending(n) is not { } layer || layer.N != s.Length) return false;
            f.Add(new LayerColumnEdit(layer, s));
            if (layer.Bias is not null)
            {
                if (!f.PerChannel(n, 2, s.Length)) return false;
                f.Add(new ConstantEdit(n, 2, s));
            }
            return true;
        }
    }

    sealed class ReluFold : IScaleFold
    {
        public bool TryFold(ScaleFolding f, NodeProto n, string value, float[] s) =>
            n.Input.Count == 1 && s.All(v => v > 0) && f.Fold(n.Input[0], s);
    }
}
