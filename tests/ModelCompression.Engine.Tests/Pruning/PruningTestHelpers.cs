using System.Runtime.InteropServices;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Engine.Tests.Pruning;

internal static class PruningTestHelpers
{
    public static float[] Floats(OnnxModel m, string name) =>
        MemoryMarshal.Cast<byte, float>(TensorData.RawBytes(m.Proto.Graph.Initializer.Single(t => t.Name == name)).Span).ToArray();

    public static TensorProto Tensor(OnnxModel m, string name) => m.Proto.Graph.Initializer.Single(t => t.Name == name);

    /// <summary>Test accuracy of reference and pruned model on a shared data set, through ONNX Runtime.</summary>
    public static OutputFidelity Compare(OnnxModel reference, OnnxModel other, string dataFile) =>
        ModelComparer.Compare(reference, other, new InputSource { Data = DataSet.Load(SharedFiles.Data(dataFile)), BatchSize = 64 }).Single();

    public static OutputFidelity CompareSynthetic(OnnxModel reference, OnnxModel other, long dimension = 64) =>
        ModelComparer.Compare(reference, other, new InputSource { Synthesis = new SynthesisOptions { DefaultDimension = dimension }, SyntheticBatches = 2 })[0];

    /// <summary>The shape a tensor of a model has on synthesized inputs (the tensor made an extra output for one run).</summary>
    public static long[] OutputShapeOf(OnnxModel model, string tensor, long dimension = 64)
    {
        var proto = model.Proto.Clone();
        proto.Graph.Output.Clear();
        proto.Graph.Output.Add(new ValueInfoProto { Name = tensor });
        return OutputShape(new OnnxModel(proto, model.SourcePath, []), dimension);
    }

    /// <summary>Runs a model once on synthesized inputs and returns its first output's shape.</summary>
    public static long[] OutputShape(OnnxModel model, long dimension = 64)
    {
        using var s = new ModelSession(model);
        var inputs = InputSynthesizer.Synthesize(model, new SynthesisOptions { DefaultDimension = dimension });
        return s.Run(inputs)[0].Shape;
    }
}
