using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// Folds a constant per-tensor or per-channel Mul and Add that directly follow a Conv into the Conv's weights and bias
/// (PaddleOCR's "learnable affine blocks" are exactly that). Exact in float; for static quantization it means the
/// tensor that gets quantized is the one the next layer sees, not a large-offset intermediate that the Add cancels.
/// </summary>
internal static class AffineFolding
{
    public static int FoldConvAffine(ModelProto model)
    {
        var graph = model.Graph;
        int folded = 0;
        bool changed = true;
        while (changed)
        {
            changed = false;
            var index = new GraphIndex(model);
            foreach (var conv in graph.Node)
            {
                if (conv.OpType != "Conv" || conv.Input.Count < 2 || conv.Output.Count != 1) continue;
                if (!index.IsFloatConstant(conv.Input[1], out var w) || w.Dims.Count < 3) continue;
                string y = conv.Output[0];
                if (index.GraphOutputs.Contains(y) || index.ConsumersOf(y) is not [var use]) continue;
                var next = use.Node;
                if (next.OpType is not ("Mul" or "Add") || next.Input.Count != 2) continue;
                string other = next.Input[0] == y ? next.Input[1] : next.Input[0];
                if (other == y || !index.IsFloatConstant(other, out var c)) continue;
                int channels = (int)w.Dims[0];
                var cv = TensorData.ToFloat(c);
                if (!PerChannel(c, cv.Length, channels, w.Dims.Count)) continue;
                float At(int ch) => cv.Length == 1 ? cv[0] : cv[ch];

                var weights = TensorData.ToFloat(w);
                float[] bias = conv.Input.Count > 2 && conv.Input[2].Length > 0 && index.IsFloatConstant(conv.Input[2], out var b) ? TensorData.ToFloat(b) : new float[channels];
                if (next.OpType == "Mul")
                {
                    int per = weights.Length / channels;
                    for (int ch = 0; ch < channels; ch++)
                    {
                        float s = At(ch);
                        for (int i = 0; i < per; i++) weights[ch * per + i] *= s;
                        bias[ch] *= s;
                    }
                    string wName = index.Fresh(conv.Input[1] + "_affine");
                    index.AddInitializer(TensorData.FromFloat(wName, w.Dims.ToArray(), weights));
                    conv.Input[1] = wName;
                }
                else
                {
                    for (int ch = 0; ch < channels; ch++) bias[ch] += At(ch);
                }
                string bName = index.Fresh((conv.Name.Length > 0 ? conv.Name : "conv") + "_bias_affine");
                index.AddInitializer(TensorData.FromFloat(bName, [channels], bias));
                if (conv.Input.Count > 2) conv.Input[2] = bName; else conv.Input.Add(bName);
                conv.Output[0] = next.Output[0];
                graph.Node.Remove(next);
                folded++;
                changed = true;
                break;
            }
        }
        if (folded > 0) GraphIndex.RemoveUnused(graph);
        return folded;
    }

    /// <summary>A constant that broadcasts per output channel of a Conv output [N, C, ...]: one value, or C values laid out along axis 1.</summary>
    static bool PerChannel(TensorProto c, int count, int channels, int rank)
    {
        if (c.DataType != (int)DT.Float) return false;
        if (count == 1) return c.Dims.Count <= rank;
        if (count != channels) return false;
        var dims = c.Dims.ToArray();
        // [C, 1, ..., 1] with rank-1 dims, or [1, C, 1, ..., 1] with rank dims.
        if (dims.Length == rank - 1) return dims[0] == channels && dims.Skip(1).All(d => d == 1);
        if (dims.Length == rank) return dims[0] == 1 && dims[1] == channels && dims.Skip(2).All(d => d == 1);
        return false;
    }
}
