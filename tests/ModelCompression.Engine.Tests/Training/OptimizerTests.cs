using ModelCompression.Native;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Training;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests.Training;

public class OptimizerTests
{
    /// <summary>y = x·w with one trainable w[4,1]; loss = ½‖y − t‖² for a fixed target w*.</summary>
    static (TrainingGraph Graph, Func<double> Step) Regression(OptimizerSettings settings, int steps)
    {
        var b = new GraphBuilder("lin").Input("x", DT.Float, 8, 4).Output("y", DT.Float);
        b.Node("MatMul", ["x", b.Initializer("w", [4, 1], new float[4])], ["y"]);
        var graph = TrainingGraph.Load(b.BuildModel());
        var rng = new Random(1);
        var x = TestModels.RandomWeights(rng, 32, 1f);
        float[] target = [1f, -2f, 0.5f, 3f];
        var t = Enumerable.Range(0, 8).Select(r => Enumerable.Range(0, 4).Sum(j => x[r * 4 + j] * target[j])).ToArray();
        var opt = new Optimizer(settings, graph.Parameters, steps);
        var inputs = new Dictionary<string, Tensor> { ["x"] = Tensor.Float([8, 4], x) };
        return (graph, () =>
        {
            var y = graph.Forward(inputs, true)[0].Data;
            var g = y.Select((v, i) => v - t[i]).ToArray();
            graph.Backward(new Dictionary<string, Tensor> { ["y"] = Tensor.Float([8, 1], g) });
            opt.Step();
            return g.Sum(v => 0.5 * v * v);
        });
    }

    [Theory]
    [InlineData(OptimizerKind.Adam, 0.05, LearningRateSchedule.Constant)]
    [InlineData(OptimizerKind.Sgd, 0.02, LearningRateSchedule.Constant)]
    [InlineData(OptimizerKind.Adam, 0.1, LearningRateSchedule.Cosine)]
    public void OptimizersSolveALeastSquaresProblem(OptimizerKind kind, double lr, LearningRateSchedule schedule)
    {
        var (graph, step) = Regression(new OptimizerSettings { Kind = kind, LearningRate = lr, Schedule = schedule }, 600);
        double first = step(), last = first;
        for (int i = 1; i < 600; i++) last = step();
        Assert.True(last < 1e-3 * first, $"{kind}: loss {first} -> {last}");
        var w = graph.Parameters.Single().Value.Data;
        Assert.Equal([1f, -2f, 0.5f, 3f], w.Select(v => MathF.Round(v, 2)));
    }

    [Fact]
    public void CosineScheduleDecaysToZeroAndClippingBoundsTheStep()
    {
        var p = new TrainingParameter("w", Tensor.Float([2], [0f, 0f]), true);
        var opt = new Optimizer(new OptimizerSettings { Kind = OptimizerKind.Sgd, Momentum = 0, LearningRate = 1, ClipNorm = 0.5, Schedule = LearningRateSchedule.Cosine }, [p], 10);
        Assert.Equal(1, opt.CurrentLearningRate, 6);
        p.Grad[0] = 30; p.Grad[1] = 40;     // norm 50, clipped to 0.5
        opt.Step();
        Assert.Equal(50, opt.LastGradientNorm, 6);
        Assert.Equal(-0.3f, p.Value.Data[0], 5);
        Assert.Equal(-0.4f, p.Value.Data[1], 5);
        for (int i = 0; i < 9; i++) { Array.Clear(p.Grad); opt.Step(); }
        Assert.Equal(0, opt.CurrentLearningRate, 6);
    }

    [Fact]
    public void WeightDecayShrinksWeightsWithoutGradient()
    {
        var adam = new TrainingParameter("a", Tensor.Float([1], [2f]), true);
        var sgd = new TrainingParameter("s", Tensor.Float([1], [2f]), true);
        var o1 = new Optimizer(new OptimizerSettings { LearningRate = 0.1, WeightDecay = 0.5 }, [adam], 1);
        var o2 = new Optimizer(new OptimizerSettings { Kind = OptimizerKind.Sgd, Momentum = 0, LearningRate = 0.1, WeightDecay = 0.5 }, [sgd], 1);
        o1.Step(); o2.Step();
        Assert.Equal(2f * (1 - 0.05f), adam.Value.Data[0], 5);   // decoupled: w·(1 − lr·wd)
        Assert.Equal(2f - 0.1f * 0.5f * 2f, sgd.Value.Data[0], 5); // L2 in the gradient
    }

    [Fact]
    public void BadSettingsAreRefused()
    {
        Assert.Equal("LearningRateOutOfRange", Assert.Throws<EngineException>(() => new OptimizerSettings { LearningRate = 0 }.Validate()).ErrorId);
        Assert.Equal("MomentumOutOfRange", Assert.Throws<EngineException>(() => new OptimizerSettings { Momentum = 1 }.Validate()).ErrorId);
        Assert.Equal("WeightDecayOutOfRange", Assert.Throws<EngineException>(() => new OptimizerSettings { WeightDecay = -1 }.Validate()).ErrorId);
        Assert.Equal("ClipNormOutOfRange", Assert.Throws<EngineException>(() => new OptimizerSettings { ClipNorm = -1 }.Validate()).ErrorId);
    }
}
