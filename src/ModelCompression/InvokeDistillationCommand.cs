using System.Globalization;
using System.Management.Automation;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Distillation;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Training;

namespace ModelCompression;

/// <summary>
/// Trains a student model to imitate a teacher (knowledge distillation): the teacher runs in ONNX Runtime once over
/// the data, the student trains in the module's own engine, and the trained student comes out as a new Model.
/// </summary>
[Cmdlet(VerbsLifecycle.Invoke, "Distillation", DefaultParameterSetName = StudentSet)]
[OutputType(typeof(Model))]
public sealed class InvokeDistillationCommand : ModelCmdletBase, IDisposable
{
    const string StudentSet = "Student";
    const string NewStudentSet = "NewStudent";

    /// <summary>The student: a model from the pipeline (a pruned copy of the teacher, a smaller model).</summary>
    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = StudentSet)]
    [ValidateNotNull]
    public Model? InputObject { get; set; }

    /// <summary>Instead of a student from the pipeline: an MLP with these hidden widths, shaped after the teacher.</summary>
    [Parameter(Mandatory = true, ParameterSetName = NewStudentSet)]
    [ValidateNotNullOrEmpty]
    [ValidateRange(1, 1 << 20)]
    public int[] HiddenLayers { get; set; } = [];

    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNull]
    [ModelArgument]
    public Model? Teacher { get; set; }

    [Parameter(Mandatory = true)]
    [ValidateNotNullOrEmpty]
    public string TrainingData { get; set; } = "";

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? ValidationData { get; set; }

    [Parameter]
    [ValidateRange(1, 1_000_000)]
    public int? Epochs { get; set; }

    /// <summary>Stops after this many optimizer steps (whichever of -Epochs and -MaxSteps comes first).</summary>
    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int? MaxSteps { get; set; }

    /// <summary>Tokens per training window: -TrainingData is then a token stream (one 1-D .npy array of token ids).</summary>
    [Parameter]
    [ValidateRange(1, 1 << 20)]
    public int? SequenceLength { get; set; }

    /// <summary>Metrics and validation every this many steps instead of after every epoch.</summary>
    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int ValidationInterval { get; set; }

    [Parameter]
    [ValidateRange(1, 1_000_000)]
    public int BatchSize { get; set; } = 32;

    [Parameter]
    public double LearningRate { get; set; } = 1e-3;

    [Parameter]
    [ValidateSet("Adam", "SGD")]
    public string Optimizer { get; set; } = "Adam";

    [Parameter]
    public double? Momentum { get; set; }

    [Parameter]
    public double WeightDecay { get; set; }

    [Parameter]
    [ValidateSet("Constant", "Cosine")]
    public string Schedule { get; set; } = "Constant";

    [Parameter]
    public double ClipNorm { get; set; }

    [Parameter]
    public double? Temperature { get; set; }

    [Parameter]
    public double? Alpha { get; set; }

    [Parameter]
    [ValidateSet("KL", "MSE")]
    public string Loss { get; set; } = "KL";

    [Parameter]
    public int Seed { get; set; } = 1;

    [Parameter]
    [ValidateRange(0, 1_000_000)]
    public int Patience { get; set; }

    [Parameter]
    [ValidateNotNull]
    public string[] Freeze { get; set; } = [];

    [Parameter]
    public SwitchParameter Partial { get; set; }

    /// <summary>Keep BatchNormalization nodes instead of folding them into the Conv before them.</summary>
    [Parameter]
    public SwitchParameter KeepBatchNorm { get; set; }

    /// <summary>Name of the variable that receives the best student so far when Ctrl+C stops training with -Partial.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? PartialVariable { get; set; }

    DataSet? training, validation;
    TokenStream? tokens;

    protected override void BeginProcessing()
    {
        // With -SequenceLength a .npy is a token stream (mapped, not loaded); any other file is loaded as data, which the
        // engine then refuses with the error that names the parameter that does not apply.
        string path = ResolveOutputPath(TrainingData);
        if (SequenceLength is not null && string.Equals(Path.GetExtension(path), ".npy", StringComparison.OrdinalIgnoreCase))
            tokens = InvokeOrTerminate(() => TokenStream.Open(path), TrainingData);
        else training = InvokeOrTerminate(() => DataSet.Load(path), TrainingData);
        if (ValidationData is not null) validation = InvokeOrTerminate(() => DataSet.Load(ResolveOutputPath(ValidationData)), ValidationData);
        bool kl = string.Equals(Loss, "KL", StringComparison.OrdinalIgnoreCase);
        if (!kl && Temperature is not null)
            WriteWarning("-Temperature applies to the KL loss only; with -Loss MSE the raw outputs are compared.");
        if (string.Equals(Optimizer, "Adam", StringComparison.OrdinalIgnoreCase) && Momentum is not null)
            WriteWarning("-Momentum applies to -Optimizer SGD only; Adam uses its own moment estimates.");
        if (training is { Labels: null } && Alpha is not null)
            WriteWarning($"The training data '{TrainingData}' has no labels, so the loss is the teacher loss alone and -Alpha does not apply.");
        if (!Partial && PartialVariable is not null)
            WriteWarning("-PartialVariable is used only with -Partial.");
    }

    protected override void ProcessRecord()
    {
        var teacher = Teacher!;
        var defaults = new DistillationOptions();
        var options = new DistillationOptions
        {
            Epochs = Epochs,
            MaxSteps = MaxSteps,
            SequenceLength = SequenceLength,
            ValidationInterval = ValidationInterval,
            BatchSize = BatchSize,
            Optimizer = new OptimizerSettings
            {
                Kind = string.Equals(Optimizer, "SGD", StringComparison.OrdinalIgnoreCase) ? OptimizerKind.Sgd : OptimizerKind.Adam,
                LearningRate = LearningRate,
                Momentum = Momentum ?? defaults.Optimizer.Momentum,
                WeightDecay = WeightDecay,
                Schedule = string.Equals(Schedule, "Cosine", StringComparison.OrdinalIgnoreCase) ? LearningRateSchedule.Cosine : LearningRateSchedule.Constant,
                ClipNorm = ClipNorm,
            },
            Temperature = Temperature ?? defaults.Temperature,
            Alpha = Alpha ?? defaults.Alpha,
            Loss = string.Equals(Loss, "MSE", StringComparison.OrdinalIgnoreCase) ? DistillationLoss.MSE : DistillationLoss.KL,
            Seed = Seed,
            Patience = Patience,
            Freeze = Freeze,
            Partial = Partial,
            FoldBatchNorm = !KeepBatchNorm,
        };
        object target = (object?)InputObject ?? teacher;
        var progress = NewProgress("Invoke-Distillation");
        TryInvoke(() =>
        {
            var student = InputObject?.Engine ?? StudentModels.Mlp(teacher.Engine, HiddenLayers, Seed);
            WriteVerbose($"Distilling '{teacher.Name}' ({teacher.Parameters:N0} parameters) into '{student.Name}' ({student.Initializers.Sum(TensorData.ElementCount):N0} parameters).");
            progress.Report("Running the teacher over the data", 0);
            void Report(DistillationProgress p)
            {
                // Once Ctrl+C is pressed the host takes no more records; the engine sees the token at its next batch.
                if (CancellationToken.IsCancellationRequested) return;
                double fraction = p.TotalSteps is { } all && all > 0 ? (double)p.Step / all : 0;
                try
                {
                    if (p.Metrics is not { } m)
                    {
                        progress.Report("Training", fraction, $"step {p.Step}/{p.TotalSteps}: loss {Readable(p.RunningLoss)}");
                        return;
                    }
                    string status = (ValidationInterval > 0 ? $"step {m.Step}/{p.TotalSteps}" : p.Epochs is { } epochs ? $"epoch {p.Epoch}/{epochs}" : $"epoch {p.Epoch}")
                        + $": loss {Readable(m.TrainingLoss)}"
                        + (m.ValidationLoss is { } vl ? $", validation loss {Readable(vl)}" : "")
                        + (m.ValidationPerplexity is { } vp ? string.Create(CultureInfo.InvariantCulture, $", validation perplexity {vp:F3}") : "")
                        + (m.ValidationAccuracy is { } va ? string.Create(CultureInfo.InvariantCulture, $", validation accuracy {va:P2}") : "")
                        + (m.TeacherAgreement is { } ta ? string.Create(CultureInfo.InvariantCulture, $", teacher agreement {ta:P2}") : "");
                    progress.Report("Training", fraction, status);
                    WriteVerbose(status);
                }
                catch (PipelineStoppedException) { }
            }
            var result = tokens is not null
                ? Distiller.Distill(teacher.Engine, student, tokens, validation, options, Report, CancellationToken)
                : Distiller.Distill(teacher.Engine, student, training!, validation, options, Report, CancellationToken);
            var model = new Model(result.Student, InputObject ?? teacher);
            if (result.Cancelled)
            {
                // A stopped pipeline cannot output objects: the best student so far goes into the variable instead.
                SessionState.PSVariable.Set(PartialVariable ?? "DistillationPartial", model);
                throw new PipelineStoppedException();
            }
            progress.Complete();
            if (result.StoppedEarly) WriteVerbose($"Stopped early after {result.Epochs.Count} records; kept the weights of record {result.BestEpoch}.");
            WriteObject(model);
        }, target);
    }

    /// <summary>A loss as people read it: four significant digits, whole numbers with separators rather than 3.34E+06.</summary>
    static string Readable(double value) =>
        value.ToString(Math.Abs(value) >= 1e4 && Math.Abs(value) < 1e15 ? "N0" : "G4", CultureInfo.InvariantCulture);

    public void Dispose() => tokens?.Dispose();
}
