using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace ModelCompression.Native.Kernels;

/// <summary>
/// The error function and GELU on spans, and their derivatives, for the training engine. erf uses Abramowitz and
/// Stegun's formula 7.1.26 (absolute error below 1.5e-7) and, near zero, its Maclaurin series, evaluated in blocks
/// that stay in L1 so that each step is one vectorized pass: a GPT block applies GELU to millions of values per
/// training step, where a per-element series would cost more than the matrix products.
/// </summary>
internal static class Activations
{
    const int Block = 256;
    const float P = 0.3275911f, A1 = 0.254829592f, A2 = -0.284496736f, A3 = 1.421413741f, A4 = -1.453152027f, A5 = 1.061405429f;
    const float InvSqrt2 = 0.70710678118654752f;
    const float TwoOverSqrtPi = 1.1283791670955126f;
    const float InvSqrt2Pi = 0.3989422804014327f;

    /// <summary>y = erf(scale·x); <paramref name="y"/> must not overlap <paramref name="x"/>.</summary>
    public static void Erf(ReadOnlySpan<float> x, Span<float> y, float scale = 1f)
    {
        Span<float> ax = stackalloc float[Block], e = stackalloc float[Block], t = stackalloc float[Block];
        for (int i = 0; i < x.Length; i += Block)
        {
            int n = Math.Min(Block, x.Length - i);
            var xs = x.Slice(i, n); var ys = y.Slice(i, n);
            var a = ax[..n]; var es = e[..n]; var ts = t[..n];
            TensorPrimitives.Multiply(xs, scale, ys);       // z = scale·x (kept in y: its sign, and the series near 0)
            TensorPrimitives.Abs(ys, a);                    // |z|
            TensorPrimitives.Multiply(a, a, es);
            TensorPrimitives.Negate(es, es);
            TensorPrimitives.Exp(es, es);                   // e^{-z²}
            TensorPrimitives.Multiply(a, P, ts);
            TensorPrimitives.Add(ts, 1f, ts);
            TensorPrimitives.Reciprocal(ts, ts);            // t = 1 / (1 + p|z|)
            TensorPrimitives.Multiply(ts, A5, a);           // Horner: ((((a5 t + a4) t + a3) t + a2) t + a1) t
            TensorPrimitives.Add(a, A4, a);
            TensorPrimitives.MultiplyAdd(a, ts, A3, a);
            TensorPrimitives.MultiplyAdd(a, ts, A2, a);
            TensorPrimitives.MultiplyAdd(a, ts, A1, a);
            TensorPrimitives.Multiply(a, ts, a);
            TensorPrimitives.Multiply(a, es, a);
            TensorPrimitives.Subtract(1f, a, a);            // erf(|z|)
            SmallArguments(ys, a);
            TensorPrimitives.CopySign(a, ys, ys);
        }
    }

    /// <summary>
    /// Near zero, where 7.1.26's absolute error would be a large relative one, erf(z) is its Maclaurin series
    /// 2/√π · Σ (−1)ⁿ z²ⁿ⁺¹ / (n!(2n+1)) up to z¹⁵ (error below 1e-9 for |z| &lt; 0.5), chosen per element.
    /// Writes erf(|z|) into <paramref name="erf"/> where |z| &lt; 0.5.
    /// </summary>
    static void SmallArguments(ReadOnlySpan<float> z, Span<float> erf)
    {
        const float C0 = 1.1283791670955126f, C1 = -0.3761263890318375f, C2 = 0.11283791670955126f, C3 = -0.026866170645131252f,
            C4 = 0.005223977625442188f, C5 = -8.548327023450853e-4f, C6 = 1.2055332981789664e-4f, C7 = -1.4925650358406252e-5f;
        var half = new Vector<float>(0.5f);
        int i = 0;
        var v = MemoryMarshal.Cast<float, Vector<float>>(z);
        var r = MemoryMarshal.Cast<float, Vector<float>>(erf);
        for (int k = 0; k < v.Length; k++, i += Vector<float>.Count)
        {
            var x = Vector.Abs(v[k]);
            var small = Vector.LessThan(x, half);
            if (small == Vector<int>.Zero) continue;
            var x2 = x * x;
            var p = new Vector<float>(C7);
            p = p * x2 + new Vector<float>(C6); p = p * x2 + new Vector<float>(C5); p = p * x2 + new Vector<float>(C4);
            p = p * x2 + new Vector<float>(C3); p = p * x2 + new Vector<float>(C2); p = p * x2 + new Vector<float>(C1);
            p = p * x2 + new Vector<float>(C0);
            r[k] = Vector.ConditionalSelect(small, x * p, r[k]);
        }
        for (; i < z.Length; i++)
        {
            float x = MathF.Abs(z[i]);
            if (x >= 0.5f) continue;
            float x2 = x * x;
            erf[i] = x * (((((((C7 * x2 + C6) * x2 + C5) * x2 + C4) * x2 + C3) * x2 + C2) * x2 + C1) * x2 + C0);
        }
    }

    /// <summary>dx = dy · 2/√π · e^{-x²}.</summary>
    public static void ErfBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx)
    {
        Span<float> e = stackalloc float[Block];
        for (int i = 0; i < x.Length; i += Block)
        {
            int n = Math.Min(Block, x.Length - i);
            var es = e[..n];
            TensorPrimitives.Multiply(x.Slice(i, n), x.Slice(i, n), es);
            TensorPrimitives.Multiply(es, -1f, es);
            TensorPrimitives.Exp(es, es);
            TensorPrimitives.Multiply(es, TwoOverSqrtPi, es);
            TensorPrimitives.Multiply(es, dy.Slice(i, n), dx.Slice(i, n));
        }
    }

    /// <summary>y = x · ½(1 + erf(x/√2)), the exact GELU.</summary>
    public static void Gelu(ReadOnlySpan<float> x, Span<float> y)
    {
        Span<float> c = stackalloc float[Block];
        for (int i = 0; i < x.Length; i += Block)
        {
            int n = Math.Min(Block, x.Length - i);
            var cs = c[..n];
            Erf(x.Slice(i, n), cs, InvSqrt2);
            TensorPrimitives.Add(cs, 1f, cs);
            TensorPrimitives.Multiply(cs, 0.5f, cs);
            TensorPrimitives.Multiply(cs, x.Slice(i, n), y.Slice(i, n));
        }
    }

    /// <summary>dx = dy · (½(1 + erf(x/√2)) + x·φ(x)), φ the standard normal density.</summary>
    public static void GeluBackward(ReadOnlySpan<float> x, ReadOnlySpan<float> dy, Span<float> dx)
    {
        Span<float> c = stackalloc float[Block], d = stackalloc float[Block];
        for (int i = 0; i < x.Length; i += Block)
        {
            int n = Math.Min(Block, x.Length - i);
            var xs = x.Slice(i, n); var cs = c[..n]; var ds = d[..n];
            Erf(xs, cs, InvSqrt2);
            TensorPrimitives.Add(cs, 1f, cs);
            TensorPrimitives.Multiply(cs, 0.5f, cs);        // Φ(x)
            TensorPrimitives.Multiply(xs, xs, ds);
            TensorPrimitives.Multiply(ds, -0.5f, ds);
            TensorPrimitives.Exp(ds, ds);
            TensorPrimitives.Multiply(ds, InvSqrt2Pi, ds);  // φ(x)
            TensorPrimitives.MultiplyAdd(ds, xs, cs, cs);   // Φ(x) + x·φ(x)
            TensorPrimitives.Multiply(cs, dy.Slice(i, n), dx.Slice(i, n));
        }
    }
}
