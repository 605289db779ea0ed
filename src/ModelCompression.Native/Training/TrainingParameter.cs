namespace ModelCompression.Native.Training;

/// <summary>A float initializer of the graph: its current value, its gradient after a backward pass, and whether it trains.</summary>
public sealed class TrainingParameter
{
    internal TrainingParameter(string name, Tensor value, bool trainable)
    {
        Name = name;
        Value = value;
        Grad = new float[value.Length];
        Trainable = trainable;
    }

    public string Name { get; }
    public Tensor Value { get; }
    public float[] Grad { get; }
    /// <summary>False for frozen tensors and for state that is not learned by gradient (BatchNormalization running statistics).</summary>
    public bool Trainable { get; internal set; }
    /// <summary>Whether a gradient reaches it from the outputs.</summary>
    public bool ReceivesGradient { get; internal set; }
    /// <summary>An additive attention mask stored as an initializer (see <see cref="TrainingGraph.IsAdditiveMask"/>): a constant, never trained.</summary>
    public bool IsMask { get; internal set; }
    /// <summary>A rotary position table, cos or sin (see <see cref="TrainingGraph.IsRotaryPair"/>): a constant, never trained.</summary>
    public bool IsRotaryTable { get; internal set; }
}

/// <summary>Time spent in the nodes of one op type since the graph was loaded (or <see cref="TrainingGraph.ResetTiming"/>).</summary>
public sealed record OpTiming(string OpType, int Nodes, double ForwardSeconds, double BackwardSeconds);

public sealed record TrainingGraphOptions
{
    /// <summary>Initializer names that keep their values.</summary>
    public IReadOnlyCollection<string> Freeze { get; init; } = [];
    /// <summary>Also compute gradients for the graph inputs (tests use it for numerical checks).</summary>
    public bool InputGradients { get; init; }
    /// <summary>Train weights that the exporter stored in Constant nodes (they become initializers).</summary>
    public bool PromoteWeightConstants { get; init; } = true;
    /// <summary>Seed of the random source Dropout draws from.</summary>
    public int Seed { get; init; } = 1;
}
