using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Engine.Tests.Runtime;

/// <summary>
/// The model-builder layout (GroupQueryAttention with rotary inside, Simplified/SkipSimplifiedLayerNormalization) built
/// from tiny_llama's weights computes what the decomposed export computes: it is a faithful test model for that layout.
/// </summary>
public class BuilderLayoutTests
{
    internal static OnnxModel TinyLlamaGqa() =>
        new(LlamaModels.TinyLlamaBuilderLayout(ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx"))), null, []);

    [SharedFact]
    public void BuilderLayoutLogitsEqualTheDecomposedExportsAndItsCacheFitsTheContract()
    {
        var gqa = TinyLlamaGqa();
        var contract = DecoderContract.Of(gqa)!;
        Assert.Null(contract.PositionIds);
        Assert.Equal((8, 2L, 32L), (contract.Cache.Count, contract.KeyValueHeads!.Value, contract.HeadSize!.Value));
        var test = DataSet.Load(SharedFiles.Data("tiny_lm_test.npz"));
        var data = new DataSet(test.Source, test.Arrays.Select(a => a.Slice(0, 4)).ToList());
        var kv = ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx"));
        var f = ModelComparer.Compare(kv, gqa, new InputSource { Data = data, BatchSize = 2 }).Single();
        Assert.True(f.MaxAbsError < 1e-3, $"max abs {f.MaxAbsError}");
        Assert.Equal(1.0, f.Top1Agreement!.Value, 3);
    }

    [SharedTheory]
    [InlineData(0L)]
    [InlineData(1L << 40)] // truncates to 0 in ONNX Runtime's int: found by the fuzzer as a hang beyond Ctrl+C
    [InlineData(3L)]       // 8 query heads are not a multiple of 3 groups
    public void HeadCountsOnnxRuntimeWouldDivideByAreRefusedBeforeASessionOpens(long keyValueHeads)
    {
        var gqa = TinyLlamaGqa();
        gqa.Proto.Graph.Node.First(n => n.OpType == "GroupQueryAttention").Attribute.Single(a => a.Name == "kv_num_heads").I = keyValueHeads;
        var e = Assert.Throws<ModelCompression.Native.EngineException>(() => new ModelSession(gqa));
        Assert.Equal("ModelAttributeInvalid", e.ErrorId);
        Assert.Contains("kv_num_heads", e.Message);
    }

    [Theory]
    [InlineData(0L, null)]                          // RotaryEmbedding's own default: taken from the inputs' shapes
    [InlineData(8L, null)]
    [InlineData(1L << 40, "ModelAttributeInvalid")] // an int cannot hold it
    public void RotaryEmbeddingHeadCountsAreCheckedOnlyWhereOnnxRuntimeWouldMisreadThem(long heads, string? error)
    {
        var proto = new ModelCompression.Native.Onnx.Proto.ModelProto { Graph = new ModelCompression.Native.Onnx.Proto.GraphProto() };
        var node = new ModelCompression.Native.Onnx.Proto.NodeProto { OpType = "RotaryEmbedding", Domain = "com.microsoft", Name = "rotary" };
        node.Attribute.Add(new ModelCompression.Native.Onnx.Proto.AttributeProto { Name = "num_heads", I = heads });
        proto.Graph.Node.Add(node);
        var e = Record.Exception(() => ContribChecks.Check(proto, "m"));
        Assert.Equal(error, (e as ModelCompression.Native.EngineException)?.ErrorId);
    }
}
