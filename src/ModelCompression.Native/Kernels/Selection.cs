using System.Numerics;
using System.Runtime.InteropServices;

namespace ModelCompression.Native.Kernels;

/// <summary>
/// The value at a given rank among many scores, found without sorting: <see cref="Value"/> is the
/// <c>count</c>-th smallest score, <see cref="Below"/> how many scores are strictly smaller. Selecting the
/// <c>count</c> smallest scores is then "every score &lt; Value, plus the first <c>count - Below</c> scores equal to Value".
/// </summary>
public readonly record struct RankThreshold(float Value, long Below, long Count)
{
    /// <summary>How many scores equal to <see cref="Value"/> are still to be taken, in order.</summary>
    public long TakeEqual => Count - Below;
}

/// <summary>
/// A set of non-negative scores in chunks (one per tensor, say) that can be produced again on demand, so a
/// selection over hundreds of millions of scores never holds them all at once.
/// </summary>
public interface IScoreSource
{
    int Chunks { get; }
    int ChunkLength(int chunk);
    /// <summary>Writes the chunk's scores (finite, non-negative) into <paramref name="destination"/>; called from several threads at once for different chunks.</summary>
    void Fill(int chunk, Span<float> destination);
}

/// <summary>
/// Rank selection over non-negative floats. For non-negative IEEE floats the bit pattern orders like the value,
/// so a two-level radix histogram (high 16 bits, then low 16 bits inside the one bucket that holds the rank)
/// finds the exact k-th value in two passes over the data, with two 65,536-entry tables and no copy or sort.
/// </summary>
public static class Selection
{
    const int Bins = 1 << 16;
    const long WorkerBudgetBytes = 1L << 30;

    /// <summary>The <paramref name="count"/>-th smallest of the scores (count ≥ 1), exactly.</summary>
    public static RankThreshold SmallestCount(IScoreSource source, long count, CancellationToken cancel = default)
    {
        long total = 0;
        for (int c = 0; c < source.Chunks; c++) total += source.ChunkLength(c);
        if (count < 1 || count > total) throw new ArgumentOutOfRangeException(nameof(count), $"count {count} is outside [1, {total}].");

        // Pass 1: histogram of the high 16 bits (sign, exponent, 7 mantissa bits).
        var high = Histogram(source, bucket: null, cancel);
        long before = 0;
        int bucket = 0;
        for (; bucket < Bins; bucket++)
        {
            if (before + high[bucket] >= count) break;
            before += high[bucket];
        }

        // Pass 2: inside that bucket, histogram of the low 16 bits.
        var low = Histogram(source, bucket, cancel);
        int lowBin = 0;
        for (; lowBin < Bins; lowBin++)
        {
            if (before + low[lowBin] >= count) break;
            before += low[lowBin];
        }
        float value = BitConverter.UInt32BitsToSingle(((uint)bucket << 16) | (uint)lowBin);
        return new RankThreshold(value, before, count);
    }

    /// <summary>The <paramref name="count"/>-th smallest of one span of non-negative scores.</summary>
    public static RankThreshold SmallestCount(ReadOnlySpan<float> scores, long count)
    {
        var copy = scores.ToArray();
        return SmallestCount(new ArraySource([copy]), count);
    }

    /// <summary>
    /// Marks, in <paramref name="mask"/>, the scores of one chunk that the threshold selects; <paramref name="equalBudget"/>
    /// is how many scores equal to the threshold may still be taken (decremented as they are). Returns how many were marked.
    /// </summary>
    public static long Mark(ReadOnlySpan<float> scores, RankThreshold threshold, ref long equalBudget, Span<bool> mask)
    {
        long marked = 0;
        float t = threshold.Value;
        for (int i = 0; i < scores.Length; i++)
        {
            float v = scores[i];
            bool take = v < t || (v == t && equalBudget > 0 && equalBudget-- > 0);
            mask[i] = take;
            if (take) marked++;
        }
        return marked;
    }

    /// <summary>
    /// Sets to zero the values whose scores the threshold selects (every score below it, then scores equal to it while
    /// <paramref name="equalBudget"/> lasts). Returns how many were selected.
    /// </summary>
    public static long ZeroSelected(ReadOnlySpan<float> scores, RankThreshold threshold, ref long equalBudget, Span<float> values)
    {
        float t = threshold.Value;
        long selected = 0;
        int i = 0;
        // Scores below the threshold: a branch-free vector select (about half of them are taken, at random places).
        if (Vector.IsHardwareAccelerated && scores.Length >= Vector<float>.Count)
        {
            var limit = new Vector<float>(t);
            var sv = MemoryMarshal.Cast<float, Vector<float>>(scores);
            var vv = MemoryMarshal.Cast<float, Vector<float>>(values);
            for (int k = 0; k < sv.Length; k++)
            {
                var below = Vector.LessThan(sv[k], limit);
                vv[k] = Vector.ConditionalSelect(below, Vector<float>.Zero, vv[k]);
                selected -= Vector.Sum(below);   // true lanes are -1
            }
            i = sv.Length * Vector<float>.Count;
        }
        for (; i < scores.Length; i++)
            if (scores[i] < t) { values[i] = 0f; selected++; }
        // Scores equal to the threshold, in order, while the budget lasts (rare: a scan that almost never branches).
        if (equalBudget > 0)
            for (int k = 0; k < scores.Length && equalBudget > 0; k++)
                if (scores[k] == t) { values[k] = 0f; selected++; equalBudget--; }
        return selected;
    }

    /// <summary>
    /// One pass over every chunk, chunks shared out among the threads as they come free: each thread fills its own
    /// scores and counts into its own table, and the tables are summed (counts: the result does not depend on the
    /// order). Without <paramref name="bucket"/>, the high 16 bits are counted; with it, the low 16 bits of the scores
    /// in that bucket.
    /// </summary>
    static long[] Histogram(IScoreSource source, int? bucket, CancellationToken cancel)
    {
        // Each worker holds a score buffer of the longest chunk (and a source may read through one as large): a budget
        // keeps a machine with many cores from holding more of a large model at once than it needs to.
        long longest = 1;
        for (int c = 0; c < source.Chunks; c++) longest = Math.Max(longest, source.ChunkLength(c));
        int workers = (int)Math.Clamp(Math.Min(Math.Min(Parallelism.Threads, source.Chunks), WorkerBudgetBytes / (8 * longest)), 1, int.MaxValue);
        var tables = new long[workers][];
        int next = -1;
        Parallelism.Each(0, workers, w =>
        {
            var counts = tables[w] = new long[Bins];
            var scores = Array.Empty<float>();
            for (int c; (c = Interlocked.Increment(ref next)) < source.Chunks;)
            {
                cancel.ThrowIfCancellationRequested();
                int n = source.ChunkLength(c);
                if (scores.Length < n) scores = new float[n];
                var s = scores.AsSpan(0, n);
                source.Fill(c, s);
                if (bucket is not { } high)
                    foreach (float v in s) counts[Bits(v) >> 16]++;
                else
                    foreach (float v in s)
                    {
                        uint bits = Bits(v);
                        if ((bits >> 16) == (uint)high) counts[bits & 0xFFFF]++;
                    }
            }
        });
        for (int w = 1; w < workers; w++)
            for (int i = 0; i < Bins; i++) tables[0][i] += tables[w][i];
        return tables[0];
    }

    static uint Bits(float v)
    {
        uint b = BitConverter.SingleToUInt32Bits(v);
        // -0 and any stray negative (never expected) rank as 0; NaN ranks last.
        if ((b & 0x8000_0000u) != 0) return float.IsNaN(v) ? 0x7FFF_FFFFu : 0u;
        return b;
    }

    sealed class ArraySource(float[][] chunks) : IScoreSource
    {
        public int Chunks => chunks.Length;
        public int ChunkLength(int chunk) => chunks[chunk].Length;
        public void Fill(int chunk, Span<float> destination) => chunks[chunk].CopyTo(destination);
    }
}
