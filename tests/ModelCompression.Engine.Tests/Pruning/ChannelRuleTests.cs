using ModelCompression.Native;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Quantization;
using Xunit.Abstractions;
using static ModelCompression.Native.Onnx.GraphBuilder;
using static ModelCompression.Engine.Tests.Pruning.PruningTestHelpers;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Pruning;

/// <summary>
/// One test per channel rule: x[b,4,8] -> MatMul [8,C] + bias (the layer pruned) -> the op under test -> MatMul [C',4]
/// (the consumer). Half the layer's channels are dead (zero weight columns and bias) and the consumer reads nothing
/// from them (zero rows), so removing exactly those channels must leave the outputs as they were, whatever the op does.
/// </summary>
public class ChannelRuleTests(ITestOutputHelper output)
{
    const int C = 8;
    static readonly int[] Dead = [1, 2, 5, 6];

    /// <summary>The ops, each given the layer's output [b,4,C] and returning what the consumer reads (channels last).</summary>
    static readonly Dictionary<string, Func<GraphBuilder, string, string>> Cases = new()
    {
        ["Unary (Relu, Sigmoid, Tanh, Clip, Cast)"] = (b, x) => b.Node("Cast", [b.Node("Clip", [b.Node("Tanh", [b.Node("Sigmoid", [b.Node("Relu", [x])])]), Scalar(b, -1f), Scalar(b, 1f)])], attributes: [Attr("to", (long)DT.Float)]),
        ["Elementwise (constants sliced, two tracked inputs)"] = (b, x) => b.Node("Mul", [b.Node("Add", [x, Vector(b, C, 0.5f)]), b.Node("Relu", [x])]),
        ["Concat along another axis"] = (b, x) => b.Node("Concat", [x, x], attributes: [Attr("axis", 1L)]),
        ["Concat along the channels"] = (b, x) => b.Node("Concat", [x, b.Node("Neg", [x])], attributes: [Attr("axis", -1L)]),
        ["Transpose"] = (b, x) => b.Node("Transpose", [b.Node("Transpose", [x], attributes: [Attr("perm", new long[] { 0, 2, 1 })])], attributes: [Attr("perm", new long[] { 0, 2, 1 })]),
        ["Unsqueeze and Squeeze"] = (b, x) => b.Node("Squeeze", [b.Node("Unsqueeze", [x, b.InitializerInt64(b.Unique("axes"), [1], [1])]), b.InitializerInt64(b.Unique("axes"), [1], [1])]),
        ["Reshape keeping the channel axis"] = (b, x) => b.Node("Reshape", [x, b.InitializerInt64(b.Unique("shape"), [4], [0, 2, 2, C])]) is var r ? b.Node("Reshape", [r, b.InitializerInt64(b.Unique("shape"), [3], [0, 4, C])]) : "",
        ["Reshape merging channels with a fixed axis"] = (b, x) => b.Node("Reshape", [x, b.InitializerInt64(b.Unique("shape"), [2], [0, 4 * C])]),
        ["Gather along another axis"] = (b, x) => b.Node("Gather", [x, b.InitializerInt64(b.Unique("index"), [2], [3, 0])], attributes: [Attr("axis", 1L)]),
        ["Slice along another axis"] = (b, x) => b.Node("Slice", [x, b.InitializerInt64(b.Unique("s"), [1], [1]), b.InitializerInt64(b.Unique("e"), [1], [3]), b.InitializerInt64(b.Unique("a"), [1], [1])]),
        ["Slice of the channel axis"] = (b, x) => b.Node("Concat", [
            b.Node("Slice", [x, b.InitializerInt64(b.Unique("s"), [1], [0]), b.InitializerInt64(b.Unique("e"), [1], [4]), b.InitializerInt64(b.Unique("a"), [1], [-1])]),
            b.Node("Slice", [x, b.InitializerInt64(b.Unique("s"), [1], [4]), b.InitializerInt64(b.Unique("e"), [1], [long.MaxValue]), b.InitializerInt64(b.Unique("a"), [1], [-1])])], attributes: [Attr("axis", -1L)]),
        ["Softmax over another axis"] = (b, x) => b.Node("Softmax", [x], attributes: [Attr("axis", 1L)]),
        ["Reduce over another axis"] = (b, x) => b.Node("ReduceSum", [x, b.InitializerInt64(b.Unique("axes"), [1], [1])], attributes: [Attr("keepdims", 1L)]),
        ["Pad another axis"] = (b, x) => b.Node("Pad", [x, b.InitializerInt64(b.Unique("pads"), [6], [0, 1, 0, 0, 2, 0])]),
        ["Shape reading another axis"] = (b, x) => b.Node("Expand", [Vector(b, 1, 1f), b.Node("Slice", [b.Node("Shape", [x]), b.InitializerInt64(b.Unique("s"), [1], [0]), b.InitializerInt64(b.Unique("e"), [1], [2])])]) is var ones
            ? b.Node("Mul", [x, b.Node("Unsqueeze", [ones, b.InitializerInt64(b.Unique("axes"), [1], [2])])]) : "",
        ["Batched MatMul over the channels' rows"] = (b, x) => b.Node("Transpose", [b.Node("MatMul", [b.Node("Transpose", [x], attributes: [Attr("perm", new long[] { 0, 2, 1 })]), b.Initializer(b.Unique("w"), [4, 4], TestModels.RandomWeights(new Random(9), 16, 0.5f))])], attributes: [Attr("perm", new long[] { 0, 2, 1 })]),
        ["Tile along the channels"] = (b, x) => b.Node("Tile", [x, b.InitializerInt64(b.Unique("r"), [3], [1, 1, 2])]),
        ["Tile along another axis"] = (b, x) => b.Node("Tile", [x, b.InitializerInt64(b.Unique("r"), [3], [1, 2, 1])]),
        ["Expand of a size-1 axis"] = (b, x) => b.Node("Reshape", [b.Node("Expand", [b.Node("Unsqueeze", [x, b.InitializerInt64(b.Unique("axes"), [1], [1])]),
            b.InitializerInt64(b.Unique("shape"), [4], [1, 3, 1, 1])]), b.InitializerInt64(b.Unique("shape"), [3], [0, 12, C])]),
        ["QuickGelu (com.microsoft)"] = (b, x) => Contrib(b, "QuickGelu", [x]),
        ["FusedMatMul over the channels' rows (com.microsoft)"] = (b, x) => Contrib(b, "FusedMatMul",
            [b.Initializer(b.Unique("w"), [4, 4], TestModels.RandomWeights(new Random(9), 16, 0.5f)), x]),
        ["LayerNormalization over another axis"] = (b, x) => b.Node("Transpose", [b.Node("LayerNormalization", [b.Node("Transpose", [x], attributes: [Attr("perm", new long[] { 0, 2, 1 })]), Vector(b, 4, 1f), Vector(b, 4, 0f)], attributes: [Attr("axis", -1L)])], attributes: [Attr("perm", new long[] { 0, 2, 1 })]),
    };

    public static TheoryData<string> Names() => [.. Cases.Keys];

    /// <summary>An ONNX Runtime contrib op (the model imports com.microsoft).</summary>
    static string Contrib(GraphBuilder b, string op, string[] inputs)
    {
        var model = b.Build();
        if (!model.OpsetImport.Any(o => o.Domain == "com.microsoft")) model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        return b.Node(op, inputs, domain: "com.microsoft");
    }

    static string Scalar(GraphBuilder b, float v) => b.Initializer(b.Unique("c"), [], [v]);
    static string Vector(GraphBuilder b, int n, float v) => b.Initializer(b.Unique("c"), [n], Enumerable.Repeat(v, n).ToArray());

    [Theory]
    [MemberData(nameof(Names))]
    public void DeadChannelsGoThroughTheOpWithoutChangingTheOutputs(string name)
    {
        var rng = new Random(7);
        var b = new GraphBuilder("rule").Input("x", DT.Float, "batch", 4, 8);
        var w1 = TestModels.RandomWeights(rng, 8 * C, 0.5f);
        var b1 = TestModels.RandomWeights(rng, C, 0.1f);
        foreach (int d in Dead) { for (int i = 0; i < 8; i++) w1[i * C + d] = 0; b1[d] = 0; }
        string h = b.Node("Add", [b.Node("MatMul", ["x", b.Initializer("w1", [8, C], w1)], name: "layer"), b.Initializer("b1", [C], b1)], name: "bias");
        string y = Cases[name](b, h);
        var probe = b.BuildModel();
        long width = PruningTestHelpers.OutputShapeOf(probe, y)[^1];
        var w2 = TestModels.RandomWeights(rng, (int)width * 4, 0.5f);
        // The consumer reads nothing from the dead channels, wherever the op put them (every copy along the last axis).
        for (int r = 0; r < width; r++) if (Dead.Contains(r % C)) Array.Clear(w2, r * 4, 4);
        b.Node("MatMul", [y, b.Initializer("w2", [width, 4], w2)], ["y"], name: "consumer");
        b.Graph.Output.Add(new ValueInfoProto { Name = "y", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)DT.Float } } });
        var model = b.BuildModel("rule");

        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0, ExcludeNodes = ["consumer"] });
        foreach (var e in pruned.Report!.Entries) output.WriteLine($"{e.Target} {e.Action}: {e.Detail}");
        Assert.Equal([8L, C / 2], Tensor(pruned, "w1").Dims);
        Assert.Contains(pruned.Report.Entries, e => e.Target == "layer" && e.Action == "Pruned");
        var f = CompareSynthetic(model, pruned);
        Assert.True(f.MaxAbsError < 1e-5, $"max abs error {f.MaxAbsError}");
    }

    [Fact]
    public void OpsThatMixTheChannelsStopTheWalkAndSayWhere()
    {
        (string Op, Func<GraphBuilder, string, string> Build, string Says)[] cases =
        [
            ("Softmax", (b, x) => b.Node("Softmax", [x], name: "mix", attributes: [Attr("axis", -1L)]), "normalizes over the channels"),
            ("ReduceMax", (b, x) => b.Node("ReduceMax", [x], name: "mix", attributes: [Attr("axes", new long[] { -1 })]), "reduces over the channels"),
            ("Gather", (b, x) => b.Node("Gather", [x, b.InitializerInt64("index", [1], [0])], name: "mix", attributes: [Attr("axis", 2L)]), "selects along the channel axis"),
            ("TopK", (b, x) => b.Node("TopK", [x, b.InitializerInt64("k", [1], [2])], ["v", "i"], name: "mix"), "does not follow"),
        ];
        foreach (var (op, build, says) in cases)
        {
            var b = new GraphBuilder("stop").Input("x", DT.Float, "batch", 4, 8);
            string h = b.Node("MatMul", ["x", b.Initializer("w1", [8, C], TestModels.RandomWeights(new Random(1), 8 * C, 0.5f))], name: "layer");
            string y = build(b, h);
            b.Node("Identity", [y], ["y"]);
            b.Graph.Output.Add(new ValueInfoProto { Name = "y", Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)DT.Float } } });
            var e = Assert.Throws<EngineException>(() => ModelPruner.Prune(b.BuildModel(op), new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0 }));
            output.WriteLine($"{op}: {e.Message}");
            Assert.Equal("PruningNoPrunableChannels", e.ErrorId);
            Assert.Contains(says, e.Message);
        }
    }

    [Fact]
    public void EveryRegisteredOperatorHasARule()
    {
        var ops = ChannelRules.Operators.ToList();
        Assert.Equal(ops.Count, ops.Distinct().Count());
        foreach (var op in new[] { "Relu", "Add", "Concat", "BatchNormalization", "LayerNormalization", "MaxPool", "Resize", "Pad", "Transpose", "Squeeze",
            "Flatten", "Reshape", "Conv", "MatMul", "Gemm", "Shape", "Gather", "Slice", "Softmax", "ReduceMean" })
            Assert.Contains(("", op), ops);
        Assert.Contains(("com.microsoft", "Attention"), ops);
        Assert.Contains(("com.microsoft", "MultiHeadAttention"), ops);
        Assert.Contains(("", "SimplifiedLayerNormalization"), ops);   // ONNX Runtime registers it in the ONNX domain
    }

    [Fact]
    public void Float16WeightsArePrunedStructuredAndUnstructured()
    {
        var half = ModelQuantizer.Quantize(TransformerModels.Build(new TransformerSpec()), new QuantizationOptions { Mode = QuantizationMode.Float16 });
        Assert.Contains(half.Proto.Graph.Initializer, t => t.DataType == (int)DT.Float16 && t.Dims.Count == 2);
        var pruned = ModelPruner.Prune(half, new PruningOptions { Rate = 0.5, Structured = true, MinElements = 0 });
        foreach (var n in pruned.Report!.Notes) output.WriteLine(n);
        Assert.Equal(4, (int)pruned.Report.Metrics["HeadsAfter"]);
        Assert.Equal(8, (int)pruned.Report.Metrics["HiddenAfter"]);
        Assert.Equal((int)DT.Float16, Tensor(pruned, "blocks.0.up.weight").DataType);
        Assert.Equal(OutputShape(half, 16), OutputShape(pruned, 16));

        var sparse = ModelPruner.Prune(half, new PruningOptions { Rate = 0.5, MinElements = 0 });
        output.WriteLine(sparse.Report!.Notes[0]);
        Assert.InRange(sparse.Report.Metrics["Sparsity"], 0.49, 0.51);
        var up = Tensor(sparse, "blocks.0.up.weight");
        Assert.Equal((int)DT.Float16, up.DataType);
        Assert.InRange(TensorData.CountZeros(up) / (double)TensorData.ElementCount(up), 0.45, 0.55);
        var nm = ModelPruner.Prune(half, new PruningOptions { Pattern = new SparsityPattern(2, 4), MinElements = 0 });
        Assert.InRange(nm.Report!.Metrics["Sparsity"], 0.49, 0.51);
    }

    [Fact]
    public void WeightsOfOtherTypesAreRefusedNamingTheNodeAndTheReason()
    {
        var bf = new GraphBuilder("double").Input("x", DT.Float, "batch", 8).Output("y", DT.Float, "batch", 4);
        bf.Graph.Initializer.Add(new TensorProto { Name = "w", DataType = (int)DT.Double, Dims = { 8, 4 }, RawData = Google.Protobuf.ByteString.CopyFrom(new byte[256]) });
        bf.Node("MatMul", ["x", "w"], ["y"], name: "fc");
        var e = Assert.Throws<EngineException>(() => ModelPruner.Prune(bf.BuildModel(), new PruningOptions { Rate = 0.5, MinElements = 0 }));
        output.WriteLine(e.Message);
        Assert.Equal("PruningNothingToPrune", e.ErrorId);
        Assert.Contains("fc: weight 'w' is float64; only float32, float16 and bfloat16 weights are pruned", e.Message);
    }
}
