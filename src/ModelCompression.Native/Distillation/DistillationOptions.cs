using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;

namespace ModelCompression.Native.Distillation;

/// <summary>Soft-target loss: KL divergence of temperature-softened distributions (classification), or mean squared error of raw outputs (regression).</summary>
public enum DistillationLoss { KL, MSE }

public sealed record DistillationOptions
{
    public int Epochs { get; init; } = 30;
    public int BatchSize { get; init; } = 32;
    public OptimizerSettings Optimizer { get; init; } = new();
    /// <summary>Softening temperature T of the KL loss (the soft loss is scaled by T², after Hinton et al.).</summary>
    public double Temperature { get; init; } = 4;
    /// <summary>Weight of the soft (teacher) loss; 1 - Alpha weighs the hard-label cross-entropy when labels exist.</summary>
    public double Alpha { get; init; } = 0.7;
    public DistillationLoss Loss { get; init; } = DistillationLoss.KL;
    /// <summary>Seeds shuffling and dropout: the same seed and data give the same weights.</summary>
    public int Seed { get; init; } = 1;
    /// <summary>Stop after this many epochs without a better monitored loss (validation loss, or training loss without validation data) and keep the best weights; 0 trains every epoch.</summary>
    public int Patience { get; init; }
    /// <summary>Student initializers that keep their values.</summary>
    public IReadOnlyCollection<string> Freeze { get; init; } = [];
    /// <summary>On cancellation, return the best weights so far instead of throwing.</summary>
    public bool Partial { get; init; }
    public bool Shuffle { get; init; } = true;
    /// <summary>Fold each BatchNormalization that follows a Conv into the Conv's weights in the returned student.</summary>
    public bool FoldBatchNorm { get; init; } = true;
    /// <summary>Rows per teacher run when its outputs are computed and cached.</summary>
    public int TeacherBatchSize { get; init; } = 256;
    public SessionSettings? TeacherSession { get; init; }

    public void Validate()
    {
        static EngineException Bad(string id, string message) => new(id, EngineErrorKind.InvalidArgument, message);
        if (Epochs < 1) throw Bad("EpochsOutOfRange", $"Epochs must be at least 1, not {Epochs}.");
        if (BatchSize < 1) throw Bad("BatchSizeOutOfRange", $"The batch size must be at least 1, not {BatchSize}.");
        if (!(Temperature > 0) || double.IsInfinity(Temperature)) throw Bad("TemperatureOutOfRange", $"The temperature must be a positive number, not {Temperature}.");
        if (!(Alpha >= 0 && Alpha <= 1)) throw Bad("AlphaOutOfRange", $"Alpha must be between 0 and 1, not {Alpha}.");
        if (Patience < 0) throw Bad("PatienceOutOfRange", $"Patience must not be negative ({Patience}).");
        if (TeacherBatchSize < 1) throw Bad("BatchSizeOutOfRange", $"The teacher batch size must be at least 1, not {TeacherBatchSize}.");
        Optimizer.Validate();
    }
}

/// <summary>What one epoch achieved. Validation figures are null without validation data; accuracies are null without labels.</summary>
public sealed record EpochMetrics(
    int Epoch,
    double TrainingLoss,
    double? ValidationLoss,
    double? ValidationAccuracy,
    double? TeacherAgreement,
    double LearningRate,
    double Seconds,
    bool Improved);

/// <summary>Reported after each epoch: where training stands.</summary>
public sealed record DistillationProgress(int Epoch, int Epochs, EpochMetrics Metrics);

public sealed class DistillationResult
{
    public required Onnx.OnnxModel Student { get; init; }
    public required IReadOnlyList<EpochMetrics> Epochs { get; init; }
    /// <summary>The epoch whose weights the student has (the last one unless patience kept an earlier best).</summary>
    public int BestEpoch { get; init; }
    public bool StoppedEarly { get; init; }
    public bool Cancelled { get; init; }
    public double TeacherSeconds { get; init; }
    public double TrainingSeconds { get; init; }
    /// <summary>Teacher accuracy on the validation labels, when there are some.</summary>
    public double? TeacherValidationAccuracy { get; init; }
    public int TrainableParameters { get; init; }
}
