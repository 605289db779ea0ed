using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests;

/// <summary>A quantized weight is zero where it equals its zero point, per tensor, per channel, per block and packed.</summary>
public class QuantizedZerosTests
{
    static NodeProto Node(string op, string[] inputs, params AttributeProto[] attributes)
    {
        var n = new NodeProto { OpType = op };
        n.Input.AddRange(inputs);
        n.Attribute.AddRange(attributes);
        return n;
    }

    static long? Count(TensorProto weight, NodeProto node, int slot, params TensorProto[] constants) =>
        QuantizedZeros.Count(weight, node, slot, name => constants.FirstOrDefault(c => c.Name == name));

    [Fact]
    public void PerTensorAndPerChannelZeroPointsAreReadAlongTheirAxis()
    {
        // uint8 [2, 3]: zero points 10 (per tensor), or [10, 20, 30] per column (MatMulInteger: the last axis).
        var w = TensorData.FromRaw("w", DT.Uint8, [2, 3], [10, 20, 0, 10, 30, 30]);
        var scalar = TensorData.FromRaw("z", DT.Uint8, [], [10]);
        var columns = TensorData.FromRaw("zc", DT.Uint8, [3], [10, 20, 30]);
        Assert.Equal(2, Count(w, Node("DequantizeLinear", ["w", "s", "z"]), 0, scalar));
        Assert.Equal(4, Count(w, Node("MatMulInteger", ["a", "w", "", "zc"]), 1, columns));
        // DequantizeLinear without a zero point: zero is 0.
        Assert.Equal(1, Count(w, Node("DequantizeLinear", ["w", "s"]), 0));
        // Rows for ConvInteger's per-output-channel zero points (axis 0): [10, 30].
        var rows = TensorData.FromRaw("zr", DT.Uint8, [2], [10, 30]);
        Assert.Equal(3, Count(w, Node("ConvInteger", ["x", "w", "", "zr"]), 1, rows));
        // Not a weight input of the operator, or a float weight: not counted here.
        Assert.Null(Count(w, Node("MatMulInteger", ["w", "b"]), 0));
    }

    [Fact]
    public void BlockedDequantizeLinearTakesOneZeroPointPerBlock()
    {
        // int8 [4, 2], blocks of 2 along axis 0: zero points [[1, 2], [3, 4]].
        var w = TensorData.FromRaw("w", DT.Int8, [4, 2], [1, 0, 1, 2, 3, 4, 0, 4]);
        var z = TensorData.FromRaw("z", DT.Int8, [2, 2], [1, 2, 3, 4]);
        var node = Node("DequantizeLinear", ["w", "s", "z"], GraphBuilder.Attr("axis", 0L), GraphBuilder.Attr("block_size", 2L));
        Assert.Equal(6, Count(w, node, 0, z));
    }

    [Fact]
    public void MatMulNBitsUnpacksNibblesAndItsPackedZeroPointsAndSkipsPadding()
    {
        // K = 3, N = 2, block 4 (one block, one padding value per column), 4 bits: column 0 = [5, 1, 5 | 5 pad],
        // column 1 = [8, 8, 2 | 8 pad]; zero points 5 (column 0) and 8 (column 1), packed one nibble per block.
        byte Pack(int low, int high) => (byte)(low | high << 4);
        var b = TensorData.FromRaw("b", DT.Uint8, [2, 1, 2], [Pack(5, 1), Pack(5, 5), Pack(8, 8), Pack(2, 8)]);
        var zp = TensorData.FromRaw("zp", DT.Uint8, [2], [5, 8]);
        var node = Node("MatMulNBits", ["a", "b", "s", "zp"], GraphBuilder.Attr("K", 3L), GraphBuilder.Attr("N", 2L),
            GraphBuilder.Attr("bits", 4L), GraphBuilder.Attr("block_size", 4L));
        Assert.Equal(4, Count(b, node, 1, zp));
        // Without zero points the middle of the range (8) stands for zero.
        Assert.Equal(2, Count(b, Node("MatMulNBits", ["a", "b", "s"], node.Attribute.ToArray()), 1));
    }

    [Fact]
    public void GatherBlockQuantizedReadsRowsOfPackedValues()
    {
        // Table [2 rows, 4 values] at 4 bits (2 bytes a row), blocks of 2: zero points per row and block, packed.
        byte Pack(int low, int high) => (byte)(low | high << 4);
        var data = TensorData.FromRaw("t", DT.Uint8, [2, 2], [Pack(3, 3), Pack(7, 1), Pack(0, 9), Pack(9, 9)]);
        var zp = TensorData.FromRaw("zp", DT.Uint8, [2, 1], [Pack(3, 7), Pack(0, 9)]);
        var node = Node("GatherBlockQuantized", ["t", "i", "s", "zp"], GraphBuilder.Attr("bits", 4L), GraphBuilder.Attr("block_size", 2L),
            GraphBuilder.Attr("quantize_axis", 1L));
        Assert.Equal(6, Count(data, node, 0, zp));
    }
}
