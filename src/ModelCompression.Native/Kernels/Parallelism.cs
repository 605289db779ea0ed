namespace ModelCompression.Native.Kernels;

/// <summary>
/// The engine's one parallel loop: every kernel and stage runs its parallel work through here, so the engine's thread
/// limit (<see cref="Gemm.MaxThreads"/>) holds everywhere and a failure inside reaches the caller as the exception
/// thrown, not wrapped in an <see cref="AggregateException"/>.
/// </summary>
internal static class Parallelism
{
    /// <summary>Threads a kernel may use: <see cref="Gemm.MaxThreads"/>, the engine's one knob, or all processors.</summary>
    public static int Threads => Gemm.MaxThreads > 0 ? Math.Min(Gemm.MaxThreads, Environment.ProcessorCount) : Environment.ProcessorCount;

    /// <summary>
    /// Runs <paramref name="body"/>(i) for every i in [<paramref name="from"/>, <paramref name="to"/>), on at most
    /// <paramref name="threads"/> threads (0: <see cref="Threads"/>); on the calling thread alone when one suffices.
    /// </summary>
    public static void Each(int from, int to, Action<int> body, int threads = 0)
    {
        threads = threads > 0 ? Math.Min(threads, Threads) : Threads;
        if (to - from <= 1 || threads <= 1)
        {
            for (int i = from; i < to; i++) body(i);
            return;
        }
        try { Parallel.For(from, to, new ParallelOptions { MaxDegreeOfParallelism = threads }, body); }
        catch (AggregateException e) { throw Unwrap(e); }
    }

    /// <summary>
    /// Runs <paramref name="body"/>(start, end) over [0, <paramref name="count"/>) in contiguous pieces of about
    /// <paramref name="grain"/> items; on the calling thread alone when the range is small. The pieces are small (tens
    /// of microseconds of work) on purpose: the calling thread takes every piece no other thread has started, so on a
    /// busy machine, where a worker may not run for milliseconds, the loop waits for at most one small piece.
    /// </summary>
    public static void For(int count, int grain, Action<int, int> body)
    {
        int pieces = Math.Min(256, count / Math.Max(1, grain));
        if (Threads <= 1 || pieces <= 1)
        {
            if (count > 0) body(0, count);
            return;
        }
        Each(0, pieces, i => body((int)((long)count * i / pieces), (int)((long)count * (i + 1) / pieces)));
    }

    /// <summary>
    /// Runs body over [0, n) cut into contiguous chunks, one per thread, in parallel when the work (multiply-adds per
    /// item) is worth it. The chunking depends only on n and the thread count.
    /// </summary>
    public static void Chunks(int n, long workPerItem, Action<int, int> body)
    {
        int workers = Math.Min(n, Threads);
        if (workers <= 1 || workPerItem * n < 1 << 18) { if (n > 0) body(0, n); return; }
        Each(0, workers, i => body((int)((long)n * i / workers), (int)((long)n * (i + 1) / workers)));
    }

    /// <summary>The first <see cref="EngineException"/> or <see cref="OperationCanceledException"/> inside, rethrown with its own stack.</summary>
    static Exception Unwrap(AggregateException e)
    {
        var flat = e.Flatten().InnerExceptions;
        var chosen = flat.FirstOrDefault(x => x is EngineException) ?? flat.FirstOrDefault(x => x is OperationCanceledException) ?? (flat.Count == 1 ? flat[0] : null);
        if (chosen is null) return e;
        System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(chosen).Throw();
        return chosen; // not reached
    }
}
