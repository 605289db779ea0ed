namespace ModelCompression.Native;

/// <summary>Progress passed on synchronously (not through a synchronization context, as <see cref="Progress{T}"/> does), optionally mapped into a range of the whole.</summary>
internal sealed class ProgressRelay(Action<double> report) : IProgress<double>
{
    public void Report(double value) => report(value);

    /// <summary>Fractions of a part reported as fractions of the whole: the part runs from <paramref name="from"/> to <paramref name="to"/>.</summary>
    public static IProgress<double>? Range(IProgress<double>? whole, double from, double to) =>
        whole is null ? null : new ProgressRelay(f => whole.Report(from + (to - from) * f));
}
