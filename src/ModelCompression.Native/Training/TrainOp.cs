using System.Text;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Training;

/// <summary>Per-pass state the ops see: training or inference behaviour, and the seeded random source (Dropout).</summary>
internal sealed class PassContext
{
    public bool Training;
    public Random Rng = new(0);
}

/// <summary>
/// One ONNX node made executable and differentiable. Forward computes the outputs and keeps what backward needs
/// in the op's own fields (the graph runs one pass at a time); Backward turns the gradient of output 0 into
/// gradients for the inputs that need one. Ops never write into their inputs or into the gradient they are given
/// (a gradient may share storage with another: Reshape passes it through), and take new buffers from <see cref="Arena"/>.
/// </summary>
internal abstract class TrainOp
{
    protected TrainOp(NodeProto node) { Node = node; }

    public NodeProto Node { get; }

    /// <summary>Where the op's outputs and gradients come from; the graph sets its own (recycled every pass).</summary>
    public TensorArena Arena { get; set; } = TensorArena.Unpooled;

    /// <summary>A float tensor of <paramref name="shape"/> from the arena, contents unspecified.</summary>
    protected Tensor NewTensor(int[] shape) => Tensor.Float(shape, Arena.Rent(Tensor.Count(shape)));

    protected Tensor NewZeroed(int[] shape) => Tensor.Float(shape, Arena.RentZeroed(Tensor.Count(shape)));
    public string Name => string.IsNullOrEmpty(Node.Name) ? Node.OpType + "(" + string.Join(",", Node.Output) + ")" : Node.Name;

    /// <summary>Whether gradients flow through the op at all (shape computations do not).</summary>
    public virtual bool Differentiable => true;

    /// <summary>Input indices that never receive a gradient (shape tensors, running statistics, ...).</summary>
    public virtual bool InputDifferentiable(int index) => true;

    public abstract Tensor[] Forward(Tensor?[] inputs, PassContext ctx);

    /// <summary>Fills <paramref name="grads"/>[i] for each i with <paramref name="need"/>[i].</summary>
    public abstract void Backward(Tensor?[] inputs, Tensor[] outputs, Tensor gradOutput, bool[] need, Tensor?[] grads);

    // ---- attributes ----
    protected AttributeProto? Attribute(string name) => Node.Attribute.FirstOrDefault(a => a.Name == name);
    protected long Int(string name, long fallback) => Attribute(name) is { } a ? a.I : fallback;
    protected float Float(string name, float fallback) => Attribute(name) is { } a ? a.F : fallback;
    protected long[]? Ints(string name) => Attribute(name) is { } a ? a.Ints.ToArray() : null;
    protected string? String(string name) => Attribute(name) is { } a ? Encoding.UTF8.GetString(a.S.Span) : null;

    protected EngineException Error(string id, string message) =>
        new(id, EngineErrorKind.InvalidData, $"Node '{Name}' ({Node.OpType}): {message}") { Target = Name };

    protected EngineException Unsupported(string what) =>
        new("TrainingOpUnsupported", EngineErrorKind.NotImplemented, $"Node '{Name}' ({Node.OpType}): {what} is not supported by the training engine.") { Target = Name };

    protected Tensor Required(Tensor?[] inputs, int i)
    {
        if (i >= inputs.Length || inputs[i] is null) throw Error("TrainingInputMissing", $"input {i} is missing.");
        return inputs[i]!;
    }

    protected Tensor FloatInput(Tensor?[] inputs, int i)
    {
        var t = Required(inputs, i);
        if (t.IsInt) throw Unsupported($"an int64 tensor as input {i}");
        return t;
    }

    protected static int Axis(long axis, int rank) => (int)(axis < 0 ? axis + rank : axis);

    protected static string ShapeText(int[] s) => "[" + string.Join(",", s) + "]";
}
