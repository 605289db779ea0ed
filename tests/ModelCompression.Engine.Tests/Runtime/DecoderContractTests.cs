using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Engine.Tests.Runtime;

/// <summary>
/// The decoder contract: what a language model's inputs beyond its tokens mean, and the mask, positions and cache it
/// derives so that token data alone drives a model with a KV cache.
/// </summary>
public class DecoderContractTests
{
    static OnnxModel Kv() => ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx"));
    static DataSet TestRows(int count)
    {
        var test = DataSet.Load(SharedFiles.Data("tiny_lm_test.npz"));
        return new DataSet(test.Source, test.Arrays.Select(a => a.Slice(0, count)).ToList());
    }

    [SharedFact]
    public void TheCacheLayoutIsReadFromTheSignature()
    {
        var c = DecoderContract.Of(Kv())!;
        Assert.Equal("input_ids", c.Tokens.Name);
        Assert.Equal("attention_mask", c.AttentionMask!.Name);
        Assert.Equal("position_ids", c.PositionIds!.Name);
        Assert.Equal(8, c.Cache.Count);
        Assert.Equal(4, c.CacheLayers);
        Assert.Equal(2, c.KeyValueHeads);
        Assert.Equal(32, c.HeadSize);
        Assert.Equal("logits", c.Logits);
        Assert.Equal(("past_key_values.3.value", "present.3.value", CacheKind.Value), (c.Cache[7].Input, c.Cache[7].Output, c.Cache[7].Kind));
        // 4 layers x (key + value) x 2 heads x 32 floats per token.
        Assert.Equal(4 * 2 * 2 * 32 * 4, c.CacheBytesPerToken);
        // A model with only token ids has nothing to derive.
        Assert.Null(DecoderContract.Of(ModelIO.Load(SharedFiles.Model("tiny_llama.onnx"))));
    }

    [SharedFact]
    public void TokenDataAloneDrivesTheCacheModelAndItsLogitsEqualTheModelWithoutACache()
    {
        var data = TestRows(8);
        var kv = Kv();
        var bound = ModelInputs.Bind(kv, data);
        Assert.Equal(new long[] { 8, 128 }, bound["attention_mask"].Shape);
        Assert.Equal(Enumerable.Range(0, 128).Select(i => (long)i), bound["position_ids"].AsInt64().Take(128));
        Assert.Equal(new long[] { 8, 2, 0, 32 }, bound["past_key_values.0.key"].Shape);

        var plain = ModelIO.Load(SharedFiles.Model("tiny_llama.onnx"));
        var f = ModelComparer.Compare(plain, kv, new InputSource { Data = data, BatchSize = 4 }).Single();
        Assert.Equal("logits", f.Output);
        Assert.True(f.MaxAbsError <= 1e-4, $"max abs {f.MaxAbsError}");
        Assert.Equal(f.ReferencePerplexity!.Value, f.DifferencePerplexity!.Value, 4);
    }

    [SharedFact]
    public void SynthesizedInputsFitTheCacheAndAGivenPastFillsIt()
    {
        var kv = Kv();
        var empty = InputSynthesizer.Synthesize(kv, new SynthesisOptions { BatchSize = 2, DefaultDimension = 16 });
        Assert.Equal(new long[] { 2, 16 }, empty["attention_mask"].Shape);
        using var session = new ModelSession(kv);
        var present = session.Run(empty, ["present.0.key"]).Single();
        Assert.Equal(new long[] { 2, 2, 16, 32 }, present.Shape);

        var past = InputSynthesizer.Synthesize(kv, new SynthesisOptions
        {
            BatchSize = 1, DefaultDimension = 4, Dimensions = new Dictionary<string, long> { ["past_sequence_length"] = 10 },
        });
        Assert.Equal(new long[] { 1, 14 }, past["attention_mask"].Shape);
        Assert.Equal(new long[] { 10, 11, 12, 13 }, past["position_ids"].AsInt64());
        Assert.Contains(past["past_key_values.2.value"].AsFloat(), v => v != 0);
        Assert.Equal(new long[] { 1, 2, 14, 32 }, session.Run(past, ["present.2.value"]).Single().Shape);

        var e = Assert.Throws<EngineException>(() => InputSynthesizer.Synthesize(kv, new SynthesisOptions
        {
            DefaultDimension = 4, InputShapes = new Dictionary<string, long[]> { ["attention_mask"] = [1, 9] },
        }));
        Assert.Equal("InputShapeDerived", e.ErrorId);
        Assert.Contains("past_sequence_length", e.Message);
    }

    [SharedFact]
    public void ACacheThatNoOutputReturnsIsRefusedByName()
    {
        var proto = Kv().Proto.Clone();
        var present = proto.Graph.Output.First(o => o.Name == "present.1.value");
        foreach (var n in proto.Graph.Node)
            for (int i = 0; i < n.Output.Count; i++) if (n.Output[i] == present.Name) n.Output[i] = "renamed";
        present.Name = "renamed";
        var e = Assert.Throws<EngineException>(() => DecoderContract.Of(new OnnxModel(proto, null, [])));
        Assert.Equal("DecoderCacheUnmatched", e.ErrorId);
        Assert.Contains("past_key_values.1.value", e.Message);
    }

    /// <summary>Found by the fuzzer (seed 31, case 2061): heads and head size that overflow an array were UnexpectedError.</summary>
    [SharedFact]
    public void ACacheTooWideForOneArrayIsRefusedByName()
    {
        var proto = Kv().Proto.Clone();
        var dims = proto.Graph.Input.First(i => i.Name == "past_key_values.3.value").Type.TensorType.Shape.Dim;
        dims[1].DimValue = 1L << 62;
        dims[3].DimValue = 1L << 31;
        var e = Assert.Throws<EngineException>(() => DecoderContract.Of(new OnnxModel(proto, null, [])));
        Assert.Equal("DecoderCacheUnmatched", e.ErrorId);
        Assert.Contains("cannot be one array", e.Message);
    }

    [Fact]
    public void MistypedDataIsRefusedForEveryStageAndIntegersConvert()
    {
        var mlp = TestModels.Mlp(inputs: 8);
        var ints = new DataSet("ints.npz", [new NamedArray("features", [4, 8], new long[32])]);
        var e = Assert.Throws<EngineException>(() => ModelInputs.Bind(mlp, ints));
        Assert.Equal("DataTypeMismatch", e.ErrorId);
        Assert.Contains("'features'", e.Message);
        var doubles = new DataSet("d.npz", [new NamedArray("features", [4, 8], new double[32])]);
        Assert.IsType<float[]>(ModelInputs.Bind(mlp, doubles)["features"].Data);
    }
}
