using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;

namespace ModelCompression.Native.Distillation;

/// <summary>
/// The teacher in ONNX Runtime, fed with the student's batches: the inputs the data hold paired by name or position,
/// and the inputs a language model derives (attention mask, positions, an empty key/value cache) taken from the
/// student's batch where they fit the teacher and derived for the teacher where they do not (another cache layout or
/// head count, or a teacher without a cache). Its threads do not spin between runs, because the student's training
/// takes the cores in between.
/// </summary>
internal sealed class TeacherModel : IDisposable
{
    readonly OnnxModel model;
    readonly ModelSession session;
    readonly List<(string Teacher, string Student)> pairing;

    public TeacherModel(OnnxModel teacher, List<(string Teacher, string Student)> pairing, string output, SessionSettings? settings)
    {
        model = teacher;
        session = new ModelSession(teacher, (settings ?? new SessionSettings()) with { AllowSpinning = false });
        this.pairing = pairing;
        Output = output;
        Name = teacher.Name;
    }

    public string Output { get; }
    public string Name { get; }
    /// <summary>The outputs are probabilities (a softmax at the end): their logarithms serve as logits.</summary>
    public bool Probabilities { get; set; }

    IReadOnlyDictionary<string, NamedArray> Feeds(Dictionary<string, Tensor> inputs)
    {
        static NamedArray Array(string name, Tensor t) => new(name, t.Shape.Select(d => (long)d).ToArray(), t.IsInt ? t.Ints! : t.Data);
        var batch = inputs.ToDictionary(kv => kv.Key, kv => Array(kv.Key, kv.Value), StringComparer.Ordinal);
        foreach (var (teacher, student) in pairing) batch[teacher] = Array(teacher, inputs[student]);
        return ModelInputs.For(model, batch);
    }

    /// <summary>Runs one batch of <paramref name="rows"/> rows: the output's shape per row, and the values as they come.</summary>
    public (int[] RowShape, float[] Values) Probe(Dictionary<string, Tensor> inputs, int rows, CancellationToken cancel)
    {
        var result = session.Run(Feeds(inputs), [Output], cancel)[0];
        if (result.Shape.Length == 0 || result.Shape[0] != rows)
            throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData,
                $"Teacher output '{Output}' has shape [{string.Join(",", result.Shape)}] for {rows} rows; its first dimension must be the batch.");
        return (result.Shape[1..].Select(d => checked((int)d)).ToArray(), result.AsFloat());
    }

    /// <summary>Runs a batch whose output has <paramref name="rowShape"/> per row into <paramref name="destination"/>.</summary>
    public void Run(Dictionary<string, Tensor> inputs, int rows, int[] rowShape, float[] destination, CancellationToken cancel)
    {
        long t0 = System.Diagnostics.Stopwatch.GetTimestamp();
        session.RunInto(Feeds(inputs), Output, destination, [rows, .. rowShape.Select(d => (long)d)], cancel);
        if (Probabilities) ToLogProbabilities(destination.AsSpan(0, rows * Tensor.Count(rowShape)));
        RunTicks += System.Diagnostics.Stopwatch.GetTimestamp() - t0;
    }

    /// <summary>Stopwatch ticks spent in <see cref="Run"/> so far.</summary>
    public long RunTicks { get; private set; }

    public static bool LooksLikeProbabilities(ReadOnlySpan<float> values, int classes)
    {
        if (classes < 2) return false;
        for (int r = 0; r + classes <= values.Length; r += classes)
        {
            double sum = 0;
            for (int c = 0; c < classes; c++) { float v = values[r + c]; if (v < 0 || v > 1) return false; sum += v; }
            if (Math.Abs(sum - 1) > 1e-3) return false;
        }
        return true;
    }

    static void ToLogProbabilities(Span<float> values)
    {
        for (int i = 0; i < values.Length; i++) values[i] = MathF.Log(MathF.Max(values[i], 1e-30f));
    }

    public void Dispose() => session.Dispose();
}
