using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Native.Distillation;

/// <summary>Builds small students in code: an MLP with the teacher's input and output names and widths.</summary>
public static class StudentModels
{
    /// <summary>
    /// input[batch, n] → (MatMul + Add + Relu) per hidden width → output[batch, classes], He-uniform weights from
    /// <paramref name="seed"/>, zero biases. Input and output names and widths come from <paramref name="teacher"/>,
    /// which must take one [batch, n] float input and give a [batch, classes] first output.
    /// </summary>
    public static OnnxModel Mlp(OnnxModel teacher, IReadOnlyList<int> hidden, int seed = 1)
    {
        var inputs = InputSynthesizer.Inputs(teacher);
        var output = teacher.Proto.Graph.Output.Select(ValueSignature.From).FirstOrDefault();
        if (inputs.Count != 1 || inputs[0].Shape.Count != 2 || !int.TryParse(inputs[0].Shape[1], out int n)
            || output is null || output.Shape.Count != 2 || !int.TryParse(output.Shape[1], out int classes))
            throw new EngineException("StudentShapeUnsupported", EngineErrorKind.InvalidArgument,
                $"An MLP student needs a teacher with one [batch, n] input and a [batch, classes] output with fixed n and classes; '{teacher.Name}' has {string.Join(", ", inputs)} -> {output}.");
        return Mlp(inputs[0].Name, n, hidden, output.Name, classes, seed);
    }

    public static OnnxModel Mlp(string inputName, int inputs, IReadOnlyList<int> hidden, string outputName, int classes, int seed = 1)
    {
        if (inputs < 1 || classes < 1 || hidden.Any(h => h < 1))
            throw new EngineException("StudentShapeUnsupported", EngineErrorKind.InvalidArgument, "Layer widths must be positive.");
        var rng = new Random(seed);
        var b = new GraphBuilder("student").Input(inputName, DT.Float, "batch", inputs).Output(outputName, DT.Float, "batch", classes);
        string x = inputName;
        int width = inputs;
        var widths = hidden.Append(classes).ToArray();
        for (int l = 0; l < widths.Length; l++)
        {
            bool last = l == widths.Length - 1;
            float bound = MathF.Sqrt(6f / width);
            var w = new float[width * widths[l]];
            for (int i = 0; i < w.Length; i++) w[i] = (float)((rng.NextDouble() * 2 - 1) * bound);
            var wName = b.Initializer($"fc{l}.weight", [width, widths[l]], w);
            var bName = b.Initializer($"fc{l}.bias", [widths[l]], new float[widths[l]]);
            x = b.Node("Add", [b.Node("MatMul", [x, wName], name: $"fc{l}.matmul"), bName], last ? [outputName] : null, name: $"fc{l}.add");
            if (!last) x = b.Node("Relu", [x], name: $"fc{l}.relu");
            width = widths[l];
        }
        return b.BuildModel("student");
    }
}
