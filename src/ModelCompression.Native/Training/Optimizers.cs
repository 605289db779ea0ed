using System.Numerics.Tensors;

namespace ModelCompression.Native.Training;

public enum OptimizerKind { Adam, Sgd }

public enum LearningRateSchedule { Constant, Cosine }

/// <summary>How parameters move: Adam (decoupled weight decay, as AdamW) or SGD with momentum (L2 weight decay added to the gradient).</summary>
public sealed record OptimizerSettings
{
    public OptimizerKind Kind { get; init; } = OptimizerKind.Adam;
    public double LearningRate { get; init; } = 1e-3;
    public double Momentum { get; init; } = 0.9;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double Epsilon { get; init; } = 1e-8;
    public double WeightDecay { get; init; }
    public LearningRateSchedule Schedule { get; init; } = LearningRateSchedule.Constant;
    /// <summary>Clips the global L2 norm of all gradients to this value; 0 turns clipping off.</summary>
    public double ClipNorm { get; init; }

    public void Validate()
    {
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate))
            throw new EngineException("LearningRateOutOfRange", EngineErrorKind.InvalidArgument, $"The learning rate must be a positive number, not {LearningRate}.");
        if (Momentum < 0 || Momentum >= 1) throw new EngineException("MomentumOutOfRange", EngineErrorKind.InvalidArgument, $"Momentum must be in [0, 1), not {Momentum}.");
        if (WeightDecay < 0) throw new EngineException("WeightDecayOutOfRange", EngineErrorKind.InvalidArgument, $"Weight decay must not be negative ({WeightDecay}).");
        if (ClipNorm < 0) throw new EngineException("ClipNormOutOfRange", EngineErrorKind.InvalidArgument, $"The gradient clipping norm must not be negative ({ClipNorm}).");
    }
}

/// <summary>Applies one optimizer step to the trainable parameters from their gradients.</summary>
public sealed class Optimizer
{
    readonly OptimizerSettings settings;
    readonly List<TrainingParameter> parameters;
    readonly float[][] m, v;
    readonly long totalSteps;
    long step;
    float[] scratch = [];

    public Optimizer(OptimizerSettings settings, IEnumerable<TrainingParameter> parameters, long totalSteps)
    {
        settings.Validate();
        this.settings = settings;
        this.parameters = parameters.Where(p => p.Trainable).ToList();
        this.totalSteps = Math.Max(1, totalSteps);
        m = this.parameters.Select(p => new float[p.Value.Length]).ToArray();
        v = settings.Kind == OptimizerKind.Adam ? this.parameters.Select(p => new float[p.Value.Length]).ToArray() : [];
    }

    /// <summary>Learning rate for the current step.</summary>
    public double CurrentLearningRate => settings.Schedule == LearningRateSchedule.Cosine
        ? settings.LearningRate * 0.5 * (1 + Math.Cos(Math.PI * Math.Min(step, totalSteps) / totalSteps))
        : settings.LearningRate;

    /// <summary>Global gradient norm before clipping, of the last step.</summary>
    public double LastGradientNorm { get; private set; }

    public void Step()
    {
        double norm2 = 0;
        foreach (var p in parameters) norm2 += TensorPrimitives.SumOfSquares(p.Grad);
        LastGradientNorm = Math.Sqrt(norm2);
        float clip = settings.ClipNorm > 0 && LastGradientNorm > settings.ClipNorm ? (float)(settings.ClipNorm / LastGradientNorm) : 1f;
        float lr = (float)CurrentLearningRate;
        step++;
        for (int i = 0; i < parameters.Count; i++)
        {
            var w = parameters[i].Value.Data;
            var g = parameters[i].Grad;
            if (clip != 1f) TensorPrimitives.Multiply(g, clip, g);
            if (settings.Kind == OptimizerKind.Adam)
            {
                float b1 = (float)settings.Beta1, b2 = (float)settings.Beta2, eps = (float)settings.Epsilon;
                float c1 = 1f / (1f - MathF.Pow(b1, step)), c2 = 1f / (1f - MathF.Pow(b2, step));
                float decay = 1f - lr * (float)settings.WeightDecay;
                var mi = m[i]; var vi = v[i];
                var tmp = scratch.Length >= w.Length ? scratch.AsSpan(0, w.Length) : (scratch = new float[w.Length]).AsSpan();
                // m = b1·m + (1-b1)·g;  v = b2·v + (1-b2)·g²;  w = w·(1 - lr·wd) - lr·(m·c1) / (sqrt(v·c2) + eps)
                TensorPrimitives.Multiply(mi, b1, mi);
                TensorPrimitives.MultiplyAdd(g, 1 - b1, mi, mi);
                TensorPrimitives.Multiply(g, g, tmp);
                TensorPrimitives.Multiply(vi, b2, vi);
                TensorPrimitives.MultiplyAdd(tmp, 1 - b2, vi, vi);
                TensorPrimitives.Multiply(vi, c2, tmp);
                TensorPrimitives.Sqrt(tmp, tmp);
                TensorPrimitives.Add(tmp, eps, tmp);
                TensorPrimitives.Divide(mi, tmp, tmp);
                if (decay != 1f) TensorPrimitives.Multiply(w, decay, w);
                TensorPrimitives.MultiplyAdd(tmp, -lr * c1, w, w);
            }
            else
            {
                float mu = (float)settings.Momentum, wd = (float)settings.WeightDecay;
                var buf = m[i];
                if (wd != 0f) TensorPrimitives.MultiplyAdd(w, wd, g, g);
                // buf = mu*buf + g; w -= lr*buf
                TensorPrimitives.MultiplyAdd(buf, mu, g, buf);
                TensorPrimitives.MultiplyAdd(buf, -lr, w, w);
            }
        }
    }
}
