using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Pruning;

public class SelectionTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(17)]
    [InlineData(500)]
    [InlineData(1000)]
    public void FindsTheExactRankLikeASort(int count)
    {
        var rng = new Random(count);
        var values = Enumerable.Range(0, 1000).Select(_ => (float)Math.Abs(rng.NextDouble() * 3 - 1.5) * (rng.Next(4) == 0 ? 1e-3f : 1f)).ToArray();
        var sorted = values.Order().ToArray();
        var t = Selection.SmallestCount(values, count);
        Assert.Equal(sorted[count - 1], t.Value);
        Assert.Equal(sorted.Count(v => v < t.Value), t.Below);
    }

    /// <summary>Many chunks of uneven length, counted on several threads: the same rank as one sort over all of them.</summary>
    [Theory]
    [InlineData(1)]
    [InlineData(12_345)]
    [InlineData(60_000)]
    public void FindsTheExactRankOverManyChunksLikeOneSort(int count)
    {
        var rng = new Random(count);
        var chunks = Enumerable.Range(0, 23).Select(c => Enumerable.Range(0, 100 + 311 * c).Select(_ => (float)rng.Next(5000) / 7).ToArray()).ToArray();
        var sorted = chunks.SelectMany(c => c).Order().ToArray();
        var t = Selection.SmallestCount(new ChunkedScores(chunks), count);
        Assert.Equal(sorted[count - 1], t.Value);
        Assert.Equal(sorted.Count(v => v < t.Value), t.Below);
    }

    sealed class ChunkedScores(float[][] chunks) : IScoreSource
    {
        public int Chunks => chunks.Length;
        public int ChunkLength(int chunk) => chunks[chunk].Length;
        public void Fill(int chunk, Span<float> destination) => chunks[chunk].CopyTo(destination);
    }

    [Theory]
    [InlineData(37, 10)]
    [InlineData(1001, 500)]
    [InlineData(4096, 4000)]
    public void ZeroSelectedMatchesTheScalarRuleWithTies(int length, int count)
    {
        var rng = new Random(length);
        var scores = Enumerable.Range(0, length).Select(_ => (float)rng.Next(50)).ToArray();   // many ties
        var values = Enumerable.Range(0, length).Select(i => i + 1f).ToArray();
        var t = Selection.SmallestCount(scores, count);
        long budget = t.TakeEqual, budgetRef = t.TakeEqual;
        var mask = new bool[length];
        Selection.Mark(scores, t, ref budgetRef, mask);
        long zeroed = Selection.ZeroSelected(scores, t, ref budget, values);
        Assert.Equal(count, zeroed);
        Assert.Equal(mask, values.Select(v => v == 0).ToArray());
        Assert.Equal(0, budget);
    }

    [Fact]
    public void TiesAreTakenInOrderUntilTheCountIsExact()
    {
        var values = new float[] { 0, 0, 1, 1, 1, 1, 2, 0.5f };
        var t = Selection.SmallestCount(values, 5);
        Assert.Equal(1f, t.Value);
        Assert.Equal(3, t.Below);
        long budget = t.TakeEqual;
        var mask = new bool[values.Length];
        long marked = Selection.Mark(values, t, ref budget, mask);
        Assert.Equal(5, marked);
        Assert.Equal([true, true, true, true, false, false, false, true], mask);
    }
}

public class ZeroCountTests
{
    [Fact]
    public void CountsPositiveAndNegativeZeros()
    {
        var values = new float[1000];
        for (int i = 0; i < values.Length; i++) values[i] = i % 3 == 0 ? 0f : i % 3 == 1 ? -0f : 1f;
        var raw = System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan());
        Assert.Equal(values.Count(v => v == 0f), TensorData.CountZeros(raw, DT.Float));
        var halves = values.Select(v => BitConverter.HalfToUInt16Bits((Half)v)).ToArray();
        Assert.Equal(values.Count(v => v == 0f), TensorData.CountZeros(System.Runtime.InteropServices.MemoryMarshal.AsBytes(halves.AsSpan()), DT.Float16));
    }
}
