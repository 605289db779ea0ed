using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;

namespace ModelCompression.Native.Distillation;

/// <summary>The training data: a probe batch (its row count), the batch source once the teacher is known, and the rows (for label checks) when it is a data file.</summary>
internal delegate (Dictionary<string, Tensor> Probe, int ProbeRows, Func<TeacherModel, int[], IBatchSource> Source, Prepared? Rows) TrainingData(Random rng);

/// <summary>
/// The first phase of a distillation: everything that can be wrong is checked before any training. The models are
/// paired (inputs, outputs), the student is loaded for training, the teacher opened, and both are probed on the
/// training and validation data so that their outputs agree in shape per row; the labels are checked against it.
/// </summary>
internal sealed class DistillationSetup : IDisposable
{
    public required OnnxModel Student { get; init; }
    public required TrainingGraph Graph { get; init; }
    /// <summary>The student output that is distilled, and its index among the graph's outputs.</summary>
    public required string StudentOutput { get; init; }
    public required int OutIndex { get; init; }
    public required TeacherModel Teacher { get; init; }
    public required int TrainableValues { get; init; }
    /// <summary>The output's shape per row on the training data; the last dimension holds the classes.</summary>
    public required int[] RowShape { get; init; }
    public required int[] ValidShape { get; init; }
    public required Func<TeacherModel, int[], IBatchSource> MakeSource { get; init; }
    public Prepared? TrainRows { get; init; }
    public Prepared? ValidRows { get; init; }
    /// <summary>What the report says about the setup (teacher probabilities, masks kept, labels).</summary>
    public List<string> Notes { get; } = [];

    public int Classes => RowShape.Length == 0 ? 1 : RowShape[^1];
    /// <summary>Softmax groups per row: 1 for a classifier, the positions of a sequence output.</summary>
    public int Positions => Tensor.Count(RowShape) / Math.Max(1, Classes);
    public int ValidPositions => Tensor.Count(ValidShape) / Math.Max(1, Classes);

    public void Dispose() => Teacher.Dispose();

    public static DistillationSetup Prepare(OnnxModel teacherModel, OnnxModel student, DataSet? validation, DistillationOptions options,
        TrainingData trainingData, Random rng, CancellationToken cancellation)
    {
        var pairing = PairInputs(teacherModel, student);
        var (teacherOutput, studentOutput) = PairOutputs(teacherModel, student);
        var graph = TrainingGraph.Load(student, new TrainingGraphOptions { Freeze = options.Freeze, Seed = options.Seed });
        int trainable = graph.Parameters.Where(p => p.Trainable).Sum(p => p.Value.Length);
        if (trainable == 0)
            throw new EngineException("DistillationNothingToTrain", EngineErrorKind.InvalidArgument,
                $"Student '{student.Name}' has no trainable float initializer that reaches its output '{studentOutput}'" + (options.Freeze.Count > 0 ? " (everything is frozen)." : "."));
        int outIndex = graph.OutputNames.ToList().IndexOf(studentOutput);

        var teacher = new TeacherModel(teacherModel, pairing, teacherOutput, options.TeacherSession);
        try
        {
            var (probe, probeRows, makeSource, trainRows) = trainingData(rng);
            var validRows = validation is null ? null : Prepared.From(validation, student, "validation");
            var shapes = new ShapeProbe(graph, outIndex, teacher, student, options, cancellation);
            var (rowShape, teacherProbe) = shapes.RowShape(probe, probeRows, "training");
            var validShape = validRows is null ? rowShape : shapes.ValidationShape(validRows, rowShape);
            var setup = new DistillationSetup
            {
                Student = student, Graph = graph, StudentOutput = studentOutput, OutIndex = outIndex, Teacher = teacher, TrainableValues = trainable,
                RowShape = rowShape, ValidShape = validShape, MakeSource = makeSource, TrainRows = trainRows, ValidRows = validRows,
            };
            if (trainRows is not null) CheckLabels(trainRows, setup.Classes, setup.Positions, "training");
            if (validRows is not null) CheckLabels(validRows, setup.Classes, setup.ValidPositions, "validation");
            setup.AddNotes(options, teacherProbe);
            return setup;
        }
        catch
        {
            teacher.Dispose();
            throw;
        }
    }

    void AddNotes(DistillationOptions options, float[] teacherProbe)
    {
        bool windows = options.SequenceLength is not null;
        if (options.Loss == DistillationLoss.KL && TeacherModel.LooksLikeProbabilities(teacherProbe, Classes))
        {
            Teacher.Probabilities = true;
            Notes.Add("The teacher's outputs are probabilities (non-negative rows summing to 1); their logarithms served as its logits.");
        }
        var masks = Graph.Parameters.Where(p => p.IsMask).Select(p => p.Name).ToList();
        if (masks.Count > 0)
            Notes.Add($"{string.Join(", ", masks.Select(m => "'" + m + "'"))} hold{(masks.Count == 1 ? "s" : "")} an additive attention mask (0 and a large negative value), kept as a constant.");
        var tables = Graph.Parameters.Where(p => p.IsRotaryTable).Select(p => "'" + p.Name + "'").ToList();
        if (tables.Count > 0) Notes.Add($"{string.Join(", ", tables)} hold rotary position tables (cos and sin), kept as constants.");
        bool hasLabels = windows || TrainRows?.Labels is not null;
        if (!hasLabels) Notes.Add("The training data has no labels: the loss is the soft (teacher) loss alone, so Alpha does not apply.");
        if (windows) Notes.Add($"Training windows of {options.SequenceLength} tokens at random starts; the labels are the next tokens.");
        if (options.Loss == DistillationLoss.MSE) Notes.Add("MSE loss compares raw outputs; the temperature applies to the KL loss only.");
    }

    /// <summary>Runs both models on a probe batch: the student's output must have the teacher's shape per row, on the training and the validation data.</summary>
    sealed class ShapeProbe(TrainingGraph graph, int outIndex, TeacherModel teacher, OnnxModel student, DistillationOptions options, CancellationToken cancellation)
    {
        public (int[] Shape, float[] Teacher) RowShape(Dictionary<string, Tensor> inputs, int rows, string role)
        {
            int[] shape;
            try
            {
                var output = graph.Forward(inputs, training: false)[outIndex];
                shape = output.Shape.Length > 1 ? output.Shape[1..] : [];
            }
            catch (EngineException e) when (options.SequenceLength is not null && role == "training" && e.ErrorId is "TrainingShapeMismatch" or "TrainingIndexOutOfRange")
            {
                throw new EngineException("SequenceLengthUnsupported", EngineErrorKind.InvalidArgument,
                    $"Student '{student.Name}' cannot run windows of {options.SequenceLength} tokens (is it longer than the model's context?): {e.Message}", e);
            }
            var (teacherShape, values) = teacher.Probe(inputs, rows, cancellation);
            if (!shape.SequenceEqual(teacherShape))
                throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData,
                    $"On the {role} data, teacher output '{teacher.Output}' has shape [batch,{string.Join(",", teacherShape)}] per input row but student output '{graph.OutputNames[outIndex]}' has [batch,{string.Join(",", shape)}].");
            return (shape, values);
        }

        public int[] ValidationShape(Prepared validRows, int[] rowShape)
        {
            int n = Math.Min(8, validRows.Rows);
            var validShape = RowShape(validRows.Batch(Enumerable.Range(0, n).ToArray()), n, "validation").Shape;
            int classes = rowShape.Length == 0 ? 1 : rowShape[^1];
            if ((validShape.Length == 0 ? 1 : validShape[^1]) != classes)
                throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData,
                    $"The models give [batch,{string.Join(",", validShape)}] on the validation data but [batch,{string.Join(",", rowShape)}] on the training data; the last dimension (the classes) must agree.");
            return validShape;
        }
    }

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

    /// <summary>
    /// The inputs that data feed, paired by name (or else by position); the inputs a language model derives (mask,
    /// positions, cache) are not paired: each model derives its own, so a teacher and student may differ in cache layout.
    /// </summary>
    static List<(string Teacher, string Student)> PairInputs(OnnxModel teacher, OnnxModel student)
    {
        var ti = DataInputs(teacher);
        var si = DataInputs(student);
        if (ti.Count != si.Count)
            throw new EngineException("DistillationInputMismatch", EngineErrorKind.InvalidData,
                $"Teacher '{teacher.Name}' has {ti.Count} inputs ({string.Join(", ", ti)}) but student '{student.Name}' has {si.Count} ({string.Join(", ", si)}).");
        bool byName = ti.All(t => si.Any(s => s.Name == t.Name));
        var pairs = new List<(string, string)>();
        for (int i = 0; i < si.Count; i++)
        {
            var s = si[i];
            var t = byName ? ti.First(x => x.Name == s.Name) : ti[i];
            if (t.ElementType != s.ElementType || !SameRowShape(t, s))
                throw new EngineException("DistillationInputMismatch", EngineErrorKind.InvalidData,
                    $"Teacher input {t} and student input {s} disagree (element type or dimensions).");
            pairs.Add((t.Name, s.Name));
        }
        return pairs;
    }

    static List<ValueSignature> DataInputs(OnnxModel model)
    {
        var derived = DecoderContract.Of(model)?.DerivedInputs.ToHashSet(StringComparer.Ordinal) ?? [];
        return InputSynthesizer.Inputs(model).Where(i => !derived.Contains(i.Name)).ToList();
    }

    /// <summary>The outputs that are distilled: a language model's logits (its cache outputs are not), or else each model's first output.</summary>
    static (string Teacher, string Student) PairOutputs(OnnxModel teacher, OnnxModel student)
    {
        static ValueSignature? Distilled(OnnxModel m)
        {
            var outputs = m.Proto.Graph.Output.Select(ValueSignature.From).ToList();
            return DecoderContract.Of(m)?.Logits is { } logits ? outputs.First(o => o.Name == logits) : outputs.FirstOrDefault();
        }
        if (Distilled(teacher) is not { } t || Distilled(student) is not { } s)
            throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData, "Teacher and student need at least one output each.");
        if (!SameRowShape(t, s))
            throw new EngineException("DistillationOutputMismatch", EngineErrorKind.InvalidData,
                $"Teacher output {t} and student output {s} have different shapes; the student must produce what the teacher produces.");
        return (t.Name, s.Name);
    }

    /// <summary>Same rank (or one unknown) and no two fixed dimensions after the batch that differ.</summary>
    static bool SameRowShape(ValueSignature t, ValueSignature s)
    {
        bool rankOk = t.Shape.Count == s.Shape.Count || t.Shape.Count == 0 || s.Shape.Count == 0;
        return rankOk && t.Shape.Zip(s.Shape).Skip(1).All(p => !long.TryParse(p.First, out long a) || !long.TryParse(p.Second, out long b) || a == b);
    }
}
