using ModelCompression.Native.Kernels;

namespace ModelCompression.Engine.Tests.Training;

/// <summary>The vectorized erf and GELU of the training engine against double-precision references.</summary>
public class ActivationsTests
{
    /// <summary>
    /// erf in double precision: the Maclaurin series below |x| = 2.5 (terms stay small enough not to cancel), else
    /// 1 − erfc(|x|) from erfc's continued fraction, which converges fast there.
    /// </summary>
    static double ErfReference(double x)
    {
        double ax = Math.Abs(x);
        if (ax >= 2.5)
        {
            double f = ax;
            for (int n = 120; n >= 1; n--) f = ax + n / 2.0 / f;
            return Math.Sign(x) * (1 - Math.Exp(-ax * ax) / Math.Sqrt(Math.PI) / f);
        }
        double sum = 0, term = x;
        for (int n = 0; n < 200; n++)
        {
            double add = term / (2 * n + 1);
            sum += add;
            if (Math.Abs(add) < 1e-17 * Math.Abs(sum)) break;
            term *= -x * x / (n + 1);
        }
        return 2 / Math.Sqrt(Math.PI) * sum;
    }

    static float[] Grid() => Enumerable.Range(-4000, 8001).Select(i => i / 500f).Append(1e-30f).Append(-30f).Append(30f).ToArray();

    [Fact]
    public void ErfAndGeluAgreeWithDoublePrecisionReferences()
    {
        var x = Grid();
        var erf = new float[x.Length]; var gelu = new float[x.Length];
        Activations.Erf(x, erf);
        Activations.Gelu(x, gelu);
        for (int i = 0; i < x.Length; i++)
        {
            double e = ErfReference(x[i]);
            // absolute error of Abramowitz-Stegun 7.1.26 in float; relative near zero, where the series takes over
            double tolerance = Math.Abs(x[i]) < 0.5 ? 1e-6 * Math.Abs(e) : 5e-7;
            Assert.True(Math.Abs(erf[i] - e) <= tolerance, $"erf({x[i]}) = {erf[i]}, reference {e}");
            double g = 0.5 * x[i] * (1 + ErfReference(x[i] / Math.Sqrt(2)));
            Assert.True(Math.Abs(gelu[i] - g) <= 4e-7 * (1 + Math.Abs(g)), $"gelu({x[i]}) = {gelu[i]}, reference {g}");
        }
    }

    [Fact]
    public void DerivativesAgreeWithFiniteDifferencesOfTheReferences()
    {
        var x = Grid().Where(v => Math.Abs(v) < 8).ToArray();
        var dy = Enumerable.Range(0, x.Length).Select(i => 1f + i % 3).ToArray();
        var derf = new float[x.Length]; var dgelu = new float[x.Length];
        Activations.ErfBackward(x, dy, derf);
        Activations.GeluBackward(x, dy, dgelu);
        const double h = 1e-4;
        double Gelu(double v) => 0.5 * v * (1 + ErfReference(v / Math.Sqrt(2)));
        for (int i = 0; i < x.Length; i++)
        {
            double e = dy[i] * (ErfReference(x[i] + h) - ErfReference(x[i] - h)) / (2 * h);
            double g = dy[i] * (Gelu(x[i] + h) - Gelu(x[i] - h)) / (2 * h);
            Assert.True(Math.Abs(derf[i] - e) <= 1e-5 * (1 + Math.Abs(e)), $"erf'({x[i]}): {derf[i]} vs {e}");
            Assert.True(Math.Abs(dgelu[i] - g) <= 1e-5 * (1 + Math.Abs(g)), $"gelu'({x[i]}): {dgelu[i]} vs {g}");
        }
    }
}
