using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Training;

/// <summary>
/// Some exporters (PaddlePaddle's among them) store weights in Constant nodes rather than initializers. To train
/// them, float Constants that fill a weight slot (Conv/ConvTranspose/Gemm/MatMul weight and bias,
/// BatchNormalization and LayerNormalization parameters, the bias added right after a MatMul/Gemm/Conv) become
/// initializers of the same name. Scalars and other constants (the 6 of a hard-swish, a shape) stay as they are.
/// </summary>
public static class WeightConstants
{
    public static int Promote(ModelProto proto)
    {
        var graph = proto.Graph;
        var producer = new GraphIndex(graph, inputInitializersAreConstant: false).Producer;
        var weightSlots = new HashSet<string>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
        {
            if (!(n.Domain is "" or "ai.onnx")) continue;
            IEnumerable<int> slots = n.OpType switch
            {
                "Conv" or "ConvTranspose" or "Gemm" => [1, 2],
                "MatMul" => [1],
                "BatchNormalization" => [1, 2, 3, 4],
                "LayerNormalization" => [1, 2],
                "Add" => Enumerable.Range(0, 2).Where(i => n.Input.Count == 2 && producer.TryGetValue(n.Input[1 - i], out var p) && p.OpType is "MatMul" or "Gemm" or "Conv"),
                _ => [],
            };
            foreach (int i in slots) if (i < n.Input.Count && n.Input[i].Length > 0) weightSlots.Add(n.Input[i]);
        }
        int promoted = 0;
        foreach (var c in graph.Node.Where(n => GraphIndex.ConstantValue(n) is not null && weightSlots.Contains(n.Output[0])).ToList())
        {
            var value = GraphIndex.ConstantValue(c)!;
            if ((DT)value.DataType != DT.Float || value.Dims.Count == 0) continue;
            var t = value.Clone();
            t.Name = c.Output[0];
            graph.Initializer.Add(t);
            graph.Node.Remove(c);
            promoted++;
        }
        return promoted;
    }
}
