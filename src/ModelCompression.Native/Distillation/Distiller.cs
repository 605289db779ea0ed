using System.Diagnostics;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Distillation;

/// <summary>
/// Knowledge distillation: trains an ONNX student to imitate an ONNX teacher. The teacher runs in ONNX Runtime: over
/// a data file its outputs are computed once and cached (the data do not change between epochs); over a token stream
/// it runs on every step's windows. The student trains in the engine's own <see cref="TrainingGraph"/>. The loss
/// per softmax group (a row of a [batch, classes] output, or each position of a [batch, seq, vocab] output) is
/// <see cref="SoftTargetLoss"/>'s; labels, when the data have them (or the next tokens of a token stream), add the
/// hard-label term weighed by 1 − Alpha. A run has four phases: <see cref="DistillationSetup"/> checks everything
/// before training, the teacher pass computes what it can ahead, <see cref="DistillationLoop"/> trains (and stops
/// early), <see cref="DistillationReport"/> writes the student and its report.
/// </summary>
public static class Distiller
{
    /// <summary>Distils on the rows of a data file (arrays for the inputs, optional labels per row or per position).</summary>
    public static DistillationResult Distill(OnnxModel teacher, OnnxModel student, DataSet training, DataSet? validation,
        DistillationOptions options, Action<DistillationProgress>? progress = null, CancellationToken cancellation = default)
    {
        options.Validate();
        if (options.SequenceLength is not null)
            throw new EngineException("SequenceLengthNeedsTokenData", EngineErrorKind.InvalidArgument,
                $"A sequence length applies to token data (one 1-D .npy array of token ids) only; '{training.Source}' holds {string.Join(", ", training.Arrays)}.") { Target = training.Source };
        if (training.Features is [{ Shape.Length: 1 } only] && only.Data is long[] or int[] or short[] or ushort[] or byte[] or sbyte[]
            && WindowData.TokenInput(student) is { } input && (DT)input.ElementTypeCode == DT.Int64)
            throw new EngineException("TokenDataNeedsSequenceLength", EngineErrorKind.InvalidArgument,
                $"'{training.Source}' holds one 1-D array of {only.Length:N0} integers, a token stream: give a sequence length to train on windows of it (-SequenceLength).") { Target = training.Source };
        return Run(teacher, student, validation, options, progress, cancellation, rng =>
        {
            var rows = Prepared.From(training, student, "training");
            var probe = rows.Batch(Enumerable.Range(0, Math.Min(8, rows.Rows)).ToArray());
            return (probe, Math.Min(8, rows.Rows), (t, shape) => new RowBatches(rows, t, shape, options.BatchSize, options.Shuffle, rng, options.TeacherBatchSize, cancellation), rows);
        });
    }

    /// <summary>
    /// Distils on random windows of <see cref="DistillationOptions.SequenceLength"/> tokens from a token stream; the labels
    /// are the next tokens. The student (and teacher) take one int64 input [batch, seq], or are language models whose
    /// other inputs their <see cref="DecoderContract"/> derives (Optimum's decoder-with-past layout, with an empty cache).
    /// </summary>
    public static DistillationResult Distill(OnnxModel teacher, OnnxModel student, TokenStream training, DataSet? validation,
        DistillationOptions options, Action<DistillationProgress>? progress = null, CancellationToken cancellation = default)
    {
        options.Validate();
        if (options.SequenceLength is not { } length)
            throw new EngineException("TokenDataNeedsSequenceLength", EngineErrorKind.InvalidArgument,
                $"Token data '{training.Source}' is read as windows: give the number of tokens per window (-SequenceLength).") { Target = training.Source };
        if (!options.Shuffle)
            throw new EngineException("ShuffleNotApplicable", EngineErrorKind.InvalidArgument, "Token windows are always drawn at random; turning shuffling off applies to the rows of a data file only.");
        var windows = WindowData.For(student, training, length, options.BatchSize);
        if (training.Length < length + 1L)
            throw new EngineException("TokenDataTooShort", EngineErrorKind.InvalidData,
                $"Token data '{training.Source}' holds {training.Length:N0} tokens; a window of {length} tokens and its next-token labels need {length + 1}.") { Target = training.Source };
        return Run(teacher, student, validation, options, progress, cancellation, rng => (windows.Probe(), 1, (t, shape) => windows.Create(t, shape, rng), null));
    }

    static DistillationResult Run(OnnxModel teacherModel, OnnxModel student, DataSet? validation, DistillationOptions options,
        Action<DistillationProgress>? progress, CancellationToken cancellation, TrainingData trainingData)
    {
        var total = Stopwatch.StartNew();
        var rng = new Random(options.Seed);
        using var setup = DistillationSetup.Prepare(teacherModel, student, validation, options, trainingData, rng, cancellation);
        var teacher = RunTeacher(setup, options, rng, cancellation);
        var loop = new DistillationLoop(setup, options, teacher.Source, teacher.Validation, progress, cancellation);
        loop.Run();
        return DistillationReport.Result(teacherModel, setup, teacher, loop, options, total);
    }

    /// <summary>
    /// The teacher's outputs that can be computed before training (a data file's, cached when they fit), and its own
    /// accuracy and perplexity on the validation labels.
    /// </summary>
    static TeacherPass RunTeacher(DistillationSetup setup, DistillationOptions options, Random rng, CancellationToken cancellation)
    {
        var watch = Stopwatch.StartNew();
        var source = setup.MakeSource(setup.Teacher, setup.RowShape);
        var valid = setup.ValidRows is null ? null
            : new RowBatches(setup.ValidRows, setup.Teacher, setup.ValidShape, options.BatchSize, false, rng, options.TeacherBatchSize, cancellation);
        double seconds = watch.Elapsed.TotalSeconds;
        if (valid is not { Cached: true } || setup.ValidRows!.Labels is null) return new TeacherPass(source, valid, seconds, null, null);
        // the teacher against itself: the soft loss is zero; what counts are the label terms
        var rows = setup.ValidRows;
        int positions = setup.ValidPositions, rowSize = positions * setup.Classes;
        var all = Enumerable.Range(0, rows.Rows).ToArray();
        var targets = new Targets(valid.Cache!, all.Select(r => r * rowSize).ToArray(), rows.Labels, all.Select(r => r * rows.LabelsPerRow).ToArray());
        var t = SoftTargetLoss.Compute(valid.Cache!, targets, rows.Rows, positions, setup.Classes, options with { Alpha = 1 }, null);
        double accuracy = (double)t.Correct / Math.Max(1, t.Labelled);
        double? perplexity = positions > 1 ? Math.Exp(t.CrossEntropy / Math.Max(1, t.Labelled)) : null;
        return new TeacherPass(source, valid, seconds, accuracy, perplexity);
    }
}
