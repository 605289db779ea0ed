using System.Diagnostics;

namespace ModelCompression.Native.Runtime;

/// <summary>
/// The process's peak working set over the measurement: sampled on a timer, and taken from the operating system's
/// own high-water mark when that rose during the run (then it is exact).
/// </summary>
internal sealed class MemoryWatch(TimeSpan interval) : IDisposable
{
    readonly Process process = Process.GetCurrentProcess();
    readonly long peakBefore = PeakNow();
    Timer? timer;
    long sampled;

    public void Sample()
    {
        long ws = Environment.WorkingSet;
        long current;
        do { current = Interlocked.Read(ref sampled); } while (ws > current && Interlocked.CompareExchange(ref sampled, ws, current) != current);
    }

    public void Start()
    {
        Sample();
        timer = new Timer(_ => Sample(), null, interval, interval);
    }

    public void Stop()
    {
        timer?.Dispose();
        timer = null;
        Sample();
    }

    public long Peak
    {
        get
        {
            process.Refresh();
            long after = process.PeakWorkingSet64;
            return after > peakBefore ? Math.Max(after, Interlocked.Read(ref sampled)) : Interlocked.Read(ref sampled);
        }
    }

    static long PeakNow()
    {
        using var p = Process.GetCurrentProcess();
        return p.PeakWorkingSet64;
    }

    public void Dispose()
    {
        timer?.Dispose();
        process.Dispose();
    }
}
