using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Engine.Tests.Runtime;

/// <summary>The activation probe: inner tensors over data, in memory-bounded slices, with one policy for every stage.</summary>
[Collection(nameof(ProcessWideLimits))]
public class ActivationProbeTests
{
    [SharedFact]
    public void SlicedRunsSeeTheSameTensorsAsOneRunAndKeepGroupsTogether()
    {
        var model = ModelIO.Load(SharedFiles.Model("tiny_llama_kv.onnx"));
        var test = DataSet.Load(SharedFiles.Data("tiny_lm_test.npz"));
        var data = new DataSet(test.Source, test.Arrays.Select(a => a.Slice(0, 6)).ToList());
        var matmuls = model.Proto.Graph.Node.Where(n => n.OpType == "MatMul" && n.Input[1].StartsWith("onnx::", StringComparison.Ordinal)).Select(n => n.Input[0]).Distinct().ToList();
        var source = new InputSource { Data = data, BatchSize = 4 };

        Dictionary<string, double> Sums(long budget, out int slices)
        {
            long saved = ActivationProbe.MemoryBudget;
            ActivationProbe.MemoryBudget = budget;
            try
            {
                var sums = new Dictionary<string, double>();
                var batches = new HashSet<InputBatch>();
                int seen = 0;
                using var probe = new ActivationProbe(model, [.. matmuls, "input_ids"]);
                probe.Observe(source, t =>
                {
                    batches.Add(t.Batch);
                    sums[t.Name] = sums.GetValueOrDefault(t.Name) + t.Value.AsFloat().Sum(v => (double)v);
                    seen++;
                });
                Assert.Equal(2, batches.Count);
                Assert.Equal(2 * (matmuls.Count + 1), seen);
                slices = seen;
                return sums;
            }
            finally { ActivationProbe.MemoryBudget = saved; }
        }
        var whole = Sums(long.MaxValue, out _);
        var sliced = Sums(1, out _);
        Assert.Equal(whole.Keys.Order(), sliced.Keys.Order());
        foreach (var (k, v) in whole) Assert.Equal(v, sliced[k], 6);
        // The token ids come from the data itself.
        Assert.Equal(data.Arrays[0].Slice(0, 6).AsInt64().Sum(), whole["input_ids"]);
    }

    [Fact]
    public void UnknownTensorsEmptyDataAndCancellationAreClear()
    {
        var mlp = TestModels.Mlp();
        Assert.Equal("ProbeTensorUnknown", Assert.Throws<EngineException>(() => new ActivationProbe(mlp, ["nope"])).ErrorId);
        var hidden = mlp.Proto.Graph.Node.First(n => n.OpType == "Relu").Output[0];
        using var probe = new ActivationProbe(mlp, [hidden]);
        var empty = new DataSet("empty.npz", [new NamedArray("x", [0, 8], Array.Empty<float>())]);
        Assert.Equal("ProbeDataEmpty", Assert.Throws<EngineException>(() => probe.Observe(new InputSource { Data = empty }, _ => { })).ErrorId);
        var rows = new DataSet("rows.npz", [new NamedArray("x", [4, 8], new float[32])]);
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => probe.Observe(new InputSource { Data = rows }, _ => { }, cancel: cts.Token));
        var ints = new DataSet("ints.npz", [new NamedArray("x", [4, 8], new long[32])]);
        Assert.Equal("DataTypeMismatch", Assert.Throws<EngineException>(() => probe.Observe(new InputSource { Data = ints }, _ => { })).ErrorId);
    }
}
