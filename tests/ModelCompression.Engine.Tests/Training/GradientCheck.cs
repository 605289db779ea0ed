using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Training;

namespace ModelCompression.Engine.Tests.Training;

/// <summary>A one-input graph ("x" in, "y" out) to check, with the finite-difference step and tolerance it needs.</summary>
public sealed record GradientCase(OnnxModel Model, int[] InputShape, float Epsilon = 1e-2f, double Tolerance = 2e-2);

/// <summary>
/// The training engine's forward pass against ONNX Runtime on the same graph, and its gradients (for the graph input
/// and every trainable initializer) against central finite differences of sum(output·R).
/// </summary>
public static class GradientCheck
{
    public static void Run(string name, GradientCase c)
    {
        var rng = new Random(7);
        var x = TestModels.RandomWeights(rng, Tensor.Count(c.InputShape), 1f);

        // 1. inference forward against ONNX Runtime
        var graph = TrainingGraph.Load(c.Model, new TrainingGraphOptions { InputGradients = true });
        var inputs = new Dictionary<string, Tensor> { ["x"] = Tensor.Float(c.InputShape, x) };
        var mine = graph.Forward(inputs, training: false)[0];
        using (var session = new ModelSession(c.Model))
        {
            var ort = session.Run(new Dictionary<string, NamedArray> { ["x"] = new("x", c.InputShape.Select(d => (long)d).ToArray(), x) })[0];
            Assert.Equal(ort.Shape.Select(d => (int)d), mine.Shape);
            var expected = ort.AsFloat();
            for (int i = 0; i < expected.Length; i++)
                Assert.True(Math.Abs(expected[i] - mine.Data[i]) <= 1e-4 * (1 + Math.Abs(expected[i])), $"{name} forward [{i}]: {mine.Data[i]} vs ONNX Runtime {expected[i]}");
        }

        // 2. gradients of L = sum(y * r) in training mode
        var y = graph.Forward(inputs, training: true)[0];
        var r = TestModels.RandomWeights(rng, y.Length, 1f);
        graph.Backward(new Dictionary<string, Tensor> { ["y"] = Tensor.Float(y.Shape, r) });
        double Loss()
        {
            var o = graph.Forward(inputs, training: true)[0];
            double s = 0;
            for (int i = 0; i < o.Length; i++) s += (double)o.Data[i] * r[i];
            return s;
        }
        var targets = new List<(string Name, float[] Values, float[] Grad)> { ("x", x, (float[])graph.InputGradient("x")!.Data.Clone()) };
        foreach (var p in graph.Parameters.Where(p => p.Trainable)) targets.Add((p.Name, p.Value.Data, (float[])p.Grad.Clone()));
        Assert.Contains(graph.Parameters, p => p.Trainable || name is "ShapeOps");
        int checkedCount = 0;
        foreach (var (tname, values, grad) in targets)
        {
            int step = Math.Max(1, values.Length / 12);
            for (int i = 0; i < values.Length; i += step)
            {
                float saved = values[i];
                float eps = c.Epsilon;
                values[i] = saved + eps; double up = Loss();
                values[i] = saved - eps; double down = Loss();
                values[i] = saved;
                double numeric = (up - down) / (2 * eps);
                Assert.True(Math.Abs(numeric - grad[i]) <= c.Tolerance * (1 + Math.Abs(numeric)),
                    $"{name}: d/d{tname}[{i}] analytic {grad[i]} vs numeric {numeric}");
                checkedCount++;
            }
        }
        Assert.True(checkedCount >= 5);
    }
}
