namespace ModelCompression.Native.Training;

/// <summary>
/// Float buffers for one training pass, recycled across passes. A step on a language model produces hundreds of
/// activation and gradient tensors of a few megabytes each; allocating them afresh every step costs garbage
/// collections and, worse on virtual machines, the first touch of every new page. The shapes repeat from step to step,
/// so buffers are kept by exact length: after the first step a pass allocates nothing. Everything rented since the
/// last <see cref="ReturnAll"/> belongs to the current pass; the graph returns it all when the next pass starts, and
/// returns a gradient early once no other gradient shares its storage.
/// </summary>
internal sealed class TensorArena
{
    readonly Dictionary<int, Stack<float[]>> free = [];
    readonly HashSet<float[]> live = new(ReferenceEqualityComparer.Instance);
    readonly bool pooled;

    public TensorArena(bool pooled = true) { this.pooled = pooled; }

    /// <summary>Plain allocation, nothing kept (ops used outside a graph).</summary>
    public static readonly TensorArena Unpooled = new(pooled: false);

    /// <summary>A buffer of exactly <paramref name="n"/> floats with unspecified contents.</summary>
    public float[] Rent(int n)
    {
        if (n == 0) return [];
        if (!pooled) return new float[n];
        var a = free.TryGetValue(n, out var stack) && stack.Count > 0 ? stack.Pop() : new float[n];
        live.Add(a);
        return a;
    }

    public float[] RentZeroed(int n)
    {
        var a = Rent(n);
        if (pooled) Array.Clear(a);
        return a;
    }

    /// <summary>Whether <paramref name="a"/> was rented in the current pass (and not returned yet).</summary>
    public bool Owns(float[] a) => pooled && live.Contains(a);

    /// <summary>Gives one buffer back before the pass ends; buffers the arena did not rent are ignored.</summary>
    public void Return(float[] a)
    {
        if (pooled && live.Remove(a)) Push(a);
    }

    /// <summary>Ends the pass: every buffer rented since the last call is free again.</summary>
    public void ReturnAll()
    {
        foreach (var a in live) Push(a);
        live.Clear();
    }

    /// <summary>Bytes held, rented or free (for benches).</summary>
    public long Bytes => 4L * (live.Sum(a => (long)a.Length) + free.Sum(kv => (long)kv.Key * kv.Value.Count));

    void Push(float[] a)
    {
        if (!free.TryGetValue(a.Length, out var stack)) free[a.Length] = stack = new Stack<float[]>();
        stack.Push(a);
    }
}
