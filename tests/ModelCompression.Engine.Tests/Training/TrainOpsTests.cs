using ModelCompression.Native;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Training;

namespace ModelCompression.Engine.Tests.Training;

/// <summary>The registry of training ops: one table says what is supported and which kernel runs it.</summary>
public class TrainOpsTests
{
    [Fact]
    public void EverySupportedOpHasItsKernel()
    {
        foreach (var op in TrainingGraph.SupportedOps)
        {
            var node = new NodeProto { OpType = op, Name = "n" };
            if (op.EndsWith("Pool", StringComparison.Ordinal))   // pooling kernels check their window when created
                node.Attribute.Add(new AttributeProto { Name = "kernel_shape", Type = AttributeProto.Types.AttributeType.Ints, Ints = { 2, 2 } });
            var kernel = TrainOps.Create(node, 17);
            Assert.Same(op, kernel.Node.OpType);
        }
        Assert.DoesNotContain(Fusions.FusedGelu, TrainingGraph.SupportedOps);
        Assert.DoesNotContain(Fusions.FusedMatMulAdd, TrainingGraph.SupportedOps);
    }

    [Theory]
    [InlineData("", "Einsum", "Einsum")]
    [InlineData("com.microsoft", "Attention", "com.microsoft.Attention")]
    [InlineData("com.microsoft", "MatMul", "com.microsoft.MatMul")]   // a known name in another domain is another op
    public void AnOpOutsideTheTableIsRefusedByNameNeverRunAsAShapeKernel(string domain, string op, string named)
    {
        var e = Assert.Throws<EngineException>(() => TrainOps.Create(new NodeProto { OpType = op, Domain = domain, Name = "n" }, 17));
        Assert.Equal("TrainingOpUnsupported", e.ErrorId);
        Assert.Contains(named, e.Message);
    }
}
