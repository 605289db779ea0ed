namespace ModelCompression.Native.Training;

/// <summary>
/// A dense row-major tensor the training engine computes on: float32 values, or int64 values for the small
/// shape computations exporters put in graphs (Shape, Gather, Concat feeding a Reshape).
/// </summary>
public sealed class Tensor
{
    Tensor(int[] shape, float[] data, long[]? ints)
    {
        Shape = shape;
        Data = data;
        Ints = ints;
    }

    public int[] Shape { get; }
    /// <summary>Float values (empty for an int64 tensor).</summary>
    public float[] Data { get; }
    /// <summary>Int64 values, or null for a float tensor.</summary>
    public long[]? Ints { get; }
    public bool IsInt => Ints is not null;
    public int Rank => Shape.Length;
    public int Length => IsInt ? Ints!.Length : Data.Length;

    public static Tensor Float(int[] shape, float[] data)
    {
        if (Count(shape) != data.Length) throw new ArgumentException($"Shape [{string.Join(",", shape)}] does not hold {data.Length} values.");
        return new Tensor(shape, data, null);
    }

    public static Tensor Zeros(int[] shape) => new(shape, new float[Count(shape)], null);
    public static Tensor Int64(int[] shape, long[] data)
    {
        if (Count(shape) != data.Length) throw new ArgumentException($"Shape [{string.Join(",", shape)}] does not hold {data.Length} values.");
        return new Tensor(shape, [], data);
    }

    public static int Count(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (int d in shape) n = checked(n * d);
        return checked((int)n);
    }

    /// <summary>Same values, another shape (shares the storage).</summary>
    public Tensor Reshaped(int[] shape) => IsInt ? Int64(shape, Ints!) : Float(shape, Data);

    public float[] FloatValues() => IsInt ? Array.ConvertAll(Ints!, v => (float)v) : Data;
    public long[] IntValues() => Ints ?? Array.ConvertAll(Data, v => (long)v);

    public override string ToString() => $"{(IsInt ? "int64" : "float")}[{string.Join(",", Shape)}]";
}
