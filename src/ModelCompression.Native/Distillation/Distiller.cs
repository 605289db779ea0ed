using System.Diagnostics;
using System.Globalization;
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
/// hard-label term weighed by 1 − Alpha.
/// </summary>
public static class Distiller
{
    static string F(double v) => v.ToString("G6", CultureInfo.InvariantCulture);

    /// <summary>Distils on the rows of a data file (arrays for the inputs, optional labels per row or per position).</summary>
    public static DistillationResult Distill(OnnxModel teacher, OnnxModel student, DataSet training, DataSet? validation,
        DistillationOptions options, Action<DistillationProgress>? progress = null, CancellationToken cancellation = default)
    {
        options.Validate();
        if (options.SequenceLength is not null)
            throw new EngineException("SequenceLengthNeedsTokenData", EngineErrorKind.InvalidArgument,
                $"A sequence length applies to token data (one 1-D .npy array of token ids) only; '{training.Source}' holds {string.Join(", ", training.Arrays)}.") { Target = training.Source };
        var studentInputs = InputSynthesizer.Inputs(student);
        if (training.Features is [{ Shape.Length: 1 } only] && only.Data is long[] or int[] or short[] or ushort[] or byte[] or sbyte[]
            && studentInputs is [{ Shape.Count: 2 } input] && (DT)input.ElementTypeCode == DT.Int64)
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
    /// are the next tokens. The student (and teacher) take one int64 input [batch, seq].
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
        var inputs = InputSynthesizer.Inputs(student);
        if (inputs is not [{ Shape.Count: 2 } input] || (DT)input.ElementTypeCode != DT.Int64)
            throw new EngineException("TokenDataInputMismatch", EngineErrorKind.InvalidData,
                $"Token windows feed a student with one int64 input [batch, seq]; '{student.Name}' has {string.Join(", ", inputs)}.");
        if (training.Length < length + 1L)
            throw new EngineException("TokenDataTooShort", EngineErrorKind.InvalidData,
                $"Token data '{training.Source}' holds {training.Length:N0} tokens; a window of {length} tokens and its next-token labels need {length + 1}.") { Target = training.Source };
        return Run(teacher, student, validation, options, progress, cancellation, rng =>
        {
            var windows = new WindowBatchesFactory(training, length, options.BatchSize, input.Name, rng);
            return (windows.Probe(), 1, windows.Create, null);
        });
    }

    sealed class WindowBatchesFactory(TokenStream tokens, int length, int batch, string input, Random rng)
    {
        public Dictionary<string, Tensor> Probe()
        {
            var x = new long[length];
            tokens.CopyWindow(0, x);
            return new Dictionary<string, Tensor>(StringComparer.Ordinal) { [input] = Tensor.Int64([1, length], x) };
        }

        public IBatchSource Create(TeacherModel teacher, int[] rowShape)
        {
            if (tokens.MinId < 0 || tokens.MaxId >= rowShape[^1])
                throw new EngineException("TokenIdOutOfRange", EngineErrorKind.InvalidData,
                    $"Token data '{tokens.Source}' holds ids {tokens.MinId}..{tokens.MaxId}, but the models' vocabulary (last output dimension) is {rowShape[^1]} (ids 0..{rowShape[^1] - 1}).") { Target = tokens.Source };
            return new WindowBatches(new TokenWindows(tokens, length, batch, rng), input, teacher, rowShape);
        }
    }

    /// <summary>The training data: a probe batch (its row count), the batch source once the teacher is known, and the rows (for label checks) when it is a data file.</summary>
    delegate (Dictionary<string, Tensor> Probe, int ProbeRows, Func<TeacherModel, int[], IBatchSource> Source, Prepared? Rows) TrainingData(Random rng);

    static DistillationResult Run(OnnxModel teacherModel, OnnxModel student, DataSet? validation, DistillationOptions options,
        Action<DistillationProgress>? progress, CancellationToken cancellation, TrainingData trainingData)
    {
        var total = Stopwatch.StartNew();
        bool windows = options.SequenceLength is not null;

        // ---- everything that can be wrong is checked before any training ----
        var studentInputs = InputSynthesizer.Inputs(student);
        var teacherInputs = InputSynthesizer.Inputs(teacherModel);
        var pairing = PairInputs(teacherModel, teacherInputs, student, studentInputs);
        var (teacherOutput, studentOutput) = PairOutputs(teacherModel, student);
        var graph = TrainingGraph.Load(student, new TrainingGraphOptions { Freeze = options.Freeze, Seed = options.Seed });
        int trainable = graph.Parameters.Where(p => p.Trainable).Sum(p => p.Value.Length);
        if (trainable == 0)
            throw new EngineException("DistillationNothingToTrain", EngineErrorKind.InvalidArgument,
                $"Student '{student.Name}' has no trainable float initializer that reaches its output '{studentOutput}'" + (options.Freeze.Count > 0 ? " (everything is frozen)." : "."));
        int outIndex = graph.OutputNames.ToList().IndexOf(studentOutput);
        var rng = new Random(options.Seed);

        using var teacher = new TeacherModel(teacherModel, pairing, teacherOutput, options.TeacherSession);
        var (probe, probeRows, makeSource, trainRows) = trainingData(rng);
        var validRows = validation is null ? null : Prepared.From(validation, student, "validation");

        // The student's output must have the teacher's shape per row, on the training and the validation data.
        (int[] Shape, float[] Teacher) RowShape(Dictionary<string, Tensor> inputs, int rows, string role)
        {
            int[] shape;
            try
            {
                var output = graph.Forward(inputs, training: false)[outIndex];
                shape = output.Shape.Length > 1 ? output.Shape[1..] : [];
            }
            catch (EngineException e) when (windows && role == "training" && e.ErrorId is "TrainingShapeMismatch" or "TrainingIndexOutOfRange")
            {
                throw new EngineException("SequenceLengthUnsupported", EngineErrorKind.InvalidArgument,
                    $"Student '{student.Name}' cannot run windows of {options.SequenceLength} tokens (is it longer than the model's context?): {e.Message}", e);
            }
            var (teacherShape, values) = teacher.Probe(inputs, rows, cancellation);
            if (!shape.SequenceEqual(teacherShape))
                throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData,
                    $"On the {role} data, teacher output '{teacherOutput}' has shape [batch,{string.Join(",", teacherShape)}] per input row but student output '{studentOutput}' has [batch,{string.Join(",", shape)}].");
            return (shape, values);
        }
        var (rowShape, teacherProbe) = RowShape(probe, probeRows, "training");
        int classes = rowShape.Length == 0 ? 1 : rowShape[^1];
        int positions = Tensor.Count(rowShape) / Math.Max(1, classes);
        int[] validShape = rowShape;
        if (validRows is not null)
        {
            int n = Math.Min(8, validRows.Rows);
            validShape = RowShape(validRows.Batch(Enumerable.Range(0, n).ToArray()), n, "validation").Shape;
            if ((validShape.Length == 0 ? 1 : validShape[^1]) != classes)
                throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData,
                    $"The models give [batch,{string.Join(",", validShape)}] on the validation data but [batch,{string.Join(",", rowShape)}] on the training data; the last dimension (the classes) must agree.");
        }
        int validPositions = Tensor.Count(validShape) / Math.Max(1, classes);
        if (trainRows is not null) CheckLabels(trainRows, classes, positions, "training");
        if (validRows is not null) CheckLabels(validRows, classes, validPositions, "validation");

        var notes = new List<string>();
        if (options.Loss == DistillationLoss.KL && TeacherModel.LooksLikeProbabilities(teacherProbe, classes))
        {
            teacher.Probabilities = true;
            notes.Add("The teacher's outputs are probabilities (non-negative rows summing to 1); their logarithms served as its logits.");
        }
        var masks = graph.Parameters.Where(p => p.IsMask).Select(p => p.Name).ToList();
        if (masks.Count > 0)
            notes.Add($"{string.Join(", ", masks.Select(m => "'" + m + "'"))} hold{(masks.Count == 1 ? "s" : "")} an additive attention mask (0 and a large negative value), kept as a constant.");
        bool hasLabels = windows || trainRows?.Labels is not null;
        if (!hasLabels) notes.Add("The training data has no labels: the loss is the soft (teacher) loss alone, so Alpha does not apply.");
        if (windows) notes.Add($"Training windows of {options.SequenceLength} tokens at random starts; the labels are the next tokens.");
        if (options.Loss == DistillationLoss.MSE) notes.Add("MSE loss compares raw outputs; the temperature applies to the KL loss only.");

        var teacherWatch = Stopwatch.StartNew();
        var source = makeSource(teacher, rowShape);
        var validSource = validRows is null ? null : new RowBatches(validRows, teacher, validShape, options.BatchSize, false, rng, options.TeacherBatchSize, cancellation);
        double teacherSeconds = teacherWatch.Elapsed.TotalSeconds;
        bool sequence = validPositions > 1;
        double? teacherValidAccuracy = null, teacherValidPerplexity = null;
        if (validSource is { Cached: true } && validRows!.Labels is not null)
        {
            var t = TeacherOnLabels(validSource, validRows, validPositions, classes, options);
            teacherValidAccuracy = (double)t.Correct / Math.Max(1, t.Labelled);
            if (sequence) teacherValidPerplexity = Math.Exp(t.CrossEntropy / Math.Max(1, t.Labelled));
        }

        // ---- training ----
        long stepsPerEpoch = source.StepsPerEpoch;
        int? epochLimit = options.EpochLimit;
        // Training ends at the first of the epoch limit and -MaxSteps (options always set one of them).
        long totalSteps = Math.Min(epochLimit is { } el ? el * stepsPerEpoch : long.MaxValue, options.MaxSteps ?? long.MaxValue);
        var optimizer = new Optimizer(options.Optimizer, graph.Parameters, totalSteps);
        var history = new List<EpochMetrics>();
        Dictionary<string, float[]>? best = null;
        double bestLoss = double.PositiveInfinity;
        int bestRecord = 0, sinceBest = 0;
        bool stoppedEarly = false, cancelled = false;
        var trainWatch = Stopwatch.StartNew();
        long step = 0;
        float[]? grad = null;
        long[] phase = new long[6];   // data, teacher, forward, loss, backward, optimizer (Stopwatch ticks)
        graph.ResetTiming();
        try
        {
            var recordWatch = Stopwatch.StartNew();
            var progressWatch = Stopwatch.StartNew();
            double lossSum = 0; long lossGroups = 0;
            bool done = false;
            for (int epoch = 1; !done && (epochLimit is null || epoch <= epochLimit); epoch++)
            {
                source.StartEpoch();
                for (long s = 0; s < stepsPerEpoch; s++)
                {
                    cancellation.ThrowIfCancellationRequested();
                    double lr = optimizer.CurrentLearningRate;
                    long teacherBefore = teacher.RunTicks;
                    long t0 = Stopwatch.GetTimestamp();
                    var batch = source.Next(cancellation);
                    long t1 = Stopwatch.GetTimestamp();
                    long teacherTicks = teacher.RunTicks - teacherBefore;
                    var output = graph.Forward(batch.Inputs, training: true)[outIndex];
                    long t2 = Stopwatch.GetTimestamp();
                    if (grad is null || grad.Length != output.Length) grad = new float[output.Length];
                    var sums = SoftTargetLoss.Compute(output.Data, batch.Targets, batch.Rows, positions, classes, options, grad);
                    long t3 = Stopwatch.GetTimestamp();
                    graph.Backward(new Dictionary<string, Tensor> { [studentOutput] = Tensor.Float(output.Shape, grad) });
                    long t4 = Stopwatch.GetTimestamp();
                    optimizer.Step();
                    long t5 = Stopwatch.GetTimestamp();
                    phase[0] += t1 - t0 - teacherTicks; phase[1] += teacherTicks; phase[2] += t2 - t1; phase[3] += t3 - t2; phase[4] += t4 - t3; phase[5] += t5 - t4;
                    step++;
                    lossSum += sums.Loss; lossGroups += sums.Groups;
                    bool last = step >= totalSteps;
                    bool record = options.ValidationInterval > 0 ? step % options.ValidationInterval == 0 || last
                        : s == stepsPerEpoch - 1 || last;
                    if (!record)
                    {
                        if (progress is not null && progressWatch.Elapsed.TotalSeconds >= 1)
                        {
                            progressWatch.Restart();
                            progress(new DistillationProgress(epoch, epochLimit, null, step, totalSteps, lossSum / Math.Max(1, lossGroups)));
                        }
                        continue;
                    }
                    double trainLoss = lossSum / Math.Max(1, lossGroups);
                    if (double.IsNaN(trainLoss) || double.IsInfinity(trainLoss))
                        throw new EngineException("DistillationDiverged", EngineErrorKind.InvalidOperation,
                            $"Training diverged at step {step} (the loss is not a finite number); try a smaller -LearningRate or -ClipNorm.");
                    double? validLoss = null, validAcc = null, agreement = null, perplexity = null;
                    if (validSource is not null)
                    {
                        var v = Evaluate(graph, outIndex, validSource, validPositions, classes, options, cancellation);
                        validLoss = v.Loss / Math.Max(1, v.Groups);
                        if (v.Labelled > 0) validAcc = (double)v.Correct / v.Labelled;
                        if (v.Labelled > 0 && sequence) perplexity = Math.Exp(v.CrossEntropy / v.Labelled);
                        if (options.Loss == DistillationLoss.KL || validPositions == 1 && classes > 1) agreement = (double)v.Agree / Math.Max(1, v.Groups);
                        if (double.IsNaN(validLoss.Value))
                            throw new EngineException("DistillationDiverged", EngineErrorKind.InvalidOperation,
                                $"Training diverged at step {step} (the validation loss is not a number); try a smaller -LearningRate or -ClipNorm.");
                    }
                    double monitored = validLoss ?? trainLoss;
                    bool improved = monitored < bestLoss;
                    if (improved)
                    {
                        bestLoss = monitored; bestRecord = history.Count + 1; sinceBest = 0;
                        if (options.Patience > 0 || options.Partial) best = graph.Snapshot();
                    }
                    else sinceBest++;
                    var metrics = new EpochMetrics(epoch, trainLoss, validLoss, validAcc, agreement, lr, recordWatch.Elapsed.TotalSeconds, improved, step, perplexity);
                    history.Add(metrics);
                    progress?.Invoke(new DistillationProgress(epoch, epochLimit, metrics, step, totalSteps, trainLoss));
                    recordWatch.Restart(); progressWatch.Restart();
                    lossSum = 0; lossGroups = 0;
                    if (last) { done = true; break; }
                    if (options.Patience > 0 && sinceBest >= options.Patience) { stoppedEarly = true; done = true; break; }
                }
            }
        }
        catch (OperationCanceledException) when (options.Partial)
        {
            cancelled = true;
        }
        int kept = history.Count;
        if ((options.Patience > 0 || cancelled) && best is not null)
        {
            graph.Restore(best);
            kept = bestRecord;
        }
        else if (cancelled && best is null)
            throw new OperationCanceledException("Distillation was cancelled before the first epoch completed; there is nothing to return.", cancellation);

        double Sec(long ticks) => ticks / (double)Stopwatch.Frequency;
        var timing = new StepTiming(Sec(phase[0]), Sec(phase[1]), Sec(phase[2]), Sec(phase[3]), Sec(phase[4]), Sec(phase[5]));
        var opTimings = graph.TimingByOpType();
        bool bySteps = options.ValidationInterval > 0;
        string Label(EpochMetrics m) => bySteps ? $"step {m.Step}" : $"epoch {m.Epoch}";
        string Key(EpochMetrics m) => bySteps ? $"Step{m.Step}." : $"Epoch{m.Epoch}.";

        var parameters = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["Teacher"] = teacherModel.Name,
            ["BatchSize"] = options.BatchSize.ToString(CultureInfo.InvariantCulture),
            ["Optimizer"] = options.Optimizer.Kind.ToString(),
            ["LearningRate"] = F(options.Optimizer.LearningRate),
            ["Schedule"] = options.Optimizer.Schedule.ToString(),
            ["Loss"] = options.Loss.ToString(),
            ["Temperature"] = F(options.Temperature),
            ["Alpha"] = F(options.Alpha),
            ["Seed"] = options.Seed.ToString(CultureInfo.InvariantCulture),
        };
        if (epochLimit is { } limit) parameters["Epochs"] = limit.ToString(CultureInfo.InvariantCulture);
        if (options.MaxSteps is { } m) parameters["MaxSteps"] = m.ToString(CultureInfo.InvariantCulture);
        if (options.SequenceLength is { } sl) parameters["SequenceLength"] = sl.ToString(CultureInfo.InvariantCulture);
        if (bySteps) parameters["ValidationInterval"] = options.ValidationInterval.ToString(CultureInfo.InvariantCulture);
        if (options.Patience > 0) parameters["Patience"] = options.Patience.ToString(CultureInfo.InvariantCulture);
        if (options.Optimizer.WeightDecay > 0) parameters["WeightDecay"] = F(options.Optimizer.WeightDecay);
        if (options.Optimizer.ClipNorm > 0) parameters["ClipNorm"] = F(options.Optimizer.ClipNorm);
        if (options.Freeze.Count > 0) parameters["Freeze"] = string.Join(",", options.Freeze);
        if (cancelled) parameters["Partial"] = "true";
        if (!options.FoldBatchNorm) parameters["FoldBatchNorm"] = "false";

        var result = student.Derive("Distillation", parameters, proto =>
        {
            int written = graph.WriteBack(proto);
            var report = new ModelReport { Stage = "Distillation" };
            if (options.FoldBatchNorm)
            {
                int folded = BatchNormFolding.Fold(proto, report.Entries);
                if (folded > 0) report.Notes.Add($"{folded} BatchNormalization node(s) folded into the Conv before them, with the trained running statistics.");
            }
            report.Notes.AddRange(notes);
            report.Notes.Add($"{written} float initializers written back ({trainable:N0} trainable values); {step:N0} optimizer steps"
                + (teacherSeconds > 0.001 ? $"; teacher outputs computed in {teacherSeconds:F2} s before training." : "."));
            report.Notes.Add($"Steps took {timing.Total / Math.Max(1, step):F3} s on average: data {timing.Data / Math.Max(1, step):F3} s, teacher {timing.Teacher / Math.Max(1, step):F3} s, student forward {timing.Forward / Math.Max(1, step):F3} s, "
                + $"loss {timing.Loss / Math.Max(1, step):F3} s, backward {timing.Backward / Math.Max(1, step):F3} s, optimizer {timing.Optimizer / Math.Max(1, step):F3} s.");
            if (stoppedEarly) report.Notes.Add($"Stopped early after {Label(history[^1])}: no better {(validSource is null ? "training" : "validation")} loss for {options.Patience} records; the weights of {Label(history[kept - 1])} were kept.");
            if (cancelled) report.Notes.Add($"Cancelled after {history.Count} records; the best weights so far ({(kept > 0 ? Label(history[kept - 1]) : "none")}) were returned because -Partial was asked for.");
            report.Metrics["Epochs"] = history.Count == 0 ? 0 : history[^1].Epoch;
            report.Metrics["Steps"] = step;
            report.Metrics["BestEpoch"] = kept;
            report.Metrics["TrainableParameters"] = trainable;
            report.Metrics["TeacherSeconds"] = teacherSeconds;
            report.Metrics["TrainingSeconds"] = trainWatch.Elapsed.TotalSeconds;
            report.Metrics["SecondsPerStep"] = timing.Total / Math.Max(1, step);
            if (teacherValidAccuracy is { } tva) report.Metrics["TeacherValidationAccuracy"] = tva;
            if (teacherValidPerplexity is { } tvp) report.Metrics["TeacherValidationPerplexity"] = tvp;
            for (int i = 0; i < history.Count; i++)
            {
                var h = history[i];
                string p = Key(h);
                report.Metrics[p + "TrainingLoss"] = h.TrainingLoss;
                if (h.ValidationLoss is { } vl2) report.Metrics[p + "ValidationLoss"] = vl2;
                if (h.ValidationAccuracy is { } va) report.Metrics[p + "ValidationAccuracy"] = va;
                if (h.ValidationPerplexity is { } vp) report.Metrics[p + "ValidationPerplexity"] = vp;
                if (h.TeacherAgreement is { } ta) report.Metrics[p + "TeacherAgreement"] = ta;
                report.Entries.Add(new ReportEntry(Label(h), bySteps ? "Step" : "Epoch", i + 1 == kept ? "Kept" : "Trained",
                    $"loss {F(h.TrainingLoss)}" + (h.ValidationLoss is { } v ? $", validation loss {F(v)}" : "")
                    + (h.ValidationPerplexity is { } pp ? $", validation perplexity {pp:F3}" : "")
                    + (h.ValidationAccuracy is { } a ? $", validation accuracy {a:P2}" : "") + (h.TeacherAgreement is { } g ? $", teacher agreement {g:P2}" : "")
                    + $", lr {F(h.LearningRate)}, {h.Seconds:F2} s"));
            }
            return report;
        }, total);
        return new DistillationResult
        {
            Student = result,
            Epochs = history,
            BestEpoch = kept,
            StoppedEarly = stoppedEarly,
            Cancelled = cancelled,
            Steps = step,
            TeacherSeconds = teacherSeconds,
            TrainingSeconds = trainWatch.Elapsed.TotalSeconds,
            Timing = timing,
            OpTimings = opTimings,
            TeacherValidationAccuracy = teacherValidAccuracy,
            TeacherValidationPerplexity = teacherValidPerplexity,
            TrainableParameters = trainable,
        };
    }

    // ---------------------------------------------------------------- data

    static void CheckLabels(Prepared data, int classes, int positions, string role)
    {
        if (data.Labels is not { } labels) return;
        if (data.LabelsPerRow != positions)
            throw new EngineException("LabelShapeMismatch", EngineErrorKind.InvalidData,
                $"The {role} data '{data.Source}' has {data.LabelsPerRow} label(s) per row, but the output has {positions} softmax group(s) of {classes} per row: "
                + (positions == 1 ? "give one class per row ([rows])." : $"give one label per position ([rows, {positions}]).")) { Target = data.Source };
        for (int i = 0; i < labels.Length; i++)
            if (labels[i] < 0 || labels[i] >= classes)
                throw new EngineException("LabelOutOfRange", EngineErrorKind.InvalidData,
                    $"The {role} data '{data.Source}' has label {labels[i]} at row {i / positions}" + (positions > 1 ? $", position {i % positions}" : "")
                    + $"; the models have {classes} classes (labels 0..{classes - 1}).") { Target = data.Source };
    }

    /// <summary>The teacher's own accuracy and cross-entropy on the labels of a cached validation set.</summary>
    static LossSums TeacherOnLabels(RowBatches source, Prepared rows, int positions, int classes, DistillationOptions options)
    {
        var all = Enumerable.Range(0, rows.Rows).ToArray();
        int rowSize = positions * classes;
        var targets = new Targets(source.Cache!, all.Select(r => r * rowSize).ToArray(), rows.Labels, all.Select(r => r * rows.LabelsPerRow).ToArray());
        // the teacher against itself: the soft loss is zero; what counts are the label terms
        return SoftTargetLoss.Compute(source.Cache!, targets, rows.Rows, positions, classes, options with { Alpha = 1 }, null);
    }

    static LossSums Evaluate(TrainingGraph graph, int outIndex, RowBatches source, int positions, int classes, DistillationOptions o, CancellationToken cancellation)
    {
        var total = new LossSums();
        source.StartEpoch();
        for (long s = 0; s < source.StepsPerEpoch; s++)
        {
            cancellation.ThrowIfCancellationRequested();
            var batch = source.Next(cancellation);
            var output = graph.Forward(batch.Inputs, training: false)[outIndex];
            total.Add(SoftTargetLoss.Compute(output.Data, batch.Targets, batch.Rows, positions, classes, o, null));
        }
        return total;
    }

    // ---------------------------------------------------------------- models

    static List<(string Teacher, string Student)> PairInputs(OnnxModel teacher, IReadOnlyList<ValueSignature> ti, OnnxModel student, IReadOnlyList<ValueSignature> si)
    {
        if (ti.Count != si.Count)
            throw new EngineException("DistillationInputMismatch", EngineErrorKind.InvalidData,
                $"Teacher '{teacher.Name}' has {ti.Count} inputs ({string.Join(", ", ti)}) but student '{student.Name}' has {si.Count} ({string.Join(", ", si)}).");
        bool byName = ti.All(t => si.Any(s => s.Name == t.Name));
        var pairs = new List<(string, string)>();
        for (int i = 0; i < si.Count; i++)
        {
            var s = si[i];
            var t = byName ? ti.First(x => x.Name == s.Name) : ti[i];
            bool typeOk = t.ElementType == s.ElementType;
            bool rankOk = t.Shape.Count == s.Shape.Count || t.Shape.Count == 0 || s.Shape.Count == 0;
            bool dimsOk = rankOk && t.Shape.Zip(s.Shape).Skip(1).All(p => !long.TryParse(p.First, out long a) || !long.TryParse(p.Second, out long b) || a == b);
            if (!typeOk || !dimsOk)
                throw new EngineException("DistillationInputMismatch", EngineErrorKind.InvalidData,
                    $"Teacher input {t} and student input {s} disagree (element type or dimensions).");
            pairs.Add((t.Name, s.Name));
        }
        return pairs;
    }

    static (string Teacher, string Student) PairOutputs(OnnxModel teacher, OnnxModel student)
    {
        var to = teacher.Proto.Graph.Output.Select(ValueSignature.From).ToList();
        var so = student.Proto.Graph.Output.Select(ValueSignature.From).ToList();
        if (to.Count == 0 || so.Count == 0)
            throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData, "Teacher and student need at least one output each.");
        var t = to[0]; var s = so[0];
        bool rankOk = t.Shape.Count == s.Shape.Count || t.Shape.Count == 0 || s.Shape.Count == 0;
        bool dimsOk = rankOk && t.Shape.Zip(s.Shape).Skip(1).All(p => !long.TryParse(p.First, out long a) || !long.TryParse(p.Second, out long b) || a == b);
        if (!dimsOk)
            throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData,
                $"Teacher output {t} and student output {s} have different shapes; the student must produce what the teacher produces.");
        return (t.Name, s.Name);
    }
}
