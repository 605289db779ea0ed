using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;

namespace ModelCompression.Native.Distillation;

/// <summary>Soft-target loss: KL divergence of temperature-softened distributions (classification), or mean squared error of raw outputs (regression).</summary>
public enum DistillationLoss { KL, MSE }

public sealed record DistillationOptions
{
    public const int DefaultEpochs = 30;

    /// <summary>Passes over the training data; null means <see cref="DefaultEpochs"/>, or no bound when <see cref="MaxSteps"/> is set.</summary>
    public int? Epochs { get; init; }
    /// <summary>Optimizer steps at most (training stops at whichever of Epochs and MaxSteps comes first); null: no bound.</summary>
    public int? MaxSteps { get; init; }
    /// <summary>Tokens per training window; set exactly when the training data is a <see cref="Data.TokenStream"/>.</summary>
    public int? SequenceLength { get; init; }
    /// <summary>Record metrics (and evaluate the validation data) every this many steps instead of after every epoch; 0: per epoch.</summary>
    public int ValidationInterval { get; init; }
    /// <summary>Rows (or token windows) per step.</summary>
    public int BatchSize { get; init; } = 32;
    public OptimizerSettings Optimizer { get; init; } = new();
    /// <summary>Softening temperature T of the KL loss (the soft loss is scaled by T², after Hinton et al.).</summary>
    public double Temperature { get; init; } = 4;
    /// <summary>Weight of the soft (teacher) loss; 1 - Alpha weighs the hard-label cross-entropy when labels exist.</summary>
    public double Alpha { get; init; } = 0.7;
    public DistillationLoss Loss { get; init; } = DistillationLoss.KL;
    /// <summary>Seeds shuffling, token windows and dropout: the same seed and data give the same weights.</summary>
    public int Seed { get; init; } = 1;
    /// <summary>Stop after this many records (epochs, or validation intervals) without a better monitored loss (validation loss, or training loss without validation data) and keep the best weights; 0 trains to the end.</summary>
    public int Patience { get; init; }
    /// <summary>Student initializers that keep their values.</summary>
    public IReadOnlyCollection<string> Freeze { get; init; } = [];
    /// <summary>On cancellation, return the best weights so far instead of throwing.</summary>
    public bool Partial { get; init; }
    /// <summary>Shuffle the rows of a data file every epoch (token windows are always drawn at random).</summary>
    public bool Shuffle { get; init; } = true;
    /// <summary>Fold each BatchNormalization that follows a Conv into the Conv's weights in the returned student.</summary>
    public bool FoldBatchNorm { get; init; } = true;
    /// <summary>Rows per teacher run when its outputs are computed and cached.</summary>
    public int TeacherBatchSize { get; init; } = 256;
    public SessionSettings? TeacherSession { get; init; }

    /// <summary>Epochs that bound training: the given number, the default, or none (null) when only <see cref="MaxSteps"/> bounds it.</summary>
    public int? EpochLimit => Epochs ?? (MaxSteps is null ? DefaultEpochs : null);

    public void Validate()
    {
        static EngineException Bad(string id, string message) => new(id, EngineErrorKind.InvalidArgument, message);
        if (Epochs is < 1) throw Bad("EpochsOutOfRange", $"Epochs must be at least 1, not {Epochs}.");
        if (MaxSteps is < 1) throw Bad("MaxStepsOutOfRange", $"MaxSteps must be at least 1, not {MaxSteps}.");
        if (SequenceLength is < 1) throw Bad("SequenceLengthOutOfRange", $"The sequence length must be at least 1, not {SequenceLength}.");
        if (ValidationInterval < 0) throw Bad("ValidationIntervalOutOfRange", $"The validation interval must not be negative ({ValidationInterval}).");
        if (BatchSize < 1) throw Bad("BatchSizeOutOfRange", $"The batch size must be at least 1, not {BatchSize}.");
        if ((long)BatchSize * (SequenceLength ?? 1) > Array.MaxLength)
            throw Bad("BatchSizeOutOfRange", $"A batch of {BatchSize:N0} windows of {SequenceLength:N0} tokens is more tokens than one array holds; use a smaller -BatchSize or -SequenceLength.");
        if (!(Temperature > 0) || double.IsInfinity(Temperature)) throw Bad("TemperatureOutOfRange", $"The temperature must be a positive number, not {Temperature}.");
        if (!(Alpha >= 0 && Alpha <= 1)) throw Bad("AlphaOutOfRange", $"Alpha must be between 0 and 1, not {Alpha}.");
        if (Patience < 0) throw Bad("PatienceOutOfRange", $"Patience must not be negative ({Patience}).");
        if (TeacherBatchSize < 1) throw Bad("BatchSizeOutOfRange", $"The teacher batch size must be at least 1, not {TeacherBatchSize}.");
        Optimizer.Validate();
    }
}

/// <summary>
/// What training achieved up to one record: the end of an epoch, or every <see cref="DistillationOptions.ValidationInterval"/>
/// steps. Validation figures are null without validation data; accuracies and perplexity are null without labels;
/// perplexity (exp of the mean cross-entropy with the labels) is given for sequence outputs.
/// </summary>
public sealed record EpochMetrics(
    int Epoch,
    double TrainingLoss,
    double? ValidationLoss,
    double? ValidationAccuracy,
    double? TeacherAgreement,
    double LearningRate,
    double Seconds,
    bool Improved,
    long Step = 0,
    double? ValidationPerplexity = null);

/// <summary>
/// Reported at every record (with <see cref="Metrics"/>) and, between records, about once a second (without):
/// where training stands.
/// </summary>
public sealed record DistillationProgress(int Epoch, int? Epochs, EpochMetrics? Metrics, long Step = 0, long? TotalSteps = null, double RunningLoss = double.NaN);

/// <summary>Seconds spent per part of the training steps (evaluation excluded), summed over all steps.</summary>
public sealed record StepTiming(double Data, double Teacher, double Forward, double Loss, double Backward, double Optimizer)
{
    public double Total => Data + Teacher + Forward + Loss + Backward + Optimizer;
}

public sealed class DistillationResult
{
    public required Onnx.OnnxModel Student { get; init; }
    /// <summary>One record per epoch, or per validation interval.</summary>
    public required IReadOnlyList<EpochMetrics> Epochs { get; init; }
    /// <summary>The record whose weights the student has (the last one unless patience kept an earlier best), counted from 1.</summary>
    public int BestEpoch { get; init; }
    public bool StoppedEarly { get; init; }
    public bool Cancelled { get; init; }
    /// <summary>Optimizer steps taken.</summary>
    public long Steps { get; init; }
    /// <summary>Seconds spent computing the teacher's cached outputs before training (per-step teacher runs are in <see cref="Timing"/>).</summary>
    public double TeacherSeconds { get; init; }
    public double TrainingSeconds { get; init; }
    /// <summary>Where the steps' time went (teacher runs included, evaluation excluded).</summary>
    public StepTiming Timing { get; init; } = new(0, 0, 0, 0, 0, 0);
    /// <summary>Time per op type of the student's graph, forward and backward, over the whole run.</summary>
    public IReadOnlyList<OpTiming> OpTimings { get; init; } = [];
    /// <summary>Teacher accuracy on the validation labels, when there are some.</summary>
    public double? TeacherValidationAccuracy { get; init; }
    /// <summary>Teacher perplexity on the validation labels, for sequence outputs.</summary>
    public double? TeacherValidationPerplexity { get; init; }
    public int TrainableParameters { get; init; }
}
