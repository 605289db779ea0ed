using System.Globalization;

namespace ModelCompression.Native.Quantization;

/// <summary>The figure an accuracy budget is stated in.</summary>
public enum BudgetMetric
{
    /// <summary>Perplexity rise over the float model, a fraction of its perplexity (language models; labels per position).</summary>
    PerplexityRise,
    /// <summary>The smallest output cosine against the float model (any model).</summary>
    Cosine,
    /// <summary>Accuracy drop from the float model, a fraction (labelled data: 0.01 is one percentage point).</summary>
    AccuracyDrop,
}

/// <summary>
/// How much accuracy a quantization may cost, measured on validation data against the float model (-MaxPerplexityRise,
/// -MinCosine, -MaxAccuracyDrop). Fractions, as Compare-Model's gates take them: 0.005 is half a percent of perplexity,
/// 0.01 one percentage point of accuracy.
/// </summary>
public sealed record QualityBudget(BudgetMetric Metric, double Value)
{
    public static QualityBudget MaxPerplexityRise(double fraction) => new(BudgetMetric.PerplexityRise, fraction);
    public static QualityBudget MinCosine(double cosine) => new(BudgetMetric.Cosine, cosine);
    public static QualityBudget MaxAccuracyDrop(double fraction) => new(BudgetMetric.AccuracyDrop, fraction);

    /// <summary>The cmdlet parameter that states this budget.</summary>
    public string ParameterName => Metric switch
    {
        BudgetMetric.PerplexityRise => "MaxPerplexityRise",
        BudgetMetric.Cosine => "MinCosine",
        _ => "MaxAccuracyDrop",
    };

    /// <summary>The budget as a cost that is 0 for the float model and grows with the damage (what the search adds up).</summary>
    public double CostLimit => Metric == BudgetMetric.Cosine ? 1 - Value : Value;

    /// <summary>A measured figure as such a cost.</summary>
    public double Cost(double figure) => Metric == BudgetMetric.Cosine ? 1 - figure : figure;

    /// <summary>Whether a measured figure meets the budget.</summary>
    public bool Met(double figure) => Metric == BudgetMetric.Cosine ? figure >= Value - 1e-12 : figure <= Value + 1e-12;

    /// <summary>A figure as the report writes it.</summary>
    public string Format(double figure) => Metric switch
    {
        BudgetMetric.PerplexityRise => string.Create(CultureInfo.InvariantCulture, $"perplexity {(figure >= 0 ? "+" : "")}{figure * 100:F3} %"),
        BudgetMetric.Cosine => string.Create(CultureInfo.InvariantCulture, $"cosine {figure:F5}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"accuracy drop {figure * 100:F2} points"),
    };

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"-{ParameterName} {Value}");

    public void Validate()
    {
        bool ok = Metric switch
        {
            BudgetMetric.Cosine => Value > 0 && Value <= 1,
            _ => Value >= 0 && Value <= 1,
        };
        if (!ok)
            throw new EngineException("QuantizationBudgetInvalid", EngineErrorKind.InvalidArgument, Metric switch
            {
                BudgetMetric.PerplexityRise => $"-MaxPerplexityRise is a fraction of the float model's perplexity from 0 to 1 (0.005 means half a percent), not {Value}.",
                BudgetMetric.Cosine => $"-MinCosine must be in (0, 1] (got {Value}).",
                _ => $"-MaxAccuracyDrop is a fraction from 0 to 1 (0.01 means one percentage point), not {Value}.",
            });
    }
}
