using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using ModelCompression.Native.Kernels;

// Measures the machine's single-precision FMA peak with a tight register-only loop (per thread, then all threads
// at once), then the engine's GEMM on square and training-shaped products, and prints GFLOP/s and % of peak.
// Usage: dotnet run -c Release --project bench/Gemm [-- sizes...]
int threads = Environment.ProcessorCount;
Console.WriteLine($"processors: {threads}; GEMM kernel: {Gemm.KernelName}");
double peak1 = PeakFma(1), peakAll = PeakFma(threads);
double peak = Math.Max(peakAll, threads * peak1);
Console.WriteLine($"FMA peak: {peak1:F1} GFLOP/s on one thread, {peakAll:F1} GFLOP/s measured on {threads} threads; peak used: {peak:F1} (the larger of that and {threads} x one thread: on a shared machine the all-thread loop competes with other work)");

int[] sizes = args.Length > 0 ? args.Select(int.Parse).ToArray() : [128, 256, 512, 1024, 1536];
foreach (int s in sizes) Run(s, s, s, false, false);
Run(1024, 1024, 1024, true, false);
Run(1024, 1024, 1024, false, true);
// one thread against one thread's peak: the kernel's own efficiency, less exposed to other work on a shared machine
Gemm.MaxThreads = 1;
foreach (int s1 in new[] { 512, 1024 }) Run(s1, s1, s1, false, false, single: true);
Gemm.MaxThreads = 0;
Run(64, 256, 30, false, false);   // a distillation MLP layer, batch 64
Run(64, 30, 256, false, true);    // its input gradient
Run(256, 256, 64, true, false);   // its weight gradient

void Run(int m, int n, int k, bool ta, bool tb, bool single = false)
{
    var rng = new Random(1);
    var a = new float[m * k]; var b = new float[k * n]; var c = new float[m * n];
    for (int i = 0; i < a.Length; i++) a[i] = (float)rng.NextDouble() - 0.5f;
    for (int i = 0; i < b.Length; i++) b[i] = (float)rng.NextDouble() - 0.5f;
    int lda = ta ? m : k, ldb = tb ? k : n;
    double flops = 2.0 * m * n * k;
    int reps = (int)Math.Clamp(2e9 / flops, 3, 20000);
    Gemm.Multiply(ta, tb, m, n, k, 1f, a, lda, b, ldb, 0f, c, n);
    double best = double.MaxValue;
    for (int round = 0; round < 5; round++)
    {
        var sw = Stopwatch.StartNew();
        for (int r = 0; r < reps; r++) Gemm.Multiply(ta, tb, m, n, k, 1f, a, lda, b, ldb, 0f, c, n);
        best = Math.Min(best, sw.Elapsed.TotalSeconds / reps);
    }
    double gf = flops / best / 1e9;
    // the machine may be shared: measure the peak again right after this product and compare with the better of the two
    double local = single ? PeakFma(1, 2) : Math.Max(PeakFma(threads, 2), threads * PeakFma(1, 2));
    double denominator = Math.Max(local, 1e-9);
    if (single) { Console.WriteLine($"{m}x{n}x{k} one thread: {gf,8:F1} GFLOP/s  {100 * gf / peak1,5:F1}% of the start's one-thread peak, {100 * gf / local,5:F1}% of the one-thread peak measured just after ({local:F0})"); return; }
    Console.WriteLine($"{m}x{n}x{k}{(ta ? " A^T" : "")}{(tb ? " B^T" : "")}: {gf,8:F1} GFLOP/s  {100 * gf / peak,5:F1}% of the start's peak, {100 * gf / denominator,5:F1}% of the peak measured just after ({local:F0})  ({best * 1e3:F3} ms)");
}

static double PeakFma(int threads, int rounds = 5)
{
    double best = 0;
    for (int round = 0; round < rounds; round++)
    {
        const long iters = 10_000_000;
        var sw = Stopwatch.StartNew();
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ => Loop(iters));
        double s = sw.Elapsed.TotalSeconds;
        int lanes = Vector512.IsHardwareAccelerated && Avx512F.IsSupported ? 16 : 8;
        best = Math.Max(best, threads * iters * 10.0 * lanes * 2 / s / 1e9);
    }
    return best;
}

[MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
static float Loop(long iters)
{
    if (Vector512.IsHardwareAccelerated && Avx512F.IsSupported)
    {
        var m = Vector512.Create(0.999f); var d = Vector512.Create(0.001f);
        Vector512<float> x0 = Vector512.Create(1f), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0, x7 = x0, x8 = x0, x9 = x0;
        for (long i = 0; i < iters; i++)
        {
            x0 = Avx512F.FusedMultiplyAdd(x0, m, d); x1 = Avx512F.FusedMultiplyAdd(x1, m, d); x2 = Avx512F.FusedMultiplyAdd(x2, m, d);
            x3 = Avx512F.FusedMultiplyAdd(x3, m, d); x4 = Avx512F.FusedMultiplyAdd(x4, m, d); x5 = Avx512F.FusedMultiplyAdd(x5, m, d);
            x6 = Avx512F.FusedMultiplyAdd(x6, m, d); x7 = Avx512F.FusedMultiplyAdd(x7, m, d); x8 = Avx512F.FusedMultiplyAdd(x8, m, d);
            x9 = Avx512F.FusedMultiplyAdd(x9, m, d);
        }
        return Vector512.Sum(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9);
    }
    else
    {
        var m = Vector256.Create(0.999f); var d = Vector256.Create(0.001f);
        Vector256<float> x0 = Vector256.Create(1f), x1 = x0, x2 = x0, x3 = x0, x4 = x0, x5 = x0, x6 = x0, x7 = x0, x8 = x0, x9 = x0;
        for (long i = 0; i < iters; i++)
        {
            x0 = Fma.MultiplyAdd(x0, m, d); x1 = Fma.MultiplyAdd(x1, m, d); x2 = Fma.MultiplyAdd(x2, m, d);
            x3 = Fma.MultiplyAdd(x3, m, d); x4 = Fma.MultiplyAdd(x4, m, d); x5 = Fma.MultiplyAdd(x5, m, d);
            x6 = Fma.MultiplyAdd(x6, m, d); x7 = Fma.MultiplyAdd(x7, m, d); x8 = Fma.MultiplyAdd(x8, m, d);
            x9 = Fma.MultiplyAdd(x9, m, d);
        }
        return Vector256.Sum(x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9);
    }
}
