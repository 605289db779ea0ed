using System.Diagnostics;
using System.Management.Automation;

namespace ModelCompression;

/// <summary>
/// Progress records for one activity, with the time left in the current phase estimated from the throughput measured
/// so far (time spent over fraction done). Reports from other threads (parallel engine loops) are dropped: only the
/// pipeline thread may write to the host. Records go out only when the percentage or the seconds left change.
/// </summary>
sealed class ProgressWriter(Cmdlet cmdlet, string activity, int id = 1)
{
    /// <summary>Below this much time in a phase, the throughput measured says too little to estimate from.</summary>
    static readonly TimeSpan Settle = TimeSpan.FromMilliseconds(200);

    readonly int thread = Environment.CurrentManagedThreadId;
    readonly Stopwatch clock = Stopwatch.StartNew();
    // The first phase is timed from the start of the work: what came before its first report is part of it.
    string? phase;
    TimeSpan phaseStart;
    (string Status, int Percent, int Seconds) last = ("", -1, -1);

    /// <param name="phase">What the fraction is a fraction of; a new phase starts a new estimate.</param>
    /// <param name="status">The line shown; defaults to the phase.</param>
    public void Report(string phase, double fraction, string? status = null)
    {
        if (Environment.CurrentManagedThreadId != thread) return;
        if (phase != this.phase)
        {
            if (this.phase is not null) phaseStart = clock.Elapsed;
            this.phase = phase;
        }
        int percent = (int)Math.Clamp(fraction * 100, 0, 100);
        var spent = clock.Elapsed - phaseStart;
        int seconds = fraction > 0 && fraction < 1 && spent >= Settle ? (int)Math.Ceiling(spent.TotalSeconds * (1 - fraction) / fraction) : -1;
        var next = (status ?? phase, percent, seconds);
        if (next == last) return;
        last = next;
        cmdlet.WriteProgress(new ProgressRecord(id, activity, next.Item1) { PercentComplete = percent, SecondsRemaining = seconds });
    }

    public void Complete() => cmdlet.WriteProgress(new ProgressRecord(id, activity, "Done") { RecordType = ProgressRecordType.Completed });

    /// <summary>Fractions of one phase as an <see cref="IProgress{T}"/> for the engine.</summary>
    public IProgress<double> Phase(string phase) => new Fractions(this, phase);

    sealed class Fractions(ProgressWriter writer, string phase) : IProgress<double>
    {
        public void Report(double fraction) => writer.Report(phase, fraction);
    }
}

/// <summary>An <see cref="IProgress{T}"/> that reports on the caller's thread at once (System.Progress posts to a context).</summary>
sealed class Reporter<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
