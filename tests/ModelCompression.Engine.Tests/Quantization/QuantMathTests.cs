using ModelCompression.Native;
using ModelCompression.Native.Kernels;

namespace ModelCompression.Engine.Tests.Quantization;

public class QuantMathTests
{
    [Theory]
    [InlineData(QuantType.Int8, false, false, -128, 127)]
    [InlineData(QuantType.Int8, true, false, -127, 127)]
    [InlineData(QuantType.Int8, false, true, -64, 63)]
    [InlineData(QuantType.Int8, true, true, -63, 63)]
    [InlineData(QuantType.UInt8, false, false, 0, 255)]
    [InlineData(QuantType.UInt8, true, false, 1, 255)]
    [InlineData(QuantType.UInt8, false, true, 0, 127)]
    [InlineData(QuantType.Int4, false, false, -8, 7)]
    [InlineData(QuantType.Int4, true, false, -7, 7)]
    [InlineData(QuantType.UInt4, true, false, 1, 15)]
    public void RangesPerTypeAndOptions(QuantType type, bool symmetric, bool reduce, int lo, int hi)
    {
        Assert.Equal((lo, hi), QuantMath.Range(type, symmetric, reduce));
    }

    [Fact]
    public void AsymmetricUInt8MapsEndsAndZeroExactly()
    {
        var p = QuantMath.Compute(-1f, 3f, QuantType.UInt8);
        Assert.Equal(4f / 255, p.Scale, 6);
        Assert.Equal(64, p.ZeroPoint); // round(0 - (-1) / (4/255)) = round(63.75)
        Assert.Equal(0, QuantMath.Quantize(-1f, p, 0, 255));
        Assert.Equal(255, QuantMath.Quantize(3f, p, 0, 255));
        Assert.Equal(p.ZeroPoint, QuantMath.Quantize(0f, p, 0, 255));
    }

    [Fact]
    public void SymmetricInt8HasZeroPointZeroAndScaleFromAbsMax()
    {
        var p = QuantMath.Compute(-0.5f, 2f, QuantType.Int8, symmetric: true);
        Assert.Equal(0, p.ZeroPoint);
        Assert.Equal(2f / 127, p.Scale, 7);
        Assert.Equal(127, QuantMath.Quantize(2f, p, -127, 127));
        Assert.Equal(-32, QuantMath.Quantize(-0.5f, p, -127, 127));
    }

    [Fact]
    public void SymmetricUInt8CentresOn128()
    {
        var p = QuantMath.Compute(-1f, 1f, QuantType.UInt8, symmetric: true);
        Assert.Equal(128, p.ZeroPoint);
        Assert.Equal(1, QuantMath.Quantize(-1f, p, 1, 255));
        Assert.Equal(255, QuantMath.Quantize(1f, p, 1, 255));
    }

    [Theory]
    [InlineData(QuantType.UInt8, false)]
    [InlineData(QuantType.Int8, false)]
    [InlineData(QuantType.Int8, true)]
    [InlineData(QuantType.UInt4, false)]
    public void AllZeroTensorGetsScaleOneAndDequantizesToZero(QuantType type, bool symmetric)
    {
        var values = new float[16];
        var p = QuantMath.ForTensor(values, type, symmetric, false);
        Assert.Equal(1f, p.Scale);
        var (lo, hi) = QuantMath.Range(type, symmetric);
        Assert.InRange(p.ZeroPoint, lo, hi);
        var q = new byte[16];
        QuantMath.Quantize(values, p, lo, hi, q);
        var back = new float[16];
        QuantMath.Dequantize(q, QuantMath.IsSigned(type), p, back);
        Assert.All(back, v => Assert.Equal(0f, v));
    }

    [Theory]
    [InlineData(2.5f)]
    [InlineData(-7f)]
    public void ConstantTensorIsRepresentedExactlyAtOneEnd(float c)
    {
        var values = Enumerable.Repeat(c, 10).ToArray();
        foreach (var (type, symmetric) in new[] { (QuantType.UInt8, false), (QuantType.Int8, false), (QuantType.Int8, true) })
        {
            var p = QuantMath.ForTensor(values, type, symmetric, false);
            var (lo, hi) = QuantMath.Range(type, symmetric);
            var q = new byte[10];
            QuantMath.Quantize(values, p, lo, hi, q);
            var back = new float[10];
            QuantMath.Dequantize(q, QuantMath.IsSigned(type), p, back);
            Assert.All(back, v => Assert.Equal(c, v, 5));
        }
    }

    [Fact]
    public void RangeNotContainingZeroIsWidenedToIncludeIt()
    {
        var positive = QuantMath.Compute(2f, 5f, QuantType.UInt8);
        Assert.Equal(0, positive.ZeroPoint);
        Assert.Equal(5f / 255, positive.Scale, 6);
        var negative = QuantMath.Compute(-5f, -2f, QuantType.UInt8);
        Assert.Equal(255, negative.ZeroPoint);
        var signed = QuantMath.Compute(2f, 5f, QuantType.Int8);
        Assert.Equal(-128, signed.ZeroPoint);
        // 0 is exactly representable in every case.
        Assert.Equal(0f, (QuantMath.Quantize(0f, signed, -128, 127) - signed.ZeroPoint) * signed.Scale);
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    [InlineData(float.NegativeInfinity)]
    public void NonFiniteValuesAreRefusedNamingTheTensor(float bad)
    {
        var values = new[] { 1f, bad, -2f };
        var e = Assert.Throws<EngineException>(() => QuantMath.ForTensor(values, QuantType.Int8, true, false, "layer.weight"));
        Assert.Equal("QuantizationNonFiniteValues", e.ErrorId);
        Assert.Contains("layer.weight", e.Message);
        Assert.Throws<EngineException>(() => QuantMath.Compute(0, bad, QuantType.UInt8));
    }

    [Fact]
    public void PerChannelGivesOneScalePerColumn()
    {
        // [2, 3] weight, axis 1: columns have ranges 1, 10, 100.
        float[] w = [1, -10, 100, -1, 10, -100];
        var p = QuantMath.PerChannel(w, [2, 3], 1, QuantType.Int8, true, false);
        Assert.Equal(3, p.Length);
        Assert.Equal(1f / 127, p[0].Scale, 7);
        Assert.Equal(10f / 127, p[1].Scale, 6);
        Assert.Equal(100f / 127, p[2].Scale, 5);
        var q = QuantMath.QuantizePerChannel(w, [2, 3], 1, p, -127, 127);
        Assert.All(q, b => Assert.Equal(127, Math.Abs((int)(sbyte)b)));
    }

    [Fact]
    public void RoundTripErrorIsAtMostHalfAStep()
    {
        var rng = new Random(5);
        var values = Enumerable.Range(0, 1000).Select(_ => (float)(rng.NextDouble() * 6 - 2)).ToArray();
        foreach (var (type, sym, reduce) in new[] { (QuantType.UInt8, false, false), (QuantType.Int8, true, false), (QuantType.Int8, false, true), (QuantType.Int4, true, false) })
        {
            var p = QuantMath.ForTensor(values, type, sym, reduce);
            var (lo, hi) = QuantMath.Range(type, sym, reduce);
            var q = new byte[values.Length];
            QuantMath.Quantize(values, p, lo, hi, q);
            var back = new float[values.Length];
            QuantMath.Dequantize(q, QuantMath.IsSigned(type), p, back);
            for (int i = 0; i < values.Length; i++) Assert.True(Math.Abs(back[i] - values[i]) <= p.Scale / 2 * 1.0001f, $"{type} {values[i]} -> {back[i]}");
        }
    }

    [Fact]
    public void TinyValuesDoNotProduceAnInfiniteInverseScale()
    {
        var p = QuantMath.Compute(-1e-40f, 1e-40f, QuantType.Int8, symmetric: true);
        Assert.True(float.IsFinite(1f / p.Scale));
    }

    [Fact]
    public void BlockQuantizationPacksLowNibbleFirstAndPadsWithTheZeroPoint()
    {
        // K = 5 (padded to a block of 16 in MatMulNBits' layout), N = 2.
        var rng = new Random(3);
        var w = Enumerable.Range(0, 10).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
        var bq = RoundToNearest.Quantize(w, 5, 2, 4, 16, symmetric: true);
        Assert.Equal(1, bq.BlocksPerColumn);
        Assert.Equal(10, bq.Codes.Length);
        var packed = bq.PackedCodes();
        Assert.Equal(16, packed.Length); // [N = 2, 1 block, 8 bytes]
        Assert.Equal(bq.Code(0, 0), packed[0] & 0x0F);
        Assert.Equal(bq.Code(1, 0), packed[0] >> 4);
        Assert.Equal(bq.Code(4, 0), packed[2] & 0x0F);
        Assert.Equal(8, packed[2] >> 4); // padding = zero point 8
        Assert.All(packed.Skip(3).Take(5), b => Assert.Equal(0x88, b));
        Assert.Equal(bq.Code(0, 1), packed[8] & 0x0F);
        var back = bq.Dequantize();
        for (int i = 0; i < w.Length; i++) Assert.True(Math.Abs(back[i] - w[i]) <= bq.Scales[i % 2] / 2 * 1.0001f);
        var asym = RoundToNearest.Quantize(w, 5, 2, 4, 16, symmetric: false);
        var zp = asym.PackedZeroPoints();
        Assert.Equal(2, zp.Length); // one block per column, packed per column to a whole byte
        Assert.Equal(asym.ZeroPoints[1], zp[1] & 0x0F);
        Assert.Equal(3, asym.PackedRows().Length / 2); // rows without block padding: ceil(5 / 2) bytes per column
    }
}
