using ModelCompression.Native;
using ModelCompression.Native.Onnx;

namespace ModelCompression.Engine.Tests.Runtime;

/// <summary>ONNX Runtime GenAI folders: what the configuration says of the model, read from the model itself.</summary>
public class GenAiFolderTests
{
    [SharedFact]
    public void BothLayoutsShowTheirHeadsLayersAndHiddenSize()
    {
        var expected = new Dictionary<string, long>
        {
            ["num_hidden_layers"] = 4, ["num_key_value_heads"] = 2, ["head_size"] = 32, ["num_attention_heads"] = 8, ["hidden_size"] = 256,
        };
        Assert.Equal(expected, GenAiFolder.Describe(ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx"))));
        Assert.Equal(expected, GenAiFolder.Describe(BuilderLayoutTests.TinyLlamaGqa()));
        var folder = ModelIO.Load(SharedFiles.Model("tiny_llama_genai"));
        Assert.Equal("model.onnx", folder.Folder!.ModelFile);
        Assert.Equal(8, folder.Folder.Declared["num_attention_heads"]);
    }

    [SharedFact]
    public void AModelWhoseLayersHoldCachesOfDifferentSizesIsRefused()
    {
        var folder = ModelIO.Load(SharedFiles.Model("tiny_llama_genai"));
        var uneven = folder.Derive("Uneven", new Dictionary<string, string>(), proto =>
        {
            foreach (var kind in new[] { "key", "value" })
                proto.Graph.Input.First(i => i.Name == $"past_key_values.1.{kind}").Type.TensorType.Shape.Dim[1].DimValue = 1;
            return null;
        });
        var e = Assert.Throws<EngineException>(() => folder.Folder!.ConfigFor(uneven, "model.onnx"));
        Assert.Equal("GenAiConfigUnrepresentable", e.ErrorId);
        Assert.Contains("layer 1: 1 heads", e.Message);
    }
}
