using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Native.Pruning;

/// <summary>
/// Unstructured (per layer or global) and N:M pruning: zeroes the least important weights of MatMul/Gemm/Conv
/// weight tensors in place of the copy. The model keeps its shape; ONNX Runtime still runs it densely.
/// </summary>
internal sealed class UnstructuredPruner : IScoreSource
{
    readonly List<WeightTarget> targets;
    readonly PruningOptions options;
    readonly Dictionary<string, double[]>? activations;
    readonly int seed;

    public UnstructuredPruner(List<WeightTarget> targets, PruningOptions options, Dictionary<string, double[]>? activations)
    {
        this.targets = targets;
        this.options = options;
        this.activations = activations;
        seed = options.Seed ?? 0;
    }

    public int Chunks => targets.Count;
    public int ChunkLength(int chunk) => (int)targets[chunk].Elements;
    public void Fill(int chunk, Span<float> destination)
    {
        // The weights are read straight into the scores' buffer and scored in place: no array per read.
        if (options.Criterion != PruningCriterion.Random) TensorData.ToFloat(targets[chunk].Tensor, destination);
        Scores(chunk, destination, destination);
    }

    /// <summary>Prunes every target; returns its zeros before and after, and its element count, per target.</summary>
    public PrunedCounts[] Run(GraphProto graph, IProgress<double>? progress, CancellationToken cancel)
    {
        var result = new PrunedCounts[targets.Count];
        if (options.Pattern is { } pattern)
        {
            for (int t = 0; t < targets.Count; t++)
            {
                cancel.ThrowIfCancellationRequested();
                result[t] = ApplyPattern(graph, t, pattern);
                progress?.Report((t + 1.0) / targets.Count);
            }
            return result;
        }

        double rate = options.Rate!.Value;
        if (options.Scope == PruningScope.Global)
        {
            // One threshold over raw scores: |w| (or |w|·‖x‖, the size of the weight's contribution) is in the same
            // units in every layer, so layers with a large fan-in (small weights) give up more and small input layers are
            // protected. Dividing each layer's scores by their RMS was measured worse (wine_mlp 50%: 96.3% vs 100% accuracy).
            long total = targets.Sum(t => t.Elements);
            long count = (long)Math.Round(rate * total, MidpointRounding.AwayFromZero);
            progress?.Report(0.2);
            if (count == 0) { for (int t = 0; t < targets.Count; t++) result[t] = Untouched(targets[t]); return result; }
            var threshold = Selection.SmallestCount(this, count, cancel);
            progress?.Report(0.6);
            long budget = threshold.TakeEqual;
            for (int t = 0; t < targets.Count; t++)
            {
                cancel.ThrowIfCancellationRequested();
                result[t] = ApplyThreshold(graph, t, threshold, ref budget);
                progress?.Report(0.6 + 0.4 * (t + 1) / targets.Count);
            }
            return result;
        }

        for (int t = 0; t < targets.Count; t++)
        {
            cancel.ThrowIfCancellationRequested();
            long count = (long)Math.Round(rate * targets[t].Elements, MidpointRounding.AwayFromZero);
            if (count == 0) { result[t] = Untouched(targets[t]); continue; }
            var threshold = Selection.SmallestCount(new SingleChunk(this, t), count, cancel);
            long budget = threshold.TakeEqual;
            result[t] = ApplyThreshold(graph, t, threshold, ref budget);
            progress?.Report((t + 1.0) / targets.Count);
        }
        return result;
    }

    float[] scratch = [];

    PrunedCounts ApplyThreshold(GraphProto graph, int t, RankThreshold threshold, ref long budget)
    {
        var target = targets[t];
        int n = ChunkLength(t);
        if (scratch.Length < n) scratch = new float[n];
        var scores = scratch.AsSpan(0, n);
        byte[] raw = TensorData.RawBytesCopy(target.Tensor);
        // float32 scores come from the copy about to be changed: one read of the tensor, not two.
        if (IsHalf(target)) Fill(t, scores);
        else Scores(t, MemoryMarshal.Cast<byte, float>(raw.AsSpan()), scores);
        long before = ZeroCount(raw, target);
        if (IsHalf(target))
        {
            // float16 and bfloat16: the same selection, applied to 16-bit values.
            var mask = new bool[n];
            Selection.Mark(scores, threshold, ref budget, mask);
            ZeroMasked(raw, mask, half: true);
        }
        else Selection.ZeroSelected(scores, threshold, ref budget, MemoryMarshal.Cast<byte, float>(raw.AsSpan()));
        Replace(graph, target, raw);
        return new PrunedCounts(before, ZeroCount(raw, target), n);
    }

    static PrunedCounts Untouched(WeightTarget target)
    {
        long zeros = TensorData.CountZeros(target.Tensor);
        return new PrunedCounts(zeros, zeros, target.Elements);
    }

    static long ZeroCount(byte[] raw, WeightTarget target) => TensorData.CountZeros(raw, (TensorProto.Types.DataType)target.Tensor.DataType);

    /// <summary>Sets the masked values of raw float32 or 16-bit (float16, bfloat16) weights to +0 (all bits clear in every one).</summary>
    static void ZeroMasked(byte[] raw, bool[] mask, bool half)
    {
        if (half)
        {
            var bits = MemoryMarshal.Cast<byte, ushort>(raw.AsSpan());
            for (int i = 0; i < mask.Length; i++) if (mask[i]) bits[i] = 0;
        }
        else
        {
            var values = MemoryMarshal.Cast<byte, float>(raw.AsSpan());
            for (int i = 0; i < mask.Length; i++) if (mask[i]) values[i] = 0f;
        }
    }

    static bool IsHalf(WeightTarget t) => t.Tensor.DataType is (int)TensorProto.Types.DataType.Float16 or (int)TensorProto.Types.DataType.Bfloat16;

    PrunedCounts ApplyPattern(GraphProto graph, int t, SparsityPattern pattern)
    {
        var target = targets[t];
        int n = ChunkLength(t);
        var scores = new float[n];
        Fill(t, scores);
        byte[] raw = TensorData.RawBytesCopy(target.Tensor);
        long before = ZeroCount(raw, target);
        var mask = new bool[n];
        Span<int> group = stackalloc int[pattern.M];
        for (int o = 0; o < target.Outputs; o++)
        {
            for (int start = 0; start < target.Inputs; start += pattern.M)
            {
                int size = Math.Min(pattern.M, target.Inputs - start);
                for (int j = 0; j < size; j++) group[j] = target.FlatIndex(o, target.GroupOrder(start + j));
                // Keep the N largest scores of the group (earlier position wins a tie): zero the rest.
                for (int j = 0; j < size; j++)
                {
                    float s = scores[group[j]];
                    int larger = 0;
                    for (int q = 0; q < size; q++)
                    {
                        float r = scores[group[q]];
                        if (r > s || (r == s && q < j)) larger++;
                    }
                    if (larger >= pattern.N) mask[group[j]] = true;
                }
            }
        }
        ZeroMasked(raw, mask, IsHalf(target));
        Replace(graph, target, raw);
        return new PrunedCounts(before, ZeroCount(raw, target), n);
    }

    /// <summary>Raw (un-normalized) scores of one target from its <paramref name="values"/>, in flat order (the two may be one span).</summary>
    void Scores(int t, ReadOnlySpan<float> values, Span<float> destination)
    {
        var target = targets[t];
        switch (options.Criterion)
        {
            case PruningCriterion.Random:
                {
                    var rng = RandomScores.For(seed, target.Name, t);
                    for (int i = 0; i < destination.Length; i++) destination[i] = rng.NextSingle();
                    break;
                }
            case PruningCriterion.Activation:
                {
                    var norms = ActivationNorms(target);
                    TensorPrimitives.Abs(values, destination);
                    for (int o = 0; o < target.Outputs; o++)
                        for (int i = 0; i < target.Inputs; i++)
                        {
                            int f = target.FlatIndex(o, i);
                            destination[f] *= norms[target.ActivationChannel(o, i)];
                        }
                    break;
                }
            default:
                TensorPrimitives.Abs(values, destination);
                break;
        }
    }

    readonly System.Collections.Concurrent.ConcurrentDictionary<string, float[]> normCache = new(StringComparer.Ordinal);

    float[] ActivationNorms(WeightTarget target) => normCache.GetOrAdd(target.Name, _ => ComputeActivationNorms(target));

    float[] ComputeActivationNorms(WeightTarget target)
    {
        var sum = new double[target.ActivationChannels];
        foreach (var (tensor, _) in target.ActivationInputs())
        {
            var norms = activations![tensor];
            if (norms.Length != sum.Length)
                throw new EngineException("PruningActivationShape", EngineErrorKind.InvalidData,
                    $"Activation '{tensor}' has {norms.Length} channels but weight '{target.Name}' expects {sum.Length}.");
            for (int c = 0; c < sum.Length; c++) sum[c] += norms[c] * norms[c];
        }
        // Shared weights: the norm over every place the weight is used.
        return sum.Select(v => (float)Math.Sqrt(v)).ToArray();
    }

    static void Replace(GraphProto graph, WeightTarget target, byte[] raw)
    {
        var t = target.Tensor;
        var replacement = TensorData.FromRaw(t.Name, (TensorProto.Types.DataType)t.DataType, [.. t.Dims], raw);
        replacement.DocString = t.DocString;
        // By reference: TensorProto.Equals compares contents, which would read every tensor's bytes.
        int index = 0;
        while (!ReferenceEquals(graph.Initializer[index], target.Tensor)) index++;
        graph.Initializer[index] = replacement;
        target.Tensor = replacement;
    }

    sealed class SingleChunk(UnstructuredPruner owner, int chunk) : IScoreSource
    {
        public int Chunks => 1;
        public int ChunkLength(int c) => owner.ChunkLength(chunk);
        public void Fill(int c, Span<float> destination) => owner.Fill(chunk, destination);
    }
}

/// <summary>Zeros in one pruned weight before and after, and its element count.</summary>
internal readonly record struct PrunedCounts(long ZerosBefore, long Zeros, long Elements);
