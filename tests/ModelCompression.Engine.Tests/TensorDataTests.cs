using Google.Protobuf;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests;

public class TensorDataTests
{
    static TensorProto Raw(DT type, byte[] raw, params long[] dims) => TensorData.FromRaw("t", type, dims, raw);

    [Fact]
    public void EveryStandardElementTypeReadsAsNumbers()
    {
        Assert.Equal([1.5f, -2f], TensorData.ToFloat(TensorData.FromFloat("t", [2], [1.5f, -2f])));
        Assert.Equal([1.5f, -2f], TensorData.ToFloat(Raw(DT.Double, [.. BitConverter.GetBytes(1.5), .. BitConverter.GetBytes(-2.0)], 2)));
        Assert.Equal([1.5f], TensorData.ToFloat(Raw(DT.Float16, BitConverter.GetBytes(BitConverter.HalfToUInt16Bits((Half)1.5f)), 1)));
        Assert.Equal([1.5f], TensorData.ToFloat(Raw(DT.Bfloat16, BitConverter.GetBytes((ushort)(BitConverter.SingleToInt32Bits(1.5f) >> 16)), 1)));
        Assert.Equal([-1f, 127f], TensorData.ToFloat(Raw(DT.Int8, [0xFF, 0x7F], 2)));
        Assert.Equal([255f], TensorData.ToFloat(Raw(DT.Uint8, [255], 1)));
        Assert.Equal([-3f], TensorData.ToFloat(Raw(DT.Int16, BitConverter.GetBytes((short)-3), 1)));
        Assert.Equal([-3f], TensorData.ToFloat(Raw(DT.Int32, BitConverter.GetBytes(-3), 1)));
        Assert.Equal([-3f], TensorData.ToFloat(Raw(DT.Int64, BitConverter.GetBytes(-3L), 1)));
        Assert.Equal([1f, 0f], TensorData.ToFloat(Raw(DT.Bool, [1, 0], 2)));
        // 4-bit: low nibble first; int4 is sign-extended.
        Assert.Equal([7f, -8f, -1f], TensorData.ToFloat(Raw(DT.Int4, [0x87, 0x0F], 3)));
        Assert.Equal([7f, 8f, 15f], TensorData.ToFloat(Raw(DT.Uint4, [0x87, 0x0F], 3)));
    }

    [Fact]
    public void TypedFieldsReadLikeRawData()
    {
        var t = new TensorProto { Name = "t", DataType = (int)DT.Int8 };
        t.Dims.Add(2);
        t.Int32Data.AddRange([-5, 7]);
        Assert.Equal([-5f, 7f], TensorData.ToFloat(t));
        Assert.Equal(2, TensorData.RawBytes(t).Length);
        var f = new TensorProto { Name = "f", DataType = (int)DT.Float };
        f.Dims.Add(3);
        f.FloatData.AddRange([1, 2, 3]);
        Assert.Equal(12, TensorData.RawBytes(f).Length);
        Assert.Equal(12, TensorData.StorageBytes(f));
    }

    [Fact]
    public void WrongRawLengthIsInvalidData()
    {
        var t = Raw(DT.Float, new byte[7], 2);
        Assert.Equal("TensorDataSizeMismatch", Assert.Throws<ModelCompression.Native.EngineException>(() => TensorData.ToFloat(t)).ErrorId);
    }
}
