using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;
using static ModelCompression.Native.Onnx.GraphBuilder;
using Case = ModelCompression.Engine.Tests.Training.GradientCase;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Training;

/// <summary>
/// Op by op: the training engine's forward pass agrees with ONNX Runtime on the same graph, and its gradients
/// (for the graph input and every trainable initializer) agree with central finite differences of sum(output·R).
/// </summary>
public class OpGradientTests
{
    static Case Make(string name)
    {
        // A seed from the name that is the same in every process (string.GetHashCode is salted per process, which made
        // the Clip cases land within epsilon of a kink now and then).
        var rng = new Random(name.Aggregate(17, (h, ch) => unchecked(h * 31 + ch)) & 0xffff);
        float[] R(int n, float s = 1f) => TestModels.RandomWeights(rng, n, s);
        GraphBuilder G(params object[] xshape) => new GraphBuilder(name).Input("x", DT.Float, xshape).Output("y", DT.Float);
        GraphBuilder b;
        switch (name)
        {
            case "MatMul":
                b = G(2, 3, 4); b.Node("MatMul", ["x", b.Initializer("w", [4, 5], R(20))], ["y"]);
                return new(b.BuildModel(), [2, 3, 4]);
            case "MatMulBatched":
                b = G(2, 3, 4); b.Node("MatMul", ["x", b.Initializer("w", [2, 4, 5], R(40))], ["y"]);
                return new(b.BuildModel(), [2, 3, 4]);
            case "GemmTransAB":
                b = G(4, 3);
                b.Node("Gemm", ["x", b.Initializer("w", [5, 4], R(20)), b.Initializer("c", [5], R(5))], ["y"],
                    attributes: [Attr("transA", 1L), Attr("transB", 1L), Attr("alpha", 0.7f), Attr("beta", 1.3f)]);
                return new(b.BuildModel(), [4, 3]);
            case "Gemm":
                b = G(3, 4);
                b.Node("Gemm", ["x", b.Initializer("w", [4, 5], R(20)), b.Initializer("c", [3, 5], R(15))], ["y"], attributes: [Attr("beta", 0.5f)]);
                return new(b.BuildModel(), [3, 4]);
            case "AddSubMulDivBroadcast":
                {
                    b = G(2, 3, 4);
                    var h = b.Node("Add", ["x", b.Initializer("a", [4], R(4))]);
                    h = b.Node("Mul", [h, b.Initializer("m", [3, 1], R(3))]);
                    h = b.Node("Sub", [b.Initializer("s", [1, 3, 4], R(12)), h]);
                    var d = b.Node("Add", [b.Initializer("d", [2, 1, 1], [2.5f, 3f]), b.Node("Mul", ["x", "x"])]);
                    b.Node("Div", [h, d], ["y"]);
                    return new(b.BuildModel(), [2, 3, 4]);
                }
            case "Activations":
                {
                    b = G(3, 5);
                    var w = b.Initializer("w", [5, 5], R(25));
                    var h = b.Node("MatMul", ["x", w]);
                    var r = b.Node("Relu", [h]);
                    var l = b.Node("LeakyRelu", [h], attributes: [Attr("alpha", 0.2f)]);
                    var s = b.Node("Sigmoid", [h]);
                    var t = b.Node("Tanh", [h]);
                    var sum = b.Node("Add", [b.Node("Add", [r, l]), b.Node("Mul", [s, t])]);
                    b.Node("Identity", [sum], ["y"]);
                    return new(b.BuildModel(), [3, 5], Epsilon: 1e-3f);   // small steps: Relu/LeakyRelu kinks
                }
            case "ErfGelu":
                {
                    // the pattern torch.onnx.export writes for nn.GELU()
                    b = G(3, 6);
                    var h = b.Node("MatMul", ["x", b.Initializer("w", [6, 6], R(36))]);
                    var e = b.Node("Erf", [b.Node("Div", [h, b.Initializer("sqrt2", [], [1.41421356f])])]);
                    var g = b.Node("Mul", [h, b.Node("Add", [e, b.Initializer("one", [], [1f])])]);
                    b.Node("Mul", [g, b.Initializer("half", [], [0.5f])], ["y"]);
                    return new(b.BuildModel(), [3, 6]);
                }
            case "ErfAndSharedMatMul":
                {
                    // Erf alone, and a MatMul whose output is read twice: neither is fused
                    b = G(3, 6);
                    var h = b.Node("MatMul", ["x", b.Initializer("w", [6, 6], R(36))]);
                    var biased = b.Node("Add", [h, b.Initializer("bias", [6], R(6))]);
                    b.Node("Add", [b.Node("Erf", [biased]), b.Node("Mul", [h, h])], ["y"]);
                    return new(b.BuildModel(), [3, 6]);
                }
            case "GeluOp":
                {
                    b = new GraphBuilder(name, opset: 20).Input("x", DT.Float, 3, 6).Output("y", DT.Float);
                    var h = b.Node("MatMul", ["x", b.Initializer("w", [6, 6], R(36))]);
                    var g1 = b.Node("Gelu", [h]);
                    var g2 = b.Node("Gelu", [h], attributes: [Attr("approximate", "tanh")]);
                    b.Node("Add", [g1, g2], ["y"]);
                    return new(b.BuildModel(), [3, 6]);
                }
            case "Softmax":
                {
                    b = G(2, 3, 4);
                    var h = b.Node("Mul", ["x", b.Initializer("k", [4], R(4, 2f))]);
                    var s1 = b.Node("Softmax", [h], attributes: [Attr("axis", 1L)]);
                    var s2 = b.Node("LogSoftmax", [h]);
                    b.Node("Add", [s1, s2], ["y"]);
                    return new(b.BuildModel(), [2, 3, 4]);
                }
            case "ConvGroupsPadsStridesDilations":
                {
                    b = G(2, 4, 9, 8);
                    var h = b.Node("Conv", ["x", b.Initializer("w", [6, 2, 3, 3], R(108, 0.4f)), b.Initializer("b", [6], R(6))],
                        attributes: [Attr("group", 2L), Attr("pads", new long[] { 1, 2, 0, 1 }), Attr("strides", new long[] { 2, 1 }), Attr("dilations", new long[] { 1, 2 })]);
                    b.Node("Conv", [h, b.Initializer("w2", [3, 6, 1, 1], R(18, 0.4f))], ["y"]);
                    return new(b.BuildModel(), [2, 4, 9, 8]);
                }
            case "Pools":
                {
                    b = G(2, 3, 7, 7);
                    var h = b.Node("Mul", ["x", b.Initializer("k", [3, 1, 1], R(3, 2f))]);
                    var m = b.Node("MaxPool", [h], attributes: [Attr("kernel_shape", new long[] { 3, 3 }), Attr("strides", new long[] { 2, 2 }), Attr("pads", new long[] { 1, 1, 1, 1 })]);
                    var a = b.Node("AveragePool", [h], attributes: [Attr("kernel_shape", new long[] { 3, 3 }), Attr("strides", new long[] { 2, 2 }), Attr("pads", new long[] { 1, 1, 1, 1 }), Attr("count_include_pad", 1L)]);
                    var a2 = b.Node("AveragePool", [h], attributes: [Attr("kernel_shape", new long[] { 2, 2 }), Attr("strides", new long[] { 2, 2 }), Attr("ceil_mode", 1L)]);
                    var g = b.Node("GlobalAveragePool", [a2]);
                    var s = b.Node("Add", [b.Node("Add", [m, a]), g]);
                    b.Node("Identity", [s], ["y"]);
                    return new(b.BuildModel(), [2, 3, 7, 7]);
                }
            case "BatchNorm":
                {
                    b = G(4, 3, 2, 2);
                    b.Node("BatchNormalization", ["x", b.Initializer("scale", [3], R(3)), b.Initializer("bias", [3], R(3)),
                        b.Initializer("mean", [3], R(3, 0.1f)), b.Initializer("var", [3], [1f, 1.5f, 0.7f])], ["y"], attributes: [Attr("epsilon", 1e-3f)]);
                    return new(b.BuildModel(), [4, 3, 2, 2]);
                }
            case "LayerNorm":
                {
                    b = G(2, 3, 5);
                    b.Node("LayerNormalization", ["x", b.Initializer("scale", [5], R(5)), b.Initializer("bias", [5], R(5))], ["y"], attributes: [Attr("epsilon", 1e-5f)]);
                    return new(b.BuildModel(), [2, 3, 5]);
                }
            case "ShapeOps":
                {
                    // Flatten the way exporters write it: Shape -> Gather -> Unsqueeze -> Concat -> Reshape; then Transpose, Concat, Flatten
                    b = G(2, 3, 4);
                    var shape = b.Node("Shape", ["x"]);
                    var n = b.Node("Gather", [shape, b.InitializerInt64("zero", [], [0])], attributes: [Attr("axis", 0L)]);
                    var nu = b.Node("Unsqueeze", [n, b.InitializerInt64("axes0", [1], [0])]);
                    var target = b.Node("Concat", [nu, b.InitializerInt64("minus1", [1], [-1])], attributes: [Attr("axis", 0L)]);
                    var flat = b.Node("Reshape", ["x", target]);
                    var scaled = b.Node("Mul", [flat, b.Initializer("k", [12], R(12))]);
                    var t = b.Node("Transpose", [b.Node("Reshape", [scaled, b.InitializerInt64("s", [3], [2, 3, 4])])], attributes: [Attr("perm", new long[] { 2, 0, 1 })]);
                    var c = b.Node("Concat", [t, b.Node("Mul", [t, t])], attributes: [Attr("axis", 1L)]);
                    var sq = b.Node("Squeeze", [b.Node("Unsqueeze", [c, b.InitializerInt64("axes1", [1], [1])]), b.InitializerInt64("axes2", [1], [1])]);
                    b.Node("Flatten", [sq], ["y"], attributes: [Attr("axis", 2L)]);
                    return new(b.BuildModel(), [2, 3, 4]);
                }
            case "DropoutInference":
                {
                    b = G(3, 4);
                    var h = b.Node("MatMul", ["x", b.Initializer("w", [4, 4], R(16))]);
                    b.Node("Dropout", [h], ["y"]);
                    return new(b.BuildModel(), [3, 4]);
                }
            case "ClipHardSigmoidPowReduce":
                {
                    b = G(2, 3, 4);
                    var h = b.Node("Mul", ["x", b.Initializer("k", [4], R(4, 2f))]);
                    var c = b.Node("Clip", [h, b.Initializer("lo", [], [-0.5f]), b.Initializer("hi", [], [0.6f])]);
                    var hs = b.Node("HardSigmoid", [h], attributes: [Attr("alpha", 0.3f), Attr("beta", 0.4f)]);
                    var p = b.Node("Pow", [b.Node("Add", [b.Node("Mul", [h, h]), b.Initializer("one", [], [1f])]), b.Initializer("e", [1], [1.5f])]);
                    var rm = b.Node("ReduceMean", [b.Node("Add", [b.Node("Add", [c, hs]), p])], attributes: [Attr("axes", new long[] { 1 })]);
                    var rs = b.Node("ReduceSum", [h, b.InitializerInt64("axes", [1], [1])], attributes: [Attr("keepdims", 0L)]);
                    b.Node("Add", [rm, b.Node("Unsqueeze", [rs, b.InitializerInt64("ax1", [1], [1])])], ["y"]);
                    return new(b.BuildModel(), [2, 3, 4], Epsilon: 1e-3f);
                }
            case "ClipOpset9":
                {
                    b = new GraphBuilder(name, opset: 9).Input("x", DT.Float, 3, 4).Output("y", DT.Float);
                    var h = b.Node("Mul", ["x", b.Initializer("k", [4], R(4, 2f))]);
                    var c = b.Node("Clip", [h], attributes: [Attr("min", -0.4f), Attr("max", 0.7f)]);
                    b.Node("Slice", [c], ["y"], attributes: [Attr("starts", new long[] { 1, 0 }), Attr("ends", new long[] { 3, -1 }), Attr("axes", new long[] { 0, 1 })]);
                    return new(b.BuildModel(), [3, 4], Epsilon: 1e-3f);
                }
            case "SliceSteps":
                {
                    b = G(4, 6);
                    var h = b.Node("Mul", ["x", b.Initializer("k", [6], R(6))]);
                    b.Node("Slice", [h, b.InitializerInt64("st", [2], [-1, 5]), b.InitializerInt64("en", [2], [-100, 0]), b.InitializerInt64("ax", [2], [0, 1]), b.InitializerInt64("sp", [2], [-2, -2])], ["y"]);
                    return new(b.BuildModel(), [4, 6]);
                }
            case "GatherEmbedding":
                {
                    b = G(2, 3, 5);
                    var e = b.Node("Gather", [b.Initializer("table", [7, 5], R(35)), b.InitializerInt64("ids", [2, 3], [1, 4, 6, -1, 0, 4])]);
                    var r = b.Node("Range", [b.InitializerInt64("r0", [], [0]), b.InitializerInt64("r1", [], [3]), b.InitializerInt64("r2", [], [1])]);
                    var pos = b.Node("Gather", [b.Initializer("positions", [4, 5], R(20)), r]);
                    b.Node("Mul", [b.Node("Add", [e, pos]), "x"], ["y"]);
                    return new(b.BuildModel(), [2, 3, 5]);
                }
            case "MatMulBroadcastBatch":
                {
                    // B shared across the first batch dimension, then A shared across it (gradients summed over the sharing)
                    b = G(2, 3, 4, 5);
                    var h = b.Node("MatMul", ["x", b.Initializer("wb", [3, 5, 2], R(30))]);
                    b.Node("MatMul", [b.Initializer("wa", [3, 4, 4], R(48)), h], ["y"]);
                    return new(b.BuildModel(), [2, 3, 4, 5]);
                }
            case "AttentionBlock":
                {
                    // a pre-LN transformer block as PyTorch exports it: heads by Reshape/Transpose, 4-D batched MatMul,
                    // the causal mask an initializer sliced to the sequence, Softmax over the last axis, Erf-GELU FFN
                    b = G(2, 5, 8);
                    var ln = b.Node("LayerNormalization", ["x", b.Initializer("ln1.w", [8], R(8)), b.Initializer("ln1.b", [8], R(8))], attributes: [Attr("epsilon", 1e-5f)]);
                    string Proj(string n, string src) => b.Node("Add", [b.Node("MatMul", [src, b.Initializer(n + ".w", [8, 8], R(64, 0.6f))]), b.Initializer(n + ".b", [8], R(8))]);
                    var heads = b.InitializerInt64("heads", [4], [2, 5, 2, 4]);
                    var q = b.Node("Transpose", [b.Node("Reshape", [Proj("q", ln), heads])], attributes: [Attr("perm", new long[] { 0, 2, 1, 3 })]);
                    var k = b.Node("Transpose", [b.Node("Reshape", [Proj("k", ln), heads])], attributes: [Attr("perm", new long[] { 0, 2, 3, 1 })]);
                    var v = b.Node("Transpose", [b.Node("Reshape", [Proj("v", ln), heads])], attributes: [Attr("perm", new long[] { 0, 2, 1, 3 })]);
                    var mask = new float[64];
                    for (int i = 0; i < 8; i++) for (int j = i + 1; j < 8; j++) mask[i * 8 + j] = -10000f;
                    var sliced = b.Node("Slice", [b.Initializer("mask", [8, 8], mask), b.InitializerInt64("s0", [2], [0, 0]), b.InitializerInt64("s1", [2], [5, 5])]);
                    var scores = b.Node("Add", [b.Node("Div", [b.Node("MatMul", [q, k]), b.Initializer("scale", [], [2f])]), sliced]);
                    var att = b.Node("MatMul", [b.Node("Softmax", [scores], attributes: [Attr("axis", -1L)]), v]);
                    var merged = b.Node("Reshape", [b.Node("Transpose", [att], attributes: [Attr("perm", new long[] { 0, 2, 1, 3 })]), b.InitializerInt64("merge", [3], [2, 5, 8])]);
                    var h = b.Node("Add", ["x", Proj("o", merged)]);
                    var ln2 = b.Node("LayerNormalization", [h, b.Initializer("ln2.w", [8], R(8)), b.Initializer("ln2.b", [8], R(8))], attributes: [Attr("epsilon", 1e-5f)]);
                    var up = b.Node("Add", [b.Node("MatMul", [ln2, b.Initializer("up.w", [8, 16], R(128, 0.6f))]), b.Initializer("up.b", [16], R(16))]);
                    var erf = b.Node("Erf", [b.Node("Div", [up, b.Initializer("sqrt2", [], [1.41421356f])])]);
                    var gelu = b.Node("Mul", [b.Node("Mul", [up, b.Node("Add", [erf, b.Initializer("one", [], [1f])])]), b.Initializer("half", [], [0.5f])]);
                    b.Node("Add", [h, b.Node("MatMul", [gelu, b.Initializer("down.w", [16, 8], R(128, 0.4f))])], ["y"]);
                    return new(b.BuildModel(), [2, 5, 8]);
                }
            case "WhereTriluExpandMask":
                {
                    // a boolean causal mask built in the graph (Trilu, Cast to bool, Equal/Not/And) chooses between the
                    // scores and a large negative value with Where; Expand broadcasts a weight row
                    b = G(2, 3, 4, 4);
                    var w = b.Node("Expand", [b.Initializer("w", [4], R(4, 2f)), b.InitializerInt64("shape", [2], [4, 4])]);
                    var scores = b.Node("Mul", ["x", w]);
                    var tri = b.Node("Trilu", [b.Initializer("ones", [4, 4], Enumerable.Repeat(1f, 16).ToArray())], attributes: [Attr("upper", 0L)]);
                    var cond = b.Node("And", [b.Node("Cast", [tri], attributes: [Attr("to", (long)DT.Bool)]),
                        b.Node("Not", [b.Node("Equal", [tri, b.Initializer("zero", [], [0f])])])]);
                    var masked = b.Node("Where", [cond, scores, b.Initializer("neg", [], [-1e4f])]);
                    b.Node("Softmax", [masked], ["y"], attributes: [Attr("axis", -1L)]);
                    return new(b.BuildModel(), [2, 3, 4, 4]);
                }
            default: throw new ArgumentException(name);
        }
    }

    public static TheoryData<string> Cases => new()
    {
        "MatMul", "MatMulBatched", "Gemm", "GemmTransAB", "AddSubMulDivBroadcast", "Activations", "ErfGelu", "ErfAndSharedMatMul", "GeluOp", "Softmax",
        "ConvGroupsPadsStridesDilations", "Pools", "BatchNorm", "LayerNorm", "ShapeOps", "ClipHardSigmoidPowReduce", "ClipOpset9",
        "SliceSteps", "GatherEmbedding", "MatMulBroadcastBatch", "AttentionBlock", "WhereTriluExpandMask",
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardMatchesOnnxRuntimeAndGradientsMatchFiniteDifferences(string name) => GradientCheck.Run(name, Make(name));

    [Fact]
    public void AdditiveMaskInitializerIsAConstantNotAWeight()
    {
        var graph = TrainingGraph.Load(Make("AttentionBlock").Model);
        var mask = graph.Parameters.Single(p => p.Name == "mask");
        Assert.True(mask.IsMask);
        Assert.False(mask.Trainable);
        Assert.All(graph.Parameters.Where(p => p.Name != "mask"), p => Assert.False(p.IsMask));
        Assert.True(TrainingGraph.IsAdditiveMask([0f, float.NegativeInfinity, 0f, float.NegativeInfinity]));
        Assert.False(TrainingGraph.IsAdditiveMask([0f, -10000f, 0f, -9999f]));   // two different negatives
        Assert.False(TrainingGraph.IsAdditiveMask([0f, -5f, 0f, -5f]));           // not large enough to mask
        Assert.False(TrainingGraph.IsAdditiveMask([-10000f, -10000f, -10000f, -10000f]));
    }

    [Fact]
    public void PassesReuseTheirBuffersAndGiveTheSameResults()
    {
        var c = Make("AttentionBlock");
        var graph = TrainingGraph.Load(c.Model);
        var x = TestModels.RandomWeights(new Random(2), Tensor.Count(c.InputShape), 1f);
        var inputs = new Dictionary<string, Tensor> { ["x"] = Tensor.Float(c.InputShape, x) };
        float[] Step()
        {
            var y = graph.Forward(inputs, training: true)[0];
            graph.Backward(new Dictionary<string, Tensor> { ["y"] = Tensor.Float(y.Shape, Enumerable.Repeat(0.1f, y.Length).ToArray()) });
            return graph.Parameters.SelectMany(p => p.Grad).ToArray();
        }
        var first = Step();
        long workspace = graph.WorkspaceBytes;
        var second = Step();
        Assert.Equal(first, second);
        Assert.Equal(workspace, graph.WorkspaceBytes);   // the second pass took everything from the first one's buffers
        // the Erf-GELU chain and the MatMuls followed by a bias Add run fused; the batched attention products and the last projection (added to the residual) do not
        var timing = graph.TimingByOpType().ToDictionary(t => t.OpType);
        Assert.Equal(3, timing["MatMul"].Nodes);
        Assert.Equal(5, timing["MatMul+Add(fused)"].Nodes);
        Assert.Equal(1, timing["Gelu(fused Erf)"].Nodes);
        Assert.DoesNotContain("Erf", timing.Keys);
        Assert.True(timing["MatMul+Add(fused)"].ForwardSeconds > 0 && timing["MatMul+Add(fused)"].BackwardSeconds > 0);
    }

    [Fact]
    public void BatchNormTrainingUpdatesRunningStatisticsAndWritesThemBack()
    {
        var c = Make("BatchNorm");
        var graph = TrainingGraph.Load(c.Model);
        var mean = graph.Parameters.Single(p => p.Name == "mean");
        Assert.False(mean.Trainable);
        var before = (float[])mean.Value.Data.Clone();
        var x = TestModels.RandomWeights(new Random(3), Tensor.Count(c.InputShape), 1f).Select(v => v + 2f).ToArray();
        graph.Forward(new Dictionary<string, Tensor> { ["x"] = Tensor.Float(c.InputShape, x) }, training: true);
        Assert.All(mean.Value.Data.Zip(before), p => Assert.True(p.First > p.Second, "running mean moves toward the batch mean (about 2)"));
        var proto = c.Model.Proto.Clone();
        graph.WriteBack(proto);
        Assert.Equal(mean.Value.Data, TensorData.ToFloat(proto.Graph.Initializer.Single(t => t.Name == "mean")));
    }

    [Fact]
    public void DropoutIsIdentityInInferenceAndScaledMaskInTraining()
    {
        var c = Make("DropoutInference");
        var graph = TrainingGraph.Load(c.Model, new TrainingGraphOptions { Seed = 3 });
        var x = Enumerable.Repeat(1f, 12).ToArray();
        var w = graph.Parameters.Single().Value.Data;
        var inputs = new Dictionary<string, Tensor> { ["x"] = Tensor.Float([3, 4], x) };
        var eval = graph.Forward(inputs, false)[0].Data.ToArray();
        var train = graph.Forward(inputs, true)[0].Data;
        Assert.All(train.Zip(eval), p => Assert.True(p.First == 0f || Math.Abs(p.First - 2 * p.Second) < 1e-5));
        Assert.Contains(train, v => v == 0f);
    }

    [Fact]
    public void UnsupportedOpIsRefusedByName()
    {
        var b = new GraphBuilder("bad").Input("x", DT.Float, 2, 2).Output("y", DT.Float);
        b.Node("Einsum", ["x", "x"], ["y"], attributes: [Attr("equation", "ij,jk->ik")]);
        var e = Assert.Throws<EngineException>(() => TrainingGraph.Load(b.BuildModel()));
        Assert.Equal("TrainingOpUnsupported", e.ErrorId);
        Assert.Contains("Einsum", e.Message);
    }

    [Fact]
    public void FreezeKeepsNamedTensorsAndRejectsUnknownNames()
    {
        var model = TestModels.Mlp();
        var graph = TrainingGraph.Load(model, new TrainingGraphOptions { Freeze = ["fc0.weight"] });
        Assert.False(graph.Parameters.Single(p => p.Name == "fc0.weight").Trainable);
        Assert.True(graph.Parameters.Single(p => p.Name == "fc1.weight").Trainable);
        var e = Assert.Throws<EngineException>(() => TrainingGraph.Load(model, new TrainingGraphOptions { Freeze = ["nope"] }));
        Assert.Equal("FreezeTensorNotFound", e.ErrorId);
    }
}
