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
public sealed class InvokeDistillationCommand : ModelCmdletBase
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
    public int Epochs { get; set; } = 30;

    [Parameter]
    [ValidateRange(1, 1_000_000)]
    public int BatchSize { get; set; } = 32;

    [Parameter]
    public double LearningRate { get; set; } = 1e-3;

    [Parameter]
    [ValidateSet("Adam", "SGD")]
    public string Optimizer { get; set; } = "Adam";

    [Parameter]
    public double Momentum { get; set; } = 0.9;

    [Parameter]
    public double WeightDecay { get; set; }

    [Parameter]
    [ValidateSet("Constant", "Cosine")]
    public string Schedule { get; set; } = "Constant";

    [Parameter]
    public double ClipNorm { get; set; }

    [Parameter]
    public double Temperature { get; set; } = 4;

    [Parameter]
    public double Alpha { get; set; } = 0.7;

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
    public string PartialVariable { get; set; } = "DistillationPartial";

    DataSet? training, validation;

    protected override void BeginProcessing()
    {
        training = InvokeOrTerminate(() => DataSet.Load(ResolveOutputPath(TrainingData)), TrainingData);
        if (ValidationData is not null) validation = InvokeOrTerminate(() => DataSet.Load(ResolveOutputPath(ValidationData)), ValidationData);
        bool kl = string.Equals(Loss, "KL", StringComparison.OrdinalIgnoreCase);
        if (!kl && MyInvocation.BoundParameters.ContainsKey(nameof(Temperature)))
            WriteWarning("-Temperature applies to the KL loss only; with -Loss MSE the raw outputs are compared.");
        if (string.Equals(Optimizer, "Adam", StringComparison.OrdinalIgnoreCase) && MyInvocation.BoundParameters.ContainsKey(nameof(Momentum)))
            WriteWarning("-Momentum applies to -Optimizer SGD only; Adam uses its own moment estimates.");
        if (training.Labels is null && MyInvocation.BoundParameters.ContainsKey(nameof(Alpha)))
            WriteWarning($"The training data '{TrainingData}' has no labels, so the loss is the teacher loss alone and -Alpha does not apply.");
        if (!Partial && MyInvocation.BoundParameters.ContainsKey(nameof(PartialVariable)))
            WriteWarning("-PartialVariable is used only with -Partial.");
    }

    protected override void ProcessRecord()
    {
        var teacher = Teacher!;
        var options = new DistillationOptions
        {
            Epochs = Epochs,
            BatchSize = BatchSize,
            Optimizer = new OptimizerSettings
            {
                Kind = string.Equals(Optimizer, "SGD", StringComparison.OrdinalIgnoreCase) ? OptimizerKind.Sgd : OptimizerKind.Adam,
                LearningRate = LearningRate,
                Momentum = Momentum,
                WeightDecay = WeightDecay,
                Schedule = string.Equals(Schedule, "Cosine", StringComparison.OrdinalIgnoreCase) ? LearningRateSchedule.Cosine : LearningRateSchedule.Constant,
                ClipNorm = ClipNorm,
            },
            Temperature = Temperature,
            Alpha = Alpha,
            Loss = string.Equals(Loss, "MSE", StringComparison.OrdinalIgnoreCase) ? DistillationLoss.MSE : DistillationLoss.KL,
            Seed = Seed,
            Patience = Patience,
            Freeze = Freeze,
            Partial = Partial,
            FoldBatchNorm = !KeepBatchNorm,
        };
        object target = (object?)InputObject ?? teacher;
        const string activity = "Invoke-Distillation";
        TryInvoke(() =>
        {
            var student = InputObject?.Engine ?? StudentModels.Mlp(teacher.Engine, HiddenLayers, Seed);
            WriteVerbose($"Distilling '{teacher.Name}' ({teacher.Parameters:N0} parameters) into '{student.Name}' ({student.Initializers.Sum(TensorData.ElementCount):N0} parameters).");
            WriteProgress(new ProgressRecord(1, activity, "Running the teacher over the data") { PercentComplete = 0 });
            var result = Distiller.Distill(teacher.Engine, student, training!, validation, options, p =>
            {
                var m = p.Metrics;
                string status = string.Create(CultureInfo.InvariantCulture, $"epoch {p.Epoch}/{p.Epochs}: loss {m.TrainingLoss:G4}")
                    + (m.ValidationLoss is { } vl ? string.Create(CultureInfo.InvariantCulture, $", validation loss {vl:G4}") : "")
                    + (m.ValidationAccuracy is { } va ? string.Create(CultureInfo.InvariantCulture, $", validation accuracy {va:P2}") : "")
                    + (m.TeacherAgreement is { } ta ? string.Create(CultureInfo.InvariantCulture, $", teacher agreement {ta:P2}") : "");
                // Once Ctrl+C is pressed the host takes no more records; the engine sees the token at its next batch.
                if (CancellationToken.IsCancellationRequested) return;
                try
                {
                    WriteProgress(new ProgressRecord(1, activity, status) { PercentComplete = (int)(100.0 * p.Epoch / p.Epochs) });
                    WriteVerbose(status);
                }
                catch (PipelineStoppedException) { }
            }, CancellationToken);
            var model = new Model(result.Student, InputObject ?? teacher);
            if (result.Cancelled)
            {
                // A stopped pipeline cannot output objects: the best student so far goes into the variable instead.
                SessionState.PSVariable.Set(PartialVariable, model);
                throw new PipelineStoppedException();
            }
            CompleteProgress(activity);
            if (result.StoppedEarly) WriteVerbose($"Stopped early at epoch {result.Epochs.Count}; kept the weights of epoch {result.BestEpoch}.");
            WriteObject(model);
        }, target);
    }
}
