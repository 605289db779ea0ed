using System.Globalization;

namespace ModelCompression.Native.Quantization;

/// <summary>The figure an accuracy budget is stated in.</summary>
public enum BudgetMetric
{
    /// <summary>Perplexity increase over the float model, in percent (language models; labels per position).</summary>
    PerplexityIncrease,
    /// <summary>The smallest output cosine against the float model (any model).</summary>
    Cosine,
    /// <summary>Accuracy drop from the float model, in percentage points (labelled data).</summary>
    AccuracyDrop,
}

/// <summary>
/// How much accuracy a quantization may cost, measured on validation data against the float model (-MaxPerplexityIncrease,
/// -MinCosine, -MaxAccuracyDrop). Percentages as Compare-Model's gates take them: 0.5 is half a percent of perplexity,
/// 1 is one percentage point of accuracy.
/// </summary>
public sealed record QualityBudget(BudgetMetric Metric, double Value)
{
    public static QualityBudget MaxPerplexityIncrease(double percent) => new(BudgetMetric.PerplexityIncrease, percent);
    public static QualityBudget MinCosine(double cosine) => new(BudgetMetric.Cosine, cosine);
    public static QualityBudget MaxAccuracyDrop(double points) => new(BudgetMetric.AccuracyDrop, points);

    /// <summary>The cmdlet parameter that states this budget.</summary>
    public string ParameterName => Metric switch
    {
        BudgetMetric.PerplexityIncrease => "MaxPerplexityIncrease",
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
        BudgetMetric.PerplexityIncrease => string.Create(CultureInfo.InvariantCulture, $"perplexity {(figure >= 0 ? "+" : "")}{figure:F3} %"),
        BudgetMetric.Cosine => string.Create(CultureInfo.InvariantCulture, $"cosine {figure:F5}"),
        _ => string.Create(CultureInfo.InvariantCulture, $"accuracy drop {figure:F2} points"),
    };

    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"-{ParameterName} {Value}");

    public void Validate()
    {
        bool ok = Metric switch
        {
            BudgetMetric.PerplexityIncrease => Value >= 0 && double.IsFinite(Value),
            BudgetMetric.Cosine => Value > 0 && Value <= 1,
            _ => Value >= 0 && Value <= 100,
        };
        if (!ok)
            throw new EngineException("QuantizationBudgetInvalid", EngineErrorKind.InvalidArgument, Metric switch
            {
                BudgetMetric.PerplexityIncrease => $"-MaxPerplexityIncrease is a percentage of 0 or more (0.5 means half a percent), not {Value}.",
                BudgetMetric.Cosine => $"-MinCosine must be in (0, 1] (got {Value}).",
                _ => $"-MaxAccuracyDrop is in percentage points from 0 to 100 (1 means one point), not {Value}.",
            });
    }
}
