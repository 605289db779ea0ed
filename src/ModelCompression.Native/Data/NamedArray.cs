namespace ModelCompression.Native.Data;

/// <summary>
/// A named, dense, row-major array: what data files hold and what models take and return.
/// <see cref="Data"/> is one of float[], double[], long[], int[], byte[], sbyte[], bool[] or Half[].
/// </summary>
public sealed class NamedArray
{
    public NamedArray(string name, long[] shape, Array data)
    {
        long count = shape.Aggregate(1L, (a, d) => checked(a * d));
        if (count != data.Length)
            throw new EngineException("ArrayShapeMismatch", EngineErrorKind.InvalidData, $"Array '{name}' has {data.Length} values but shape [{string.Join(",", shape)}].");
        Name = name;
        Shape = shape;
        Data = data;
    }

    public string Name { get; }
    public long[] Shape { get; }
    public Array Data { get; }
    public int Length => Data.Length;
    public Type ElementType => Data.GetType().GetElementType()!;
    public long Rows => Shape.Length == 0 ? 1 : Shape[0];

    public NamedArray Rename(string name) => new(name, Shape, Data);

    /// <summary>Rows [start, start+count) along the first dimension.</summary>
    public NamedArray Slice(long start, long count)
    {
        if (Shape.Length == 0) return this;
        long rowSize = Length / Math.Max(1, Shape[0]);
        var data = Array.CreateInstance(ElementType, count * rowSize);
        Array.Copy(Data, start * rowSize, data, 0, count * rowSize);
        var shape = (long[])Shape.Clone();
        shape[0] = count;
        return new NamedArray(Name, shape, data);
    }

    /// <summary>The values as float32 (a copy unless they already are).</summary>
    public float[] AsFloat() => Data switch
    {
        float[] f => f,
        double[] d => Array.ConvertAll(d, v => (float)v),
        long[] l => Array.ConvertAll(l, v => (float)v),
        int[] i => Array.ConvertAll(i, v => (float)v),
        byte[] b => Array.ConvertAll(b, v => (float)v),
        sbyte[] s => Array.ConvertAll(s, v => (float)v),
        bool[] b => Array.ConvertAll(b, v => v ? 1f : 0f),
        Half[] h => Array.ConvertAll(h, v => (float)v),
        _ => throw new EngineException("ArrayTypeUnsupported", EngineErrorKind.InvalidData, $"Array '{Name}' has unsupported element type {ElementType.Name}."),
    };

    public long[] AsInt64() => Data switch
    {
        long[] l => l,
        int[] i => Array.ConvertAll(i, v => (long)v),
        byte[] b => Array.ConvertAll(b, v => (long)v),
        sbyte[] s => Array.ConvertAll(s, v => (long)v),
        bool[] b => Array.ConvertAll(b, v => v ? 1L : 0L),
        float[] f => Array.ConvertAll(f, v => (long)v),
        double[] d => Array.ConvertAll(d, v => (long)v),
        _ => throw new EngineException("ArrayTypeUnsupported", EngineErrorKind.InvalidData, $"Array '{Name}' has unsupported element type {ElementType.Name}."),
    };

    public override string ToString() => $"{Name}: {ElementType.Name}[{string.Join(",", Shape)}]";
}
