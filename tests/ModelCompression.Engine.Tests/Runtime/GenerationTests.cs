using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Runtime.Generation;

namespace ModelCompression.Engine.Tests.Runtime;

/// <summary>Greedy generation with the KV cache: the module's own loop, ONNX Runtime GenAI, and the layouts agree token for token.</summary>
public class GenerationTests
{
    static long[] Prompt(int length, int row = 0) =>
        DataSet.Load(SharedFiles.Data("tiny_lm_test.npz")).Arrays.First(a => a.Name == "x").Slice(row, 1).AsInt64()[..length];

    /// <summary>Greedy decoding without a cache: the whole sequence runs again for every token (slow, obviously right).</summary>
    static long[] Recomputed(OnnxModel plain, long[] prompt, int n)
    {
        using var session = new ModelSession(plain);
        var seq = prompt.ToList();
        for (int i = 0; i < n; i++)
        {
            var logits = session.Run(new Dictionary<string, NamedArray> { ["input_ids"] = new("input_ids", [1, seq.Count], seq.ToArray()) })[0];
            int vocab = (int)logits.Shape[^1];
            var last = logits.AsFloat().AsSpan(logits.Length - vocab);
            seq.Add(System.Numerics.Tensors.TensorPrimitives.IndexOfMax(last));
        }
        return seq.Skip(prompt.Length).ToArray();
    }

    [SharedFact]
    public void TheCacheLoopGeneratesWhatRecomputingTheWholeSequenceGenerates()
    {
        var prompt = Prompt(24);
        var expected = Recomputed(ModelIO.Load(SharedFiles.Model("tiny_llama.onnx")), prompt, 32);
        using var kv = new OrtGreedyGenerator(ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx")));
        var run = kv.Generate(prompt, 32);
        Assert.Equal(expected, run.Tokens);
        Assert.Equal(32, run.StepMs.Length);
        Assert.All(run.StepMs, ms => Assert.True(ms > 0));
        using var gqa = new OrtGreedyGenerator(BuilderLayoutTests.TinyLlamaGqa());
        Assert.Equal(expected, gqa.Generate(prompt, 32).Tokens);
    }

    [SharedFact]
    public void GenAiGeneratesTheSameTokensFromTheFolderAndFromACompressedCopy()
    {
        var folder = ModelIO.Load(SharedFiles.Model("tiny_llama_genai"));
        Assert.NotNull(folder.Folder);
        var prompt = Prompt(16, 3);
        using var ours = new OrtGreedyGenerator(folder);
        using var genai = new GenAiGenerator(folder);
        var expected = ours.Generate(prompt, 40).Tokens;
        Assert.Equal(expected, genai.Generate(prompt, 40).Tokens);
        // A derived model (here: unchanged weights, a new history) goes to GenAI through a temporary folder.
        var derived = folder.Derive("Copy", new Dictionary<string, string>(), _ => null);
        using var fromCopy = new GenAiGenerator(derived);
        Assert.Equal(expected, fromCopy.Generate(prompt, 40).Tokens);
    }

    [SharedFact]
    public void AnExported4BitFolderGeneratesInGenAiWhatTheModulesLoopGenerates()
    {
        using var tmp = new TempDir();
        var folder = ModelIO.Load(SharedFiles.Model("tiny_llama_genai"));
        var q = ModelCompression.Native.Quantization.ModelQuantizer.Quantize(folder,
            new ModelCompression.Native.Quantization.QuantizationOptions { Mode = ModelCompression.Native.Quantization.QuantizationMode.WeightOnly });
        folder.Folder!.Export(q, tmp.File("int4"), new SaveOptions());
        var back = ModelIO.Load(tmp.File("int4"));
        Assert.Contains(back.Proto.Graph.Node, n => n.OpType == "MatMulNBits");
        var prompt = Prompt(20, 5);
        using var ours = new OrtGreedyGenerator(back);
        using var genai = new GenAiGenerator(back);
        Assert.Equal(ours.Generate(prompt, 48).Tokens, genai.Generate(prompt, 48).Tokens);
    }

    [SharedFact]
    public void AModelWithoutACacheIsRefusedByName()
    {
        var e = Assert.Throws<EngineException>(() => new OrtGreedyGenerator(ModelIO.Load(SharedFiles.Model("tiny_llama.onnx"))));
        Assert.Equal("GenerationCacheMissing", e.ErrorId);
        var e2 = Assert.Throws<EngineException>(() => new GenAiGenerator(ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx"))));
        Assert.Equal("GenerationEngineNotApplicable", e2.ErrorId);
    }

    [SharedFact]
    public void AModelWithoutLogitsAndPromptsLongerThanTheDataAreRefusedByName()
    {
        var kv = ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx"));
        var proto = kv.Proto.Clone();
        proto.Graph.Output.Remove(proto.Graph.Output.Single(o => o.Name == "logits"));
        var e = Assert.Throws<EngineException>(() => new OrtGreedyGenerator(new OnnxModel(proto, kv.SourcePath, [])));
        Assert.Equal("GenerationLogitsMissing", e.ErrorId);
        var shortRows = new DataSet("short rows", [new NamedArray("input_ids", [2, 8], new long[16])]);
        e = Assert.Throws<EngineException>(() => Prompts.Make(kv, new GenerationSettings { PromptLength = 16, NewTokens = 4, Data = shortRows }, 2));
        Assert.Equal("GenerationPromptTooLong", e.ErrorId);
        Assert.Contains("short rows", e.Message);
    }
}
