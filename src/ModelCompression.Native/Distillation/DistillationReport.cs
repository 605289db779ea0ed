using System.Diagnostics;
using System.Globalization;
using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Distillation;

/// <summary>What the teacher pass gave: the batch sources, its time, and the teacher's own validation figures.</summary>
internal sealed record TeacherPass(IBatchSource Source, RowBatches? Validation, double Seconds, double? ValidationAccuracy, double? ValidationPerplexity);

/// <summary>
/// The last phase of a distillation: the trained weights written into a new student, with the run's parameters in
/// its history and a report (notes, metrics per record, an entry per record), and the result the caller gets.
/// </summary>
internal static class DistillationReport
{
    static string F(double v) => v.ToString("G6", CultureInfo.InvariantCulture);

    public static DistillationResult Result(OnnxModel teacherModel, DistillationSetup setup, TeacherPass teacher, DistillationLoop loop,
        DistillationOptions options, Stopwatch total)
    {
        var graph = setup.Graph;
        var student = setup.Student.Derive("Distillation", Parameters(teacherModel, options, loop.Cancelled), proto =>
        {
            int written = graph.WriteBack(proto);
            var report = new ModelReport { Stage = "Distillation" };
            if (options.FoldBatchNorm)
            {
                int folded = BatchNormFolding.Fold(proto, report.Entries);
                if (folded > 0) report.Notes.Add($"{folded} BatchNormalization node(s) folded into the Conv before them, with the trained running statistics.");
            }
            report.Notes.AddRange(setup.Notes);
            AddSummary(report, setup, teacher, loop, options, written);
            AddRecords(report, loop);
            return report;
        }, total);
        return new DistillationResult
        {
            Student = student,
            Epochs = loop.History,
            BestEpoch = loop.Kept,
            StoppedEarly = loop.StoppedEarly,
            Cancelled = loop.Cancelled,
            Steps = loop.Steps,
            TeacherSeconds = teacher.Seconds,
            TrainingSeconds = loop.Seconds,
            Timing = loop.Timing,
            OpTimings = graph.TimingByOpType(),
            TeacherValidationAccuracy = teacher.ValidationAccuracy,
            TeacherValidationPerplexity = teacher.ValidationPerplexity,
            TrainableParameters = setup.TrainableValues,
        };
    }

    /// <summary>The run's settings, as the student's history keeps them.</summary>
    static Dictionary<string, string> Parameters(OnnxModel teacherModel, DistillationOptions options, bool cancelled)
    {
        static string I(long v) => v.ToString(CultureInfo.InvariantCulture);
        var parameters = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["Teacher"] = teacherModel.Name,
            ["BatchSize"] = I(options.BatchSize),
            ["Optimizer"] = options.Optimizer.Kind.ToString(),
            ["LearningRate"] = F(options.Optimizer.LearningRate),
            ["Schedule"] = options.Optimizer.Schedule.ToString(),
            ["Loss"] = options.Loss.ToString(),
            ["Temperature"] = F(options.Temperature),
            ["Alpha"] = F(options.Alpha),
            ["Seed"] = I(options.Seed),
        };
        if (options.EpochLimit is { } limit) parameters["Epochs"] = I(limit);
        if (options.MaxSteps is { } m) parameters["MaxSteps"] = I(m);
        if (options.SequenceLength is { } sl) parameters["SequenceLength"] = I(sl);
        if (options.ValidationInterval > 0) parameters["ValidationInterval"] = I(options.ValidationInterval);
        if (options.Patience > 0) parameters["Patience"] = I(options.Patience);
        if (options.Optimizer.WeightDecay > 0) parameters["WeightDecay"] = F(options.Optimizer.WeightDecay);
        if (options.Optimizer.ClipNorm > 0) parameters["ClipNorm"] = F(options.Optimizer.ClipNorm);
        if (options.Freeze.Count > 0) parameters["Freeze"] = string.Join(",", options.Freeze);
        if (cancelled) parameters["Partial"] = "true";
        if (!options.FoldBatchNorm) parameters["FoldBatchNorm"] = "false";
        return parameters;
    }

    static string Label(DistillationLoop loop, EpochMetrics m) => loop.BySteps ? $"step {m.Step}" : $"epoch {m.Epoch}";

    /// <summary>Notes on what was written, where the time went and how training ended; the run's totals as metrics.</summary>
    static void AddSummary(ModelReport report, DistillationSetup setup, TeacherPass teacher, DistillationLoop loop, DistillationOptions options, int written)
    {
        long step = loop.Steps, per = Math.Max(1, step);
        var timing = loop.Timing;
        var history = loop.History;
        report.Notes.Add($"{written} float initializers written back ({setup.TrainableValues:N0} trainable values); {step:N0} optimizer steps"
            + (teacher.Seconds > 0.001 ? $"; teacher outputs computed in {teacher.Seconds:F2} s before training." : "."));
        report.Notes.Add($"Steps took {timing.Total / per:F3} s on average: data {timing.Data / per:F3} s, teacher {timing.Teacher / per:F3} s, student forward {timing.Forward / per:F3} s, "
            + $"loss {timing.Loss / per:F3} s, backward {timing.Backward / per:F3} s, optimizer {timing.Optimizer / per:F3} s.");
        if (loop.StoppedEarly)
            report.Notes.Add($"Stopped early after {Label(loop, history[^1])}: no better {(teacher.Validation is null ? "training" : "validation")} loss for {options.Patience} records; the weights of {Label(loop, history[loop.Kept - 1])} were kept.");
        if (loop.Cancelled)
            report.Notes.Add($"Cancelled after {history.Count} records; the best weights so far ({(loop.Kept > 0 ? Label(loop, history[loop.Kept - 1]) : "none")}) were returned because -Partial was asked for.");
        report.Metrics["Epochs"] = history.Count == 0 ? 0 : history[^1].Epoch;
        report.Metrics["Steps"] = step;
        report.Metrics["BestEpoch"] = loop.Kept;
        report.Metrics["TrainableParameters"] = setup.TrainableValues;
        report.Metrics["TeacherSeconds"] = teacher.Seconds;
        report.Metrics["TrainingSeconds"] = loop.Seconds;
        report.Metrics["SecondsPerStep"] = timing.Total / per;
        if (teacher.ValidationAccuracy is { } tva) report.Metrics["TeacherValidationAccuracy"] = tva;
        if (teacher.ValidationPerplexity is { } tvp) report.Metrics["TeacherValidationPerplexity"] = tvp;
    }

    /// <summary>Each record's figures, as metrics ("Epoch3.ValidationLoss" or "Step200.ValidationLoss") and as a report entry.</summary>
    static void AddRecords(ModelReport report, DistillationLoop loop)
    {
        var history = loop.History;
        for (int i = 0; i < history.Count; i++)
        {
            var h = history[i];
            string p = loop.BySteps ? $"Step{h.Step}." : $"Epoch{h.Epoch}.";
            report.Metrics[p + "TrainingLoss"] = h.TrainingLoss;
            if (h.ValidationLoss is { } vl) report.Metrics[p + "ValidationLoss"] = vl;
            if (h.ValidationAccuracy is { } va) report.Metrics[p + "ValidationAccuracy"] = va;
            if (h.ValidationPerplexity is { } vp) report.Metrics[p + "ValidationPerplexity"] = vp;
            if (h.TeacherAgreement is { } ta) report.Metrics[p + "TeacherAgreement"] = ta;
            report.Entries.Add(new ReportEntry(Label(loop, h), loop.BySteps ? "Step" : "Epoch", i + 1 == loop.Kept ? "Kept" : "Trained",
                $"loss {F(h.TrainingLoss)}" + (h.ValidationLoss is { } v ? $", validation loss {F(v)}" : "")
                + (h.ValidationPerplexity is { } pp ? $", validation perplexity {pp:F3}" : "")
                + (h.ValidationAccuracy is { } a ? $", validation accuracy {a:P2}" : "") + (h.TeacherAgreement is { } g ? $", teacher agreement {g:P2}" : "")
                + $", lr {F(h.LearningRate)}, {h.Seconds:F2} s"));
        }
    }
}
