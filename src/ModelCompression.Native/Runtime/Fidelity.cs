using System.Numerics.Tensors;
using ModelCompression.Native.Data;
using ModelCompression.Native.Kernels;
using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Runtime;

/// <summary>How closely one output of a model follows the same output of a reference model.</summary>
public sealed record OutputFidelity(
    string Output,
    long Values,
    double Cosine,
    double MaxAbsError,
    double MeanAbsError,
    double? Top1Agreement,
    double? ReferenceAccuracy,
    double? DifferenceAccuracy,
    double? ReferencePerplexity = null,
    double? DifferencePerplexity = null)
{
    /// <summary>How much the perplexity rose, as a fraction of the reference's (0.05: 5 % higher; negative: it fell); null without perplexities.</summary>
    public double? PerplexityRise => ReferencePerplexity is { } r && DifferencePerplexity is { } d && r > 0 ? d / r - 1 : null;
}

/// <summary>
/// Accumulates fidelity metrics for one output over batches, so memory stays one batch wide.
/// Top-1 is taken along the last axis (the class axis) when it has more than one entry. With labels, one per
/// position along the other axes, each model's accuracy is counted; for a sequence of scores ([batch, sequence,
/// classes], a language model's logits) the perplexity exp(mean cross-entropy) too, with the scores read as logits
/// (or as probabilities when every row is non-negative and sums to 1). Labels outside [0, classes) are ignored
/// (PyTorch's ignore index -100, padding).
/// </summary>
public sealed class FidelityAccumulator(string output)
{
    double dot, normRef, normDiff, maxAbs, sumAbs, crossEntropyRef, crossEntropyDiff;
    long values, rows, agree, refCorrect, diffCorrect, labelled;
    bool scoredSequence;

    public void Add(NamedArray reference, NamedArray difference, ReadOnlySpan<long> labels = default)
    {
        if (!reference.Shape.SequenceEqual(difference.Shape))
            throw new EngineException("OutputShapeMismatch", EngineErrorKind.InvalidData,
                $"Output '{output}' has shape [{string.Join(",", reference.Shape)}] in the reference but [{string.Join(",", difference.Shape)}] in the other model.");
        float[] a = reference.AsFloat(), b = difference.AsFloat();
        for (int i = 0; i < a.Length; i++)
        {
            double x = a[i], y = b[i], d = Math.Abs(x - y);
            dot += x * y; normRef += x * x; normDiff += y * y; sumAbs += d;
            if (d > maxAbs || double.IsNaN(d)) maxAbs = d;
        }
        values += a.Length;

        int classes = reference.Shape.Length >= 2 ? (int)reference.Shape[^1] : 0;
        if (classes < 2) return;
        int n = a.Length / classes;
        bool hasLabels = labels.Length == n;
        bool sequence = reference.Shape.Length >= 3;
        for (int r = 0; r < n; r++)
        {
            var ra = a.AsSpan(r * classes, classes);
            var rb = b.AsSpan(r * classes, classes);
            int ia = ArgMax(ra), ib = ArgMax(rb);
            if (ia == ib) agree++;
            if (hasLabels && labels[r] >= 0 && labels[r] < classes)
            {
                int label = (int)labels[r];
                if (ia == label) refCorrect++;
                if (ib == label) diffCorrect++;
                if (sequence) { crossEntropyRef += CrossEntropy(ra, label); crossEntropyDiff += CrossEntropy(rb, label); }
                labelled++;
            }
        }
        rows += n;
        scoredSequence |= sequence && hasLabels;
    }

    /// <summary>-log p(label): log-softmax of logits, or the log of a row that already is a probability distribution.</summary>
    internal static double CrossEntropy(ReadOnlySpan<float> scores, int label)
    {
        float max = TensorPrimitives.Max(scores), min = TensorPrimitives.Min(scores);
        if (min >= 0 && max <= 1 && Math.Abs(TensorPrimitives.Sum(scores) - 1) < 1e-3)
            return -Math.Log(Math.Max(scores[label], 1e-30));
        return Softmax.CrossEntropy(scores, label);
    }

    public OutputFidelity Result()
    {
        double cosine = normRef == 0 && normDiff == 0 ? 1 : normRef == 0 || normDiff == 0 ? 0 : dot / Math.Sqrt(normRef * normDiff);
        return new OutputFidelity(output, values, cosine, maxAbs, values == 0 ? 0 : sumAbs / values,
            rows == 0 ? null : (double)agree / rows,
            labelled == 0 ? null : (double)refCorrect / labelled,
            labelled == 0 ? null : (double)diffCorrect / labelled,
            scoredSequence && labelled > 0 ? Math.Exp(crossEntropyRef / labelled) : null,
            scoredSequence && labelled > 0 ? Math.Exp(crossEntropyDiff / labelled) : null);
    }

    static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}

/// <summary>Runs a reference and another model in ONNX Runtime on the same inputs and measures how far apart their outputs are.</summary>
public static class ModelComparer
{
    public static IReadOnlyList<OutputFidelity> Compare(OnnxModel reference, OnnxModel difference, InputSource inputs,
        SessionSettings? settings = null, IProgress<double>? progress = null, CancellationToken cancel = default)
    {
        using var a = new ModelSession(reference, settings, cancel);
        using var b = new ModelSession(difference, settings, cancel);
        // The cache a language model returns is its state for the next step (and pruning may change its shape): the
        // comparison judges what the model answers, its logits.
        var state = new[] { reference, difference }.SelectMany(m => DecoderContract.Of(m)?.Cache.Select(c => c.Output) ?? []).ToHashSet(StringComparer.Ordinal);
        var outputs = a.OutputNames.Where(o => b.OutputNames.Contains(o) && !state.Contains(o)).ToList();
        if (outputs.Count == 0)
            throw new EngineException("OutputsDisjoint", EngineErrorKind.InvalidArgument,
                $"Models '{reference.Name}' and '{difference.Name}' share no output name; they cannot be compared.");
        var acc = outputs.ToDictionary(o => o, o => new FidelityAccumulator(o));
        foreach (var (batch, labels, fraction) in ModelInputs.Batches(reference, inputs))
        {
            cancel.ThrowIfCancellationRequested();
            var ra = a.Run(batch, outputs, cancel);
            var rb = b.Run(ModelInputs.For(difference, batch), outputs, cancel);
            for (int i = 0; i < outputs.Count; i++) acc[outputs[i]].Add(ra[i], rb[i], labels);
            progress?.Report(fraction);
        }
        return outputs.Select(o => acc[o].Result()).ToList();
    }
}
