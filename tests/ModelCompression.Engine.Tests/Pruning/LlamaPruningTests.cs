using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Runtime;
using Xunit.Abstractions;
using static ModelCompression.Engine.Tests.Pruning.PruningTestHelpers;
using static ModelCompression.Engine.Tests.Pruning.TransformerPruningTests;

namespace ModelCompression.Engine.Tests.Pruning;

/// <summary>
/// Llama-family pruning on the shared tiny_llama (8 query / 2 key-value heads, rotary, RMSNorm, SwiGLU) in its three
/// layouts: the plain export, the decoder-with-past export, and ONNX Runtime GenAI's builder layout. Exactness is
/// checked by pruning what carries nothing (zeroed heads, groups, neurons) and comparing logits in ONNX Runtime.
/// </summary>
public class LlamaPruningTests(ITestOutputHelper output)
{
    static OnnxModel Plain() => ModelIO.Load(SharedFiles.Model("tiny_llama.onnx"));
    static OnnxModel Cached() => ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx"));

    /// <summary>The first <paramref name="rows"/> windows of tiny_lm_test (x: tokens, y: next tokens).</summary>
    static InputSource Windows(int rows)
    {
        var test = DataSet.Load(SharedFiles.Data("tiny_lm_test.npz"));
        return new InputSource { Data = new DataSet(test.Source, test.Arrays.Select(a => a.Slice(0, rows)).ToList()), BatchSize = 16 };
    }

    static OutputFidelity Logits(OnnxModel reference, OnnxModel other, int rows) => ModelComparer.Compare(reference, other, Windows(rows)).Single();

    void Print(OnnxModel m)
    {
        foreach (var n in m.Report!.Notes) output.WriteLine(n.Length > 400 ? n[..400] + "..." : n);
        foreach (var e in m.Report.Entries.Where(e => e.Action != "Kept")) output.WriteLine($"  {e.Target} [{e.OpType}] {e.Action}: {(e.Detail.Length > 200 ? e.Detail[..200] + "..." : e.Detail)}");
    }

    /// <summary>tiny_llama with weights edited by role ("blocks.0.q", "blocks.2.down", ...): the weight of the MatMul node /m/blocks.N/role/MatMul.</summary>
    static OnnxModel EditRoles(OnnxModel model, Action<string, long[], float[]> edit)
    {
        var roles = model.Proto.Graph.Node.Where(n => n.OpType == "MatMul" && n.Name.StartsWith("/m/blocks.", StringComparison.Ordinal))
            .ToDictionary(n => n.Input[1], n => string.Join(".", n.Name.Split('/')[2..4]), StringComparer.Ordinal);
        return Edit(model, (name, dims, v) => { if (roles.TryGetValue(name, out var role)) edit(role, dims, v); });
    }

    static IEnumerable<int> HeadColumns(IEnumerable<int> heads) => heads.SelectMany(h => Enumerable.Range(h * 32, 32));

    [SharedFact]
    public void HalfRateHalvesTheFileWithHeadsAndBothLayoutsGiveTheSameLogits()
    {
        var options = new PruningOptions { Structured = true, Rate = 0.5 };
        var (plain, cached) = (Plain(), Cached());
        var (a, b) = (ModelPruner.Prune(plain, options), ModelPruner.Prune(cached, options));
        Print(b);
        output.WriteLine($"size {plain.SerializedSize:N0} -> {a.SerializedSize:N0} ({(double)a.SerializedSize / plain.SerializedSize:F3})");
        Assert.True(a.SerializedSize <= 0.5 * plain.SerializedSize);
        var m = b.Report!.Metrics;
        // Half of the query heads go, evenly within each key/value group; the key/value heads and so the cache stay.
        Assert.Equal((32, 16, 8, 8), ((int)m["HeadsBefore"], (int)m["HeadsAfter"], (int)m["KeyValueHeadsBefore"], (int)m["KeyValueHeadsAfter"]));
        Assert.Equal((2048, 2048, 1376), ((int)m["CacheBytesPerTokenBefore"], (int)m["CacheBytesPerTokenAfter"], (int)m["FfnAfter"]));
        Assert.Contains(b.Report.Entries, e => e.Detail.StartsWith("Heads: kept 4 of 8 heads (grouped-query attention: 2 of 2 key/value heads, 2 query heads each)"));
        Assert.Contains(b.Report.Notes, n => n.StartsWith("Key/value cache: 2,048 -> 2,048 bytes per token"));
        var f = Logits(a, b, 64);
        output.WriteLine($"plain vs cache layout, pruned alike: max abs {f.MaxAbsError:E2}, perplexity {f.ReferencePerplexity:F4} / {f.DifferencePerplexity:F4}");
        Assert.True(f.MaxAbsError <= 1e-4, $"max abs {f.MaxAbsError}");
        Assert.True(Math.Abs(f.ReferencePerplexity!.Value - f.DifferencePerplexity!.Value) <= 1e-3);
    }

    [SharedFact]
    public void DeadQueryHeadsGoEvenlyWithinTheirGroupsAndTheLogitsStay()
    {
        // Query heads 1, 3 (group 0) and 5, 6 (group 1) of every block read nothing and write nothing.
        int[] dead = [1, 3, 5, 6];
        var model = EditRoles(Cached(), (role, dims, v) =>
        {
            if (role.EndsWith(".q")) ZeroColumns(v, dims, HeadColumns(dead));
            if (role.EndsWith(".o")) ZeroRows(v, dims, HeadColumns(dead));
        });
        var pruned = ModelPruner.Prune(model, new PruningOptions { Structured = true, HeadRate = 0.5 });
        Print(pruned);
        var m = pruned.Report!.Metrics;
        Assert.Equal((16, 8), ((int)m["HeadsAfter"], (int)m["KeyValueHeadsAfter"]));
        Assert.Equal([256L, 128], Tensor(pruned, model.Proto.Graph.Node.Single(n => n.Name == "/m/blocks.0/q/MatMul").Input[1]).Dims);
        var f = Logits(model, pruned, 16);
        output.WriteLine($"max abs {f.MaxAbsError:E2}");
        Assert.True(f.MaxAbsError <= 1e-4, $"max abs {f.MaxAbsError}");
    }

    [SharedFact]
    public void ADeadKeyValueGroupGoesWithItsQueryHeadsAndTheCacheShrinks()
    {
        // Key/value head 1 and the query heads 4-7 it serves carry nothing in any block.
        var model = EditRoles(Cached(), (role, dims, v) =>
        {
            if (role.EndsWith(".q")) ZeroColumns(v, dims, HeadColumns([4, 5, 6, 7]));
            if (role.EndsWith(".k") || role.EndsWith(".v")) ZeroColumns(v, dims, HeadColumns([1]));
            if (role.EndsWith(".o")) ZeroRows(v, dims, HeadColumns([4, 5, 6, 7]));
        });
        var pruned = ModelPruner.Prune(model, new PruningOptions { Structured = true, KeyValueHeadRate = 0.5 });
        Print(pruned);
        var m = pruned.Report!.Metrics;
        Assert.Equal((16, 4), ((int)m["HeadsAfter"], (int)m["KeyValueHeadsAfter"]));
        Assert.Equal((2048, 1024), ((int)m["CacheBytesPerTokenBefore"], (int)m["CacheBytesPerTokenAfter"]));
        var contract = DecoderContract.Of(pruned)!;
        Assert.Equal((8, 1L), (contract.Cache.Count, contract.KeyValueHeads!.Value));
        Assert.All(pruned.Proto.Graph.Input.Concat(pruned.Proto.Graph.Output).Where(v => v.Name.Contains("key") || v.Name.Contains("value")),
            v => Assert.Equal(1, v.Type.TensorType.Shape.Dim[1].DimValue));
        var f = Logits(model, pruned, 16);
        output.WriteLine($"max abs {f.MaxAbsError:E2}");
        Assert.True(f.MaxAbsError <= 1e-4, $"max abs {f.MaxAbsError}");
    }

    [SharedFact]
    public void SwiGluGateAndUpArePrunedAsOneAndDeadNeuronsGoExactly()
    {
        var deadNeurons = Enumerable.Range(0, 688).Where(i => i % 2 == 1).ToArray();
        var model = EditRoles(Plain(), (role, dims, v) =>
        {
            if (role.EndsWith(".gate") || role.EndsWith(".up")) ZeroColumns(v, dims, deadNeurons);
            if (role.EndsWith(".down")) ZeroRows(v, dims, deadNeurons);
        });
        var pruned = ModelPruner.Prune(model, new PruningOptions { Structured = true, FfnRate = 0.5 });
        Print(pruned);
        Assert.Equal(1376, (int)pruned.Report!.Metrics["FfnAfter"]);
        Assert.Contains(pruned.Report.Entries, e => e.Target == "/m/blocks.0/gate/MatMul" && e.Detail.Contains("pruned jointly with /m/blocks.0/up/MatMul"));
        var f = Logits(model, pruned, 16);
        Assert.True(f.MaxAbsError <= 1e-4, $"max abs {f.MaxAbsError}");
    }

    public static TheoryData<string> BuilderOptions() => ["Rate", "HeadRate", "KeyValueHeadRate"];

    [SharedTheory]
    [MemberData(nameof(BuilderOptions))]
    public void TheBuilderLayoutPrunesAsTheDecomposedExportDoes(string which)
    {
        // GroupQueryAttention (rotary inside), SkipSimplifiedLayerNormalization: the same decisions, the same logits.
        var options = which switch
        {
            "Rate" => new PruningOptions { Structured = true, Rate = 0.5 },
            "HeadRate" => new PruningOptions { Structured = true, HeadRate = 0.5 },
            _ => new PruningOptions { Structured = true, KeyValueHeadRate = 0.5 },
        };
        var decomposed = Cached();
        var builder = new OnnxModel(LlamaModels.TinyLlamaBuilderLayout(decomposed), null, []);
        var (a, b) = (ModelPruner.Prune(decomposed, options), ModelPruner.Prune(builder, options));
        Print(b);
        Assert.Equal(a.Report!.Metrics["HeadsAfter"], b.Report!.Metrics["HeadsAfter"]);
        Assert.Equal(a.Report.Metrics["CacheBytesPerTokenAfter"], b.Report.Metrics["CacheBytesPerTokenAfter"]);
        var attention = b.Proto.Graph.Node.Where(n => n.OpType == "GroupQueryAttention").ToList();
        long heads = (long)b.Report.Metrics["HeadsAfter"] / 4, kv = (long)b.Report.Metrics["KeyValueHeadsAfter"] / 4;
        Assert.All(attention, n => Assert.Equal((heads, kv), (GraphIndex.IntAttr(n, "num_heads", 0), GraphIndex.IntAttr(n, "kv_num_heads", 0))));
        // The rotary caches are per rotary dimension, not per head: they keep their width.
        Assert.Equal([2048L, 16], Tensor(b, "cos_cache").Dims);
        var f = Logits(a, b, 16);
        output.WriteLine($"decomposed vs builder layout, pruned alike: max abs {f.MaxAbsError:E2}, perplexity {f.ReferencePerplexity:F4} / {f.DifferencePerplexity:F4}");
        Assert.True(f.MaxAbsError <= 1e-3, $"max abs {f.MaxAbsError}");
        Assert.Equal(1.0, f.Top1Agreement!.Value, 3);
    }

    [SharedFact]
    public void ABlockGoesWithItsCacheAndTheContractStillPairs()
    {
        var options = new PruningOptions { RemoveBlockNames = ["m/blocks.2"] };
        var (a, b) = (ModelPruner.Prune(Plain(), options), ModelPruner.Prune(Cached(), options));
        Print(b);
        var contract = DecoderContract.Of(b)!;
        Assert.Equal([0, 1, 3], contract.Cache.Select(c => c.Layer).Distinct());
        Assert.DoesNotContain(b.Proto.Graph.Input, i => i.Name.StartsWith("past_key_values.2."));
        Assert.DoesNotContain(b.Proto.Graph.Output, o => o.Name.StartsWith("present.2."));
        Assert.Equal((2048, 1536), ((int)b.Report!.Metrics["CacheBytesPerTokenBefore"], (int)b.Report.Metrics["CacheBytesPerTokenAfter"]));
        var f = Logits(a, b, 16);
        Assert.True(f.MaxAbsError <= 1e-4, $"max abs {f.MaxAbsError}");
    }

    [SharedFact]
    public void UnstructuredPruningWorksOnTheCacheLayout()
    {
        var options = new PruningOptions { Rate = 0.5 };
        var (a, b) = (ModelPruner.Prune(Plain(), options), ModelPruner.Prune(Cached(), options));
        Assert.Equal(0.5, b.Report!.Metrics["Sparsity"], 3);
        Assert.Equal(Cached().Proto.Graph.Input.Select(i => i.ToString()), b.Proto.Graph.Input.Select(i => i.ToString()));
        var f = Logits(a, b, 16);
        Assert.True(f.MaxAbsError <= 1e-4, $"max abs {f.MaxAbsError}");
    }

    [SharedFact]
    public void OptimizedGraphsPruneThroughTheFusedOperators()
    {
        // Optimize-Model's Extended level fuses RMSNorm (SimplifiedLayerNormalization), Q·Kᵀ (FusedMatMul) and SiLU (QuickGelu).
        var plain = Plain();
        var fused = ModelCompression.Native.Quantization.GraphOptimizer.Optimize(plain, "Extended");
        Assert.Contains(fused.Proto.Graph.Node, n => n.OpType == "FusedMatMul");
        var options = new PruningOptions { Structured = true, Rate = 0.5 };
        var (a, b) = (ModelPruner.Prune(plain, options), ModelPruner.Prune(fused, options));
        Print(b);
        Assert.Equal((16, 128, 1376), ((int)b.Report!.Metrics["HeadsAfter"], (int)b.Report.Metrics["HiddenAfter"], (int)b.Report.Metrics["FfnAfter"]));
        Assert.Equal(a.Report!.Metrics["FlopsAfter"], b.Report.Metrics["FlopsAfter"], 0.02 * a.Report.Metrics["FlopsAfter"]);
        var f = Logits(a, b, 16);
        output.WriteLine($"decomposed vs fused, pruned alike: max abs {f.MaxAbsError:E2}");
        Assert.True(f.MaxAbsError <= 1e-3, $"max abs {f.MaxAbsError}");
    }
}
