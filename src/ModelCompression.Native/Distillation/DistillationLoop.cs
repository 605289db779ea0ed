using System.Diagnostics;
using ModelCompression.Native.Training;

namespace ModelCompression.Native.Distillation;

/// <summary>
/// The training phase of a distillation: optimizer steps over the batch source until the epoch limit or
/// <see cref="DistillationOptions.MaxSteps"/>, a record (metrics, validation) after every epoch or validation interval,
/// and early stopping: after <see cref="DistillationOptions.Patience"/> records without a better monitored loss, or on
/// cancellation with <see cref="DistillationOptions.Partial"/>, the best weights so far are kept.
/// </summary>
internal sealed class DistillationLoop
{
    readonly DistillationSetup setup;
    readonly DistillationOptions options;
    readonly IBatchSource source;
    readonly RowBatches? validSource;
    readonly Action<DistillationProgress>? progress;
    readonly CancellationToken cancellation;
    readonly TrainingGraph graph;
    readonly Optimizer optimizer;
    readonly long[] phase = new long[6];   // data, teacher, forward, loss, backward, optimizer (Stopwatch ticks)
    readonly Stopwatch recordWatch = new(), progressWatch = new();
    float[]? grad;
    double lossSum;
    long lossGroups;
    Dictionary<string, float[]>? best;
    double bestLoss = double.PositiveInfinity;
    int bestRecord, sinceBest;

    public DistillationLoop(DistillationSetup setup, DistillationOptions options, IBatchSource source, RowBatches? validSource,
        Action<DistillationProgress>? progress, CancellationToken cancellation)
    {
        this.setup = setup; this.options = options; this.source = source; this.validSource = validSource;
        this.progress = progress; this.cancellation = cancellation;
        graph = setup.Graph;
        // Training ends at the first of the epoch limit and -MaxSteps (options always set one of them).
        TotalSteps = Math.Min(options.EpochLimit is { } el ? el * source.StepsPerEpoch : long.MaxValue, options.MaxSteps ?? long.MaxValue);
        optimizer = new Optimizer(options.Optimizer, graph.Parameters, TotalSteps);
    }

    public long TotalSteps { get; }
    public long Steps { get; private set; }
    /// <summary>One record per epoch, or per validation interval.</summary>
    public List<EpochMetrics> History { get; } = [];
    /// <summary>The record whose weights the student has, counted from 1.</summary>
    public int Kept { get; private set; }
    public bool StoppedEarly { get; private set; }
    public bool Cancelled { get; private set; }
    public double Seconds { get; private set; }
    /// <summary>Records are every <see cref="DistillationOptions.ValidationInterval"/> steps rather than per epoch.</summary>
    public bool BySteps => options.ValidationInterval > 0;

    public StepTiming Timing
    {
        get
        {
            static double Sec(long ticks) => ticks / (double)Stopwatch.Frequency;
            return new StepTiming(Sec(phase[0]), Sec(phase[1]), Sec(phase[2]), Sec(phase[3]), Sec(phase[4]), Sec(phase[5]));
        }
    }

    /// <summary>Trains to the end (or an early stop), then leaves the kept weights in the graph.</summary>
    public void Run()
    {
        var watch = Stopwatch.StartNew();
        graph.ResetTiming();
        try { Train(); }
        catch (OperationCanceledException) when (options.Partial) { Cancelled = true; }
        KeepBest();
        Seconds = watch.Elapsed.TotalSeconds;
    }

    void Train()
    {
        recordWatch.Restart(); progressWatch.Restart();
        int? epochLimit = options.EpochLimit;
        long stepsPerEpoch = source.StepsPerEpoch;
        for (int epoch = 1; epochLimit is null || epoch <= epochLimit; epoch++)
        {
            source.StartEpoch();
            for (long s = 0; s < stepsPerEpoch; s++)
            {
                cancellation.ThrowIfCancellationRequested();
                double lr = optimizer.CurrentLearningRate;
                Step();
                bool last = Steps >= TotalSteps;
                bool record = BySteps ? Steps % options.ValidationInterval == 0 || last : s == stepsPerEpoch - 1 || last;
                if (!record)
                {
                    if (progress is not null && progressWatch.Elapsed.TotalSeconds >= 1)
                    {
                        progressWatch.Restart();
                        progress(new DistillationProgress(epoch, epochLimit, null, Steps, TotalSteps, lossSum / Math.Max(1, lossGroups)));
                    }
                    continue;
                }
                Record(epoch, lr);
                if (last) return;
                if (options.Patience > 0 && sinceBest >= options.Patience) { StoppedEarly = true; return; }
            }
        }
    }

    /// <summary>One optimizer step on the next batch, its time added to the phases.</summary>
    void Step()
    {
        var teacher = setup.Teacher;
        long teacherBefore = teacher.RunTicks;
        long t0 = Stopwatch.GetTimestamp();
        var batch = source.Next(cancellation);
        long t1 = Stopwatch.GetTimestamp();
        long teacherTicks = teacher.RunTicks - teacherBefore;
        var output = graph.Forward(batch.Inputs, training: true)[setup.OutIndex];
        long t2 = Stopwatch.GetTimestamp();
        if (grad is null || grad.Length != output.Length) grad = new float[output.Length];
        var sums = SoftTargetLoss.Compute(output.Data, batch.Targets, batch.Rows, setup.Positions, setup.Classes, options, grad);
        long t3 = Stopwatch.GetTimestamp();
        graph.Backward(new Dictionary<string, Tensor> { [setup.StudentOutput] = Tensor.Float(output.Shape, grad) });
        long t4 = Stopwatch.GetTimestamp();
        optimizer.Step();
        long t5 = Stopwatch.GetTimestamp();
        phase[0] += t1 - t0 - teacherTicks; phase[1] += teacherTicks; phase[2] += t2 - t1; phase[3] += t3 - t2; phase[4] += t4 - t3; phase[5] += t5 - t4;
        Steps++;
        lossSum += sums.Loss; lossGroups += sums.Groups;
    }

    /// <summary>Ends a record: the training loss since the last one, the validation metrics, and whether the monitored loss improved.</summary>
    void Record(int epoch, double lr)
    {
        double trainLoss = lossSum / Math.Max(1, lossGroups);
        if (double.IsNaN(trainLoss) || double.IsInfinity(trainLoss))
            throw Diverged("the loss is not a finite number");
        double? validLoss = null, validAcc = null, agreement = null, perplexity = null;
        if (validSource is not null)
        {
            int positions = setup.ValidPositions, classes = setup.Classes;
            var v = Evaluate(validSource, positions, classes);
            validLoss = v.Loss / Math.Max(1, v.Groups);
            if (v.Labelled > 0) validAcc = (double)v.Correct / v.Labelled;
            if (v.Labelled > 0 && positions > 1) perplexity = Math.Exp(v.CrossEntropy / v.Labelled);
            if (options.Loss == DistillationLoss.KL || positions == 1 && classes > 1) agreement = (double)v.Agree / Math.Max(1, v.Groups);
            if (double.IsNaN(validLoss.Value)) throw Diverged("the validation loss is not a number");
        }
        double monitored = validLoss ?? trainLoss;
        bool improved = monitored < bestLoss;
        if (improved)
        {
            bestLoss = monitored; bestRecord = History.Count + 1; sinceBest = 0;
            if (options.Patience > 0 || options.Partial) best = graph.Snapshot();
        }
        else sinceBest++;
        var metrics = new EpochMetrics(epoch, trainLoss, validLoss, validAcc, agreement, lr, recordWatch.Elapsed.TotalSeconds, improved, Steps, perplexity);
        History.Add(metrics);
        progress?.Invoke(new DistillationProgress(epoch, options.EpochLimit, metrics, Steps, TotalSteps, trainLoss));
        recordWatch.Restart(); progressWatch.Restart();
        lossSum = 0; lossGroups = 0;
    }

    EngineException Diverged(string what) => new("DistillationDiverged", EngineErrorKind.InvalidOperation,
        $"Training diverged at step {Steps} ({what}); try a smaller -LearningRate or -ClipNorm.");

    /// <summary>The loss sums of the student (in inference mode) over the validation data.</summary>
    LossSums Evaluate(RowBatches data, int positions, int classes)
    {
        var total = new LossSums();
        data.StartEpoch();
        for (long s = 0; s < data.StepsPerEpoch; s++)
        {
            cancellation.ThrowIfCancellationRequested();
            var batch = data.Next(cancellation);
            var output = graph.Forward(batch.Inputs, training: false)[setup.OutIndex];
            total.Add(SoftTargetLoss.Compute(output.Data, batch.Targets, batch.Rows, positions, classes, options, null));
        }
        return total;
    }

    /// <summary>With patience, or when cancelled with -Partial, the best record's weights go back into the graph.</summary>
    void KeepBest()
    {
        Kept = History.Count;
        if ((options.Patience > 0 || Cancelled) && best is not null)
        {
            graph.Restore(best);
            Kept = bestRecord;
        }
        else if (Cancelled && best is null)
            throw new OperationCanceledException("Distillation was cancelled before the first epoch completed; there is nothing to return.", cancellation);
    }
}
