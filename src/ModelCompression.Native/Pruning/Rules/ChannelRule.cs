using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// How channels travel through one family of operators (one small class per family, like ONNX Runtime's quantization
/// registry): given where the group's units sit in a node's inputs, where they sit in its output, which constants
/// and shape entries must be edited, or why the node stops them. A new operator is a new rule and a test.
/// </summary>
internal abstract class ChannelRule
{
    /// <summary>The operator types this rule handles, in <see cref="Domain"/>.</summary>
    public abstract IReadOnlyList<string> OpTypes { get; }
    /// <summary>The operator domain: "" for the ONNX standard, "com.microsoft" for ONNX Runtime's contrib operators.</summary>
    public virtual string Domain => "";
    /// <summary>Whether the rule follows heads merged with the batch axis (they behave like a batch dimension).</summary>
    public virtual bool FollowsInterleaved => false;

    /// <summary>
    /// Follows the channels through <paramref name="node"/>: the track of its first output, or null when the node
    /// consumes them (a sink: the edits are recorded) or the walk stops (<see cref="ChannelWalk.Fail"/>).
    /// </summary>
    public abstract Track? Propagate(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs);

    /// <summary>For a node that is a member of the group: the edits of its own weights and the track of its output channels.</summary>
    public virtual Track? Start(ChannelWalk w, int member) =>
        w.Fail($"{ChannelWalk.Describe(w.Group.Members[member].Node)} cannot be a source of channels");

    /// <summary>
    /// For a node this rule prunes as a layer (its weight, input 1, a constant): how the weight maps to outputs and
    /// inputs; null with <paramref name="why"/> when the weight does not fit (nodes of other rules: null, no reason).
    /// </summary>
    public virtual LayerShape? Layer(NodeProto node, TensorProto weight, out string? why)
    {
        why = null;
        return null;
    }

    /// <summary>Whether the node's inputs after the first are weights (constants a layer owns, stored as initializers).</summary>
    public virtual bool ReadsWeights => false;

    /// <summary>The node's FLOPs (2 per multiply-add) at the probed shapes; 0 for operators the cost model does not count.</summary>
    public virtual long Flops(NodeProto node, ShapeProbe probe) => 0;

    /// <summary>
    /// For a slice of this node's constant weight along its input axis (the node consumes the channels): the data input
    /// and its channel axis whose activation norms weigh the sliced rows, else null.
    /// </summary>
    public virtual (string Tensor, int Axis)? SinkInput(NodeProto node, SliceEdit edit) => null;

    /// <summary>A source of units other than a layer's outputs (an attention operator's heads), or null with <paramref name="why"/> when it cannot be one.</summary>
    public virtual Member? Source(NodeProto node, GraphIndex index, out string? why)
    {
        why = null;
        return null;
    }

    /// <summary>Whether input <paramref name="input"/> of the node reads a table whose last axis carries channels (an embedding lookup).</summary>
    public virtual bool ReadsTable(NodeProto node, int input) => false;

    /// <summary>Right after a layer: how much the node scales each of its <paramref name="channels"/> (a BatchNormalization), else null.</summary>
    public virtual float[]? ChannelScale(NodeProto node, GraphIndex index, int channels) => null;

    /// <summary>For a normalization the rule follows: what it normalizes and where its scale and bias are (for refitting them), else null.</summary>
    public virtual Normalization? Normalizes(NodeProto node) => null;

    /// <summary>The single tracked data input (input 0), or a failure naming the input the rule does not follow.</summary>
    protected static Track? DataInput(ChannelWalk w, NodeProto node, IReadOnlyList<TrackedInput> inputs) =>
        inputs.Count == 1 && inputs[0].Index == 0 ? inputs[0].Track
            : w.Fail($"{ChannelWalk.Describe(node)} reads the channels through input {inputs.First(x => x.Index != 0).Index}, which the rewrite does not follow");
}

/// <summary>
/// What a normalization computes, for refitting its scale and bias: it normalizes the sum of inputs <c>Summands</c>
/// (computed or constant) over the last axis, subtracting the mean when <c>Centred</c>, then scales by input
/// <c>Scale</c> and adds input <c>Bias</c> (none for RMS forms).
/// </summary>
internal sealed record Normalization(int[] Summands, int Scale, int? Bias, bool Centred, float Epsilon);

/// <summary>The registry: the rule for each operator type.</summary>
internal static class ChannelRules
{
    static readonly Dictionary<(string Domain, string OpType), ChannelRule> Registry = Build(
        new UnaryRule(), new ElementwiseRule(), new ConcatRule(), new NormalizationRule(), new LayerNormRule(),
        new PoolRule(), new ResizeRule(), new PadRule(), new TransposeRule(), new SqueezeRule(), new FlattenRule(), new ReshapeRule(),
        new ConvRule(), new LinearRule(), new ShapeRule(), new GatherRule(), new SliceRule(), new SoftmaxRule(), new ReduceRule(),
        new AttentionRule(), new MultiHeadAttentionRule(), new ExpandRule(), new SkipNormRule(), new ContribUnaryRule(), new FusedMatMulRule(), new TileRule(), new GroupQueryAttentionRule(), new RotaryEmbeddingRule(), new MatMulNBitsRule());

    static Dictionary<(string, string), ChannelRule> Build(params ChannelRule[] rules)
    {
        var map = new Dictionary<(string, string), ChannelRule>();
        foreach (var rule in rules)
            foreach (var op in rule.OpTypes) map.Add((rule.Domain, op), rule);
        return map;
    }

    /// <summary>The rule for a node, or null when channels cannot be followed through it.</summary>
    public static ChannelRule? For(NodeProto node) => Registry.GetValueOrDefault((node.Domain == "ai.onnx" ? "" : node.Domain, node.OpType));

    /// <summary>Every registered (domain, operator type).</summary>
    public static IEnumerable<(string Domain, string OpType)> Operators => Registry.Keys;
}
