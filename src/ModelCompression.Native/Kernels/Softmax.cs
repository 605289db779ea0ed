using System.Numerics.Tensors;

namespace ModelCompression.Native.Kernels;

/// <summary>
/// Softmax, log-softmax and what is built on them (cross-entropy, perplexity), written once for the engine:
/// Compare-Model's perplexity, distillation's soft-target loss, the training graph's Softmax and LogSoftmax, and the
/// benches use it. Rows are shifted by their maximum so no exponential overflows (TensorPrimitives.SoftMax does not
/// shift: it gives NaN above 88), and the log-sum-exp is summed in double precision (exponentials of 256 values at a
/// time, vectorised), so a vocabulary of any size loses nothing to rounding.
/// </summary>
public static class Softmax
{
    const int Chunk = 256;

    /// <summary><paramref name="y"/> = softmax(x); <paramref name="y"/> may be <paramref name="x"/>.</summary>
    public static void Row(ReadOnlySpan<float> x, Span<float> y)
    {
        float max = TensorPrimitives.Max(x);
        TensorPrimitives.Subtract(x, max, y);
        TensorPrimitives.Exp(y, y);
        TensorPrimitives.Multiply(y, 1f / TensorPrimitives.Sum(y), y);
    }

    /// <summary><paramref name="y"/> = log softmax(scale·x), with a positive <paramref name="scale"/> (1/temperature); <paramref name="y"/> may be <paramref name="x"/>.</summary>
    public static void LogRow(ReadOnlySpan<float> x, Span<float> y, float scale = 1f)
    {
        var (max, logSum) = Parts(x, scale);
        // shift by the maximum first: values near it keep their low bits
        if (scale == 1f) TensorPrimitives.Subtract(x, max, y);
        else
        {
            TensorPrimitives.Multiply(x, scale, y);
            TensorPrimitives.Subtract(y, max, y);
        }
        TensorPrimitives.Subtract(y, (float)logSum, y);
    }

    /// <summary>log Σ exp(scale·x), with a positive <paramref name="scale"/>.</summary>
    public static double LogSumExp(ReadOnlySpan<float> x, float scale = 1f)
    {
        var (max, logSum) = Parts(x, scale);
        return max + logSum;
    }

    /// <summary>−log softmax(logits)[label]: the cross-entropy of one row of logits with its label (perplexity is exp of its mean).</summary>
    public static double CrossEntropy(ReadOnlySpan<float> logits, int label) => LogSumExp(logits) - logits[label];

    /// <summary>The maximum of scale·x and log Σ exp(scale·x − maximum).</summary>
    static (float Max, double LogSum) Parts(ReadOnlySpan<float> x, float scale)
    {
        if (!(scale > 0)) throw new ArgumentOutOfRangeException(nameof(scale), "The scale of a log-softmax must be positive.");
        if (x.IsEmpty) return (float.NegativeInfinity, 0);
        float max = TensorPrimitives.Max(x) * scale;   // rounding is monotonic: this is the maximum of the scaled values
        if (!float.IsFinite(max)) return (max, 0);
        Span<double> buffer = stackalloc double[Math.Min(Chunk, x.Length)];
        double sum = 0;
        for (int i = 0; i < x.Length; i += buffer.Length)
        {
            int n = Math.Min(buffer.Length, x.Length - i);
            var d = buffer[..n];
            TensorPrimitives.ConvertChecked(x.Slice(i, n), d);
            if (scale != 1f) TensorPrimitives.Multiply(d, (double)scale, d);
            TensorPrimitives.Subtract(d, (double)max, d);
            TensorPrimitives.Exp(d, d);
            sum += TensorPrimitives.Sum<double>(d);
        }
        return (max, Math.Log(sum));
    }
}
