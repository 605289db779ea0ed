using System.Numerics.Tensors;
using ModelCompression.Native.Kernels;

namespace ModelCompression.Native.Distillation;

/// <summary>Where the teacher's outputs and the labels of each batch row are.</summary>
/// <param name="Teacher">Teacher outputs: row r of the batch starts at <paramref name="TeacherStart"/>[r].</param>
/// <param name="Labels">Labels, or null: row r's start at <paramref name="LabelStart"/>[r], one per softmax group of the row.</param>
internal readonly record struct Targets(float[] Teacher, int[] TeacherStart, long[]? Labels, int[] LabelStart);

/// <summary>Sums over the softmax groups of a batch (or a validation set).</summary>
internal struct LossSums
{
    public double Loss, CrossEntropy;
    public long Groups, Agree, Correct, Labelled;

    public void Add(LossSums o)
    {
        Loss += o.Loss; CrossEntropy += o.CrossEntropy; Groups += o.Groups; Agree += o.Agree; Correct += o.Correct; Labelled += o.Labelled;
    }
}

/// <summary>
/// The distillation loss per softmax group — a row of a [batch, classes] output, or one position of a
/// [batch, seq, vocab] output — and its gradient with respect to the student's output:
/// Alpha·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − Alpha)·CE(s, label), or Alpha·MSE(s, t) + (1 − Alpha)·CE;
/// without labels the soft part alone. The loss is averaged over the groups of the batch. Groups are computed in
/// parallel with TensorPrimitives in float; sums are per fixed piece of groups, added in order, so the result does
/// not depend on the thread count.
/// </summary>
internal static class SoftTargetLoss
{
    /// <summary>
    /// Loss sums for <paramref name="rows"/> rows of <paramref name="positions"/> groups of <paramref name="classes"/>
    /// values. With <paramref name="grad"/>, writes the gradient of the mean loss over all groups of the batch.
    /// Cross-entropy, agreement with the teacher and accuracy are counted wherever a label exists.
    /// </summary>
    public static LossSums Compute(float[] student, Targets targets, int rows, int positions, int classes, DistillationOptions o, float[]? grad)
    {
        int groups = rows * positions;
        bool hard = targets.Labels is not null;
        double soft = hard ? o.Alpha : 1.0;
        float T = (float)o.Temperature;
        float scale = 1f / groups;
        int pieces = Math.Clamp((int)((long)groups * classes / (1 << 15)), 1, 16);
        var sums = new LossSums[pieces];
        Parallelism.Each(0, pieces, p =>
        {
            var a = new float[classes]; var b = new float[classes]; var c = new float[classes];
            ref var acc = ref sums[p];
            for (int gi = (int)((long)groups * p / pieces), end = (int)((long)groups * (p + 1) / pieces); gi < end; gi++)
            {
                int r = gi / positions, g = gi % positions;
                var s = student.AsSpan(gi * classes, classes);
                var t = targets.Teacher.AsSpan(targets.TeacherStart[r] + g * classes, classes);
                var d = grad is null ? default : grad.AsSpan(gi * classes, classes);
                long label = hard ? targets.Labels![targets.LabelStart[r] + g] : -1;
                acc.Groups++;
                if (o.Loss == DistillationLoss.MSE)
                {
                    TensorPrimitives.Subtract(s, t, a);
                    acc.Loss += soft * TensorPrimitives.SumOfSquares(a) / classes;
                    if (grad is not null) TensorPrimitives.Multiply(a, (float)(soft * 2 / classes) * scale, d);
                }
                else
                {
                    if (grad is not null) d.Clear();
                    if (soft > 0)
                    {
                        Softmax.LogRow(s, a, 1f / T);               // log ps
                        Softmax.LogRow(t, b, 1f / T);               // log pt
                        TensorPrimitives.Subtract(b, a, c);
                        TensorPrimitives.Exp(b, b);                 // pt
                        acc.Loss += soft * T * T * TensorPrimitives.Dot(b, c);
                        if (grad is not null)
                        {
                            TensorPrimitives.Exp(a, a);             // ps
                            TensorPrimitives.Subtract(a, b, a);
                            TensorPrimitives.Multiply(a, (float)(soft * T) * scale, d);
                        }
                    }
                }
                acc.Agree += TensorPrimitives.IndexOfMax(s) == TensorPrimitives.IndexOfMax(t) ? 1 : 0;
                if (label < 0) continue;
                acc.Labelled++;
                if (TensorPrimitives.IndexOfMax(s) == label) acc.Correct++;
                Softmax.LogRow(s, a);
                double ce = -a[(int)label];
                acc.CrossEntropy += ce;
                if (1 - o.Alpha > 0)
                {
                    acc.Loss += (1 - o.Alpha) * ce;
                    if (grad is not null)
                    {
                        // (1 − Alpha)·(softmax(s) − onehot(label)) / groups
                        float w = (float)(1 - o.Alpha) * scale;
                        TensorPrimitives.Exp(a, a);
                        a[(int)label] -= 1f;
                        TensorPrimitives.MultiplyAdd(a, w, d, d);
                    }
                }
            }
        });
        var total = new LossSums();
        foreach (var s in sums) total.Add(s);
        return total;
    }
}
