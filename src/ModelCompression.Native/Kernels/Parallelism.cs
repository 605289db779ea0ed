namespace ModelCompression.Native.Kernels;

/// <summary>Splits a range over the cores for memory-bound loops (elementwise ops, normalizations, the loss).</summary>
internal static class Parallelism
{
    /// <summary>Threads a kernel may use: <see cref="Gemm.MaxThreads"/>, the engine's one knob, or all processors.</summary>
    public static int Threads => Gemm.MaxThreads > 0 ? Math.Min(Gemm.MaxThreads, Environment.ProcessorCount) : Environment.ProcessorCount;

    /// <summary>
    /// Runs <paramref name="body"/>(start, end) over [0, <paramref name="count"/>) in contiguous pieces of about
    /// <paramref name="grain"/> items; on the calling thread alone when the range is small. The pieces are small (tens
    /// of microseconds of work) on purpose: the calling thread takes every piece no other thread has started, so on a
    /// busy machine, where a worker may not run for milliseconds, the loop waits for at most one small piece.
    /// </summary>
    public static void For(int count, int grain, Action<int, int> body)
    {
        int threads = Threads;
        int pieces = Math.Min(256, count / Math.Max(1, grain));
        if (threads <= 1 || pieces <= 1)
        {
            if (count > 0) body(0, count);
            return;
        }
        Parallel.For(0, pieces, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
            body((int)((long)count * i / pieces), (int)((long)count * (i + 1) / pieces)));
    }
}
