using System.Diagnostics;
using System.Globalization;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;

namespace ModelCompression.Native.Distillation;

/// <summary>
/// Knowledge distillation: trains an ONNX student to imitate an ONNX teacher. The teacher runs in ONNX Runtime once
/// over the data (its outputs are cached: the data does not change between epochs); the student trains in the
/// engine's own <see cref="TrainingGraph"/>. Loss per row: Alpha·T²·KL(softmax(t/T) ‖ softmax(s/T)) +
/// (1 − Alpha)·CE(s, label), or Alpha·MSE(s, t) + (1 − Alpha)·CE with <see cref="DistillationLoss.MSE"/>; without
/// labels, the soft loss alone.
/// </summary>
public static class Distiller
{
    static string F(double v) => v.ToString("G6", CultureInfo.InvariantCulture);

    public static DistillationResult Distill(OnnxModel teacher, OnnxModel student, DataSet training, DataSet? validation,
        DistillationOptions options, Action<DistillationProgress>? progress = null, CancellationToken cancellation = default)
    {
        options.Validate();
        var total = Stopwatch.StartNew();

        // ---- everything that can be wrong is checked before any training ----
        var studentInputs = InputSynthesizer.Inputs(student);
        var teacherInputs = InputSynthesizer.Inputs(teacher);
        var pairing = PairInputs(teacher, teacherInputs, student, studentInputs);
        var (teacherOutput, studentOutput) = PairOutputs(teacher, student);
        var graph = TrainingGraph.Load(student, new TrainingGraphOptions { Freeze = options.Freeze, Seed = options.Seed });
        int trainable = graph.Parameters.Where(p => p.Trainable).Sum(p => p.Value.Length);
        if (trainable == 0)
            throw new EngineException("DistillationNothingToTrain", EngineErrorKind.InvalidArgument,
                $"Student '{student.Name}' has no trainable float initializer that reaches its output '{studentOutput}'" + (options.Freeze.Count > 0 ? " (everything is frozen)." : "."));

        var trainSet = Prepare(training, studentInputs, "training");
        var validSet = validation is null ? null : Prepare(validation, studentInputs, "validation");

        var teacherWatch = Stopwatch.StartNew();
        var teacherTrain = RunTeacher(teacher, teacherOutput, pairing, trainSet, options, cancellation);
        var teacherValid = validSet is null ? null : RunTeacher(teacher, teacherOutput, pairing, validSet, options, cancellation);
        double teacherSeconds = teacherWatch.Elapsed.TotalSeconds;

        // The student's output must have the teacher's shape per row.
        var probe = graph.Forward(Batch(trainSet, [0]), training: false)[graph.OutputNames.ToList().IndexOf(studentOutput)];
        int[] rowShape = probe.Shape.Length > 1 ? probe.Shape[1..] : [];
        if (!rowShape.SequenceEqual(teacherTrain.RowShape))
            throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData,
                $"Teacher output '{teacherOutput}' has shape [batch,{string.Join(",", teacherTrain.RowShape)}] per input row but student output '{studentOutput}' has [batch,{string.Join(",", rowShape)}].");
        int classes = rowShape.Length == 0 ? 1 : rowShape[^1];
        bool classification = rowShape.Length == 1;
        CheckLabels(trainSet, classes, classification, "training");
        if (validSet is not null) CheckLabels(validSet, classes, classification, "validation");

        var notes = new List<string>();
        if (options.Loss == DistillationLoss.KL && LooksLikeProbabilities(teacherTrain.Values, classes))
        {
            ToLogProbabilities(teacherTrain.Values);
            if (teacherValid is not null) ToLogProbabilities(teacherValid.Values);
            notes.Add("The teacher's outputs are probabilities (non-negative rows summing to 1); their logarithms served as its logits.");
        }
        if (trainSet.Labels is null) notes.Add("The training data has no labels: the loss is the soft (teacher) loss alone, so Alpha does not apply.");
        if (options.Loss == DistillationLoss.MSE) notes.Add("MSE loss compares raw outputs; the temperature applies to the KL loss only.");
        double? teacherValidAccuracy = validSet?.Labels is { } vl ? Accuracy(teacherValid!.Values, vl, classes) : null;

        // ---- training ----
        int rows = trainSet.Rows;
        int batchesPerEpoch = (rows + options.BatchSize - 1) / options.BatchSize;
        var optimizer = new Optimizer(options.Optimizer, graph.Parameters, (long)batchesPerEpoch * options.Epochs);
        var rng = new Random(options.Seed);
        var order = Enumerable.Range(0, rows).ToArray();
        var history = new List<EpochMetrics>();
        Dictionary<string, float[]>? best = null;
        double bestLoss = double.PositiveInfinity;
        int bestEpoch = 0, sinceBest = 0;
        bool stoppedEarly = false, cancelled = false;
        var trainWatch = Stopwatch.StartNew();
        int outIndex = graph.OutputNames.ToList().IndexOf(studentOutput);
        try
        {
            for (int epoch = 1; epoch <= options.Epochs; epoch++)
            {
                var epochWatch = Stopwatch.StartNew();
                if (options.Shuffle) rng.Shuffle(order);
                double lossSum = 0;
                double lr = optimizer.CurrentLearningRate;
                for (int start = 0; start < rows; start += options.BatchSize)
                {
                    cancellation.ThrowIfCancellationRequested();
                    var idx = order.AsSpan(start, Math.Min(options.BatchSize, rows - start)).ToArray();
                    var output = graph.Forward(Batch(trainSet, idx), training: true)[outIndex];
                    var (loss, grad) = Loss(output, teacherTrain, trainSet.Labels, idx, classes, classification, options);
                    lossSum += loss * idx.Length;
                    graph.Backward(new Dictionary<string, Tensor> { [studentOutput] = grad });
                    optimizer.Step();
                }
                double trainLoss = lossSum / rows;
                double? validLoss = null, validAcc = null, agreement = null;
                if (validSet is not null) (validLoss, validAcc, agreement) = Evaluate(graph, outIndex, validSet, teacherValid!, classes, classification, options, cancellation);
                double monitored = validLoss ?? trainLoss;
                if (double.IsNaN(monitored))
                    throw new EngineException("DistillationDiverged", EngineErrorKind.InvalidOperation,
                        $"Training diverged at epoch {epoch} (the loss is not a number); try a smaller -LearningRate or -ClipNorm.");
                bool improved = monitored < bestLoss;
                if (improved)
                {
                    bestLoss = monitored; bestEpoch = epoch; sinceBest = 0;
                    if (options.Patience > 0 || options.Partial) best = graph.Snapshot();
                }
                else sinceBest++;
                var metrics = new EpochMetrics(epoch, trainLoss, validLoss, validAcc, agreement, lr, epochWatch.Elapsed.TotalSeconds, improved);
                history.Add(metrics);
                progress?.Invoke(new DistillationProgress(epoch, options.Epochs, metrics));
                if (options.Patience > 0 && sinceBest >= options.Patience && epoch < options.Epochs) { stoppedEarly = true; break; }
            }
        }
        catch (OperationCanceledException) when (options.Partial)
        {
            cancelled = true;
        }
        int keptEpoch = history.Count;
        if ((options.Patience > 0 || cancelled) && best is not null)
        {
            graph.Restore(best);
            keptEpoch = bestEpoch;
        }
        else if (cancelled && best is null)
            throw new OperationCanceledException("Distillation was cancelled before the first epoch completed; there is nothing to return.", cancellation);

        var parameters = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["Teacher"] = teacher.Name,
            ["Epochs"] = options.Epochs.ToString(CultureInfo.InvariantCulture),
            ["BatchSize"] = options.BatchSize.ToString(CultureInfo.InvariantCulture),
            ["Optimizer"] = options.Optimizer.Kind.ToString(),
            ["LearningRate"] = F(options.Optimizer.LearningRate),
            ["Schedule"] = options.Optimizer.Schedule.ToString(),
            ["Loss"] = options.Loss.ToString(),
            ["Temperature"] = F(options.Temperature),
            ["Alpha"] = F(options.Alpha),
            ["Seed"] = options.Seed.ToString(CultureInfo.InvariantCulture),
        };
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
            report.Notes.Add($"{written} float initializers written back ({trainable:N0} trainable values); teacher outputs for {rows} training rows computed once in {teacherSeconds:F2} s.");
            if (stoppedEarly) report.Notes.Add($"Stopped early after epoch {history.Count}: no better {(validSet is null ? "training" : "validation")} loss for {options.Patience} epochs; weights of epoch {keptEpoch} kept.");
            if (cancelled) report.Notes.Add($"Cancelled after {history.Count} epochs; the best weights so far (epoch {keptEpoch}) were returned because -Partial was asked for.");
            report.Metrics["Epochs"] = history.Count;
            report.Metrics["BestEpoch"] = keptEpoch;
            report.Metrics["TrainableParameters"] = trainable;
            report.Metrics["TeacherSeconds"] = teacherSeconds;
            report.Metrics["TrainingSeconds"] = trainWatch.Elapsed.TotalSeconds;
            if (teacherValidAccuracy is { } tva) report.Metrics["TeacherValidationAccuracy"] = tva;
            foreach (var m in history)
            {
                string p = $"Epoch{m.Epoch}.";
                report.Metrics[p + "TrainingLoss"] = m.TrainingLoss;
                if (m.ValidationLoss is { } vl2) report.Metrics[p + "ValidationLoss"] = vl2;
                if (m.ValidationAccuracy is { } va) report.Metrics[p + "ValidationAccuracy"] = va;
                if (m.TeacherAgreement is { } ta) report.Metrics[p + "TeacherAgreement"] = ta;
                report.Entries.Add(new ReportEntry($"epoch {m.Epoch}", "Epoch", m.Epoch == keptEpoch ? "Kept" : "Trained",
                    $"loss {F(m.TrainingLoss)}" + (m.ValidationLoss is { } v ? $", validation loss {F(v)}" : "")
                    + (m.ValidationAccuracy is { } a ? $", validation accuracy {a:P2}" : "") + (m.TeacherAgreement is { } g ? $", teacher agreement {g:P2}" : "")
                    + $", lr {F(m.LearningRate)}, {m.Seconds:F2} s"));
            }
            return report;
        }, total);
        return new DistillationResult
        {
            Student = result,
            Epochs = history,
            BestEpoch = keptEpoch,
            StoppedEarly = stoppedEarly,
            Cancelled = cancelled,
            TeacherSeconds = teacherSeconds,
            TrainingSeconds = trainWatch.Elapsed.TotalSeconds,
            TeacherValidationAccuracy = teacherValidAccuracy,
            TrainableParameters = trainable,
        };
    }

    // ---------------------------------------------------------------- data

    sealed class Prepared
    {
        public required string Source;
        public required string[] Names;          // student input names
        public required Array[] Columns;          // per input: rows × rowSize values, float[] or long[] (token ids)
        public required int[][] RowShapes;
        public required int Rows;
        public long[]? Labels;
    }

    sealed class TeacherValues
    {
        public required float[] Values;
        public required int[] RowShape;
        public int RowSize => Tensor.Count(RowShape);
    }

    static Prepared Prepare(DataSet data, IReadOnlyList<ValueSignature> inputs, string role)
    {
        var map = data.MapToInputs(inputs);
        var names = inputs.Select(i => i.Name).ToArray();
        var columns = new Array[names.Length];
        var shapes = new int[names.Length][];
        for (int i = 0; i < names.Length; i++)
        {
            var a = map[names[i]];
            var dt = (Onnx.Proto.TensorProto.Types.DataType)inputs[i].ElementTypeCode;
            if (dt is not (Onnx.Proto.TensorProto.Types.DataType.Float or Onnx.Proto.TensorProto.Types.DataType.Int64))
                throw new EngineException("DistillationInputTypeUnsupported", EngineErrorKind.NotImplemented,
                    $"Student input '{names[i]}' is {inputs[i].ElementType}; the training engine takes float and int64 inputs.");
            if (a.Shape.Length == 0)
                throw new EngineException("DataShapeMismatch", EngineErrorKind.InvalidData, $"The {role} data's array for '{names[i]}' is a scalar, not rows.") { Target = data.Source };
            columns[i] = dt == Onnx.Proto.TensorProto.Types.DataType.Int64 ? a.AsInt64() : a.AsFloat();
            shapes[i] = a.Shape[1..].Select(d => checked((int)d)).ToArray();
        }
        int rows = checked((int)data.Rows);
        if (rows == 0) throw new EngineException("DataFileEmpty", EngineErrorKind.InvalidData, $"The {role} data '{data.Source}' has no rows.") { Target = data.Source };
        return new Prepared { Source = data.Source, Names = names, Columns = columns, RowShapes = shapes, Rows = rows, Labels = data.Labels };
    }

    static Dictionary<string, Tensor> Batch(Prepared data, int[] rows)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        for (int i = 0; i < data.Names.Length; i++)
        {
            int size = Tensor.Count(data.RowShapes[i]);
            var column = data.Columns[i];
            var values = Array.CreateInstance(column.GetType().GetElementType()!, rows.Length * size);
            for (int r = 0; r < rows.Length; r++) Array.Copy(column, (long)rows[r] * size, values, (long)r * size, size);
            int[] shape = [rows.Length, .. data.RowShapes[i]];
            result[data.Names[i]] = values is long[] ids ? Tensor.Int64(shape, ids) : Tensor.Float(shape, (float[])values);
        }
        return result;
    }

    static void CheckLabels(Prepared data, int classes, bool classification, string role)
    {
        if (data.Labels is not { } labels) return;
        if (!classification)
            throw new EngineException("DistillationLabelsUnsupported", EngineErrorKind.InvalidData,
                $"The {role} data '{data.Source}' has labels, but the output is not [batch, classes]; remove the label array to distil on the teacher's outputs alone.") { Target = data.Source };
        for (int i = 0; i < labels.Length; i++)
            if (labels[i] < 0 || labels[i] >= classes)
                throw new EngineException("LabelOutOfRange", EngineErrorKind.InvalidData,
                    $"The {role} data '{data.Source}' has label {labels[i]} at row {i}; the models have {classes} classes (labels 0..{classes - 1}).") { Target = data.Source };
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

    static TeacherValues RunTeacher(OnnxModel teacher, string output, List<(string Teacher, string Student)> pairing, Prepared data, DistillationOptions options, CancellationToken cancellation)
    {
        using var session = new ModelSession(teacher, options.TeacherSession);
        float[]? values = null;
        int[]? rowShape = null;
        for (int start = 0; start < data.Rows; start += options.TeacherBatchSize)
        {
            cancellation.ThrowIfCancellationRequested();
            int count = Math.Min(options.TeacherBatchSize, data.Rows - start);
            var batch = Batch(data, Enumerable.Range(start, count).ToArray());
            var feeds = pairing.ToDictionary(p => p.Teacher, p =>
            {
                var t = batch[p.Student];
                return new NamedArray(p.Teacher, t.Shape.Select(d => (long)d).ToArray(), t.IsInt ? t.Ints! : t.Data);
            }, StringComparer.Ordinal);
            var result = session.Run(feeds, [output], cancellation)[0];
            if (result.Shape.Length == 0 || result.Shape[0] != count)
                throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData,
                    $"Teacher output '{output}' has shape [{string.Join(",", result.Shape)}] for {count} rows; its first dimension must be the batch.");
            var shape = result.Shape[1..].Select(d => checked((int)d)).ToArray();
            if (rowShape is null) { rowShape = shape; values = new float[(long)data.Rows * Tensor.Count(shape)]; }
            else if (!rowShape.SequenceEqual(shape))
                throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData, $"Teacher output '{output}' changes shape between batches.");
            Array.Copy(result.AsFloat(), 0, values!, (long)start * Tensor.Count(shape), (long)count * Tensor.Count(shape));
        }
        return new TeacherValues { Values = values!, RowShape = rowShape! };
    }

    // ---------------------------------------------------------------- loss

    /// <summary>Mean loss over the batch and its gradient with respect to the student's output.</summary>
    static (double Loss, Tensor Grad) Loss(Tensor output, TeacherValues teacher, long[]? labels, int[] rows, int classes, bool classification, DistillationOptions o)
    {
        int rowSize = teacher.RowSize;
        int positions = rowSize / classes;           // softmax groups per input row (1 for [batch, classes])
        var s = output.Data;
        var grad = new float[s.Length];
        bool hard = labels is not null && classification;
        double soft = hard ? o.Alpha : 1.0;
        double total = 0;
        int groups = rows.Length * positions;
        var ps = new double[classes]; var pt = new double[classes];
        for (int r = 0; r < rows.Length; r++)
        {
            int tOff = rows[r] * rowSize;
            for (int g = 0; g < positions; g++)
            {
                int sOff = r * rowSize + g * classes, tBase = tOff + g * classes;
                if (o.Loss == DistillationLoss.MSE)
                {
                    for (int c = 0; c < classes; c++)
                    {
                        double d = s[sOff + c] - teacher.Values[tBase + c];
                        total += soft * d * d / classes;
                        grad[sOff + c] += (float)(soft * 2 * d / classes / groups);
                    }
                }
                else if (soft > 0)
                {
                    double T = o.Temperature;
                    SoftmaxInto(s, sOff, classes, T, ps, out double logZs, out double maxS);
                    SoftmaxInto(teacher.Values, tBase, classes, T, pt, out double logZt, out double maxT);
                    double kl = 0;
                    for (int c = 0; c < classes; c++)
                    {
                        if (pt[c] > 0)
                        {
                            double logPt = (teacher.Values[tBase + c] - maxT) / T - logZt;
                            double logPs = (s[sOff + c] - maxS) / T - logZs;
                            kl += pt[c] * (logPt - logPs);
                        }
                        grad[sOff + c] += (float)(soft * T * (ps[c] - pt[c]) / groups);
                    }
                    total += soft * T * T * kl;
                }
                if (hard && 1 - o.Alpha > 0)
                {
                    SoftmaxInto(s, sOff, classes, 1, ps, out double logZ, out double max);
                    long y = labels![rows[r]];
                    total += (1 - o.Alpha) * -((s[sOff + y] - max) - logZ);
                    for (int c = 0; c < classes; c++) grad[sOff + c] += (float)((1 - o.Alpha) * (ps[c] - (c == y ? 1 : 0)) / groups);
                }
            }
        }
        return (total / groups, Tensor.Float(output.Shape, grad));
    }

    static void SoftmaxInto(float[] z, int offset, int n, double T, double[] p, out double logZ, out double max)
    {
        max = double.NegativeInfinity;
        for (int c = 0; c < n; c++) max = Math.Max(max, z[offset + c]);
        double sum = 0;
        for (int c = 0; c < n; c++) { p[c] = Math.Exp((z[offset + c] - max) / T); sum += p[c]; }
        for (int c = 0; c < n; c++) p[c] /= sum;
        logZ = Math.Log(sum);
    }

    static (double Loss, double? Accuracy, double? Agreement) Evaluate(TrainingGraph graph, int outIndex, Prepared data, TeacherValues teacher,
        int classes, bool classification, DistillationOptions o, CancellationToken cancellation)
    {
        double loss = 0; int correct = 0, agree = 0, groupsTotal = 0;
        int positions = teacher.RowSize / classes;
        for (int start = 0; start < data.Rows; start += 256)
        {
            cancellation.ThrowIfCancellationRequested();
            var idx = Enumerable.Range(start, Math.Min(256, data.Rows - start)).ToArray();
            var output = graph.Forward(Batch(data, idx), training: false)[outIndex];
            var (l, _) = Loss(output, teacher, data.Labels, idx, classes, classification, o);
            loss += l * idx.Length;
            for (int r = 0; r < idx.Length; r++)
                for (int g = 0; g < positions; g++)
                {
                    int s = ArgMax(output.Data, (r * positions + g) * classes, classes);
                    int t = ArgMax(teacher.Values, (idx[r] * positions + g) * classes, classes);
                    if (s == t) agree++;
                    if (data.Labels is { } y && classification && s == y[idx[r]]) correct++;
                    groupsTotal++;
                }
        }
        return (loss / data.Rows, data.Labels is not null && classification ? (double)correct / data.Rows : null,
            o.Loss == DistillationLoss.KL || classification ? (double)agree / groupsTotal : null);
    }

    static int ArgMax(float[] v, int offset, int n)
    {
        int best = 0;
        for (int c = 1; c < n; c++) if (v[offset + c] > v[offset + best]) best = c;
        return best;
    }

    static double Accuracy(float[] values, long[] labels, int classes)
    {
        int correct = 0;
        for (int r = 0; r < labels.Length; r++) if (ArgMax(values, r * classes, classes) == labels[r]) correct++;
        return (double)correct / labels.Length;
    }

    static bool LooksLikeProbabilities(float[] values, int classes)
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

    static void ToLogProbabilities(float[] values)
    {
        for (int i = 0; i < values.Length; i++) values[i] = MathF.Log(MathF.Max(values[i], 1e-30f));
    }
}
