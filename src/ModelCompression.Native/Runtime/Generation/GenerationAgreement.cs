using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Runtime.Generation;

/// <summary>
/// How alike two language models generate: greedy continuations of the same prompts, compared token by token. What
/// users of compressed LLMs notice and perplexity hides: a different greedy token that sends the text elsewhere, or a
/// model that starts repeating itself.
/// </summary>
public sealed record GenerationAgreement
{
    public required string Engine { get; init; }
    public int Prompts { get; init; }
    public int PromptLength { get; init; }
    public int NewTokens { get; init; }
    public required string PromptSource { get; init; }
    /// <summary>The share of generated positions where both models chose the same token.</summary>
    public double TokenAgreement { get; init; }
    /// <summary>The mean position (0-based) of the first token that differs; <see cref="NewTokens"/> for identical continuations.</summary>
    public double MeanFirstDivergence { get; init; }
    /// <summary>Continuations identical in every token.</summary>
    public int IdenticalContinuations { get; init; }
    /// <summary>The share of 4-grams in a continuation that already occurred earlier in it (a looping model repeats itself), per model.</summary>
    public double ReferenceRepetition { get; init; }
    public double DifferenceRepetition { get; init; }

    /// <summary>Greedy continuations of <paramref name="count"/> prompts by both models, compared.</summary>
    public static GenerationAgreement Measure(OnnxModel reference, OnnxModel difference, GenerationSettings settings, int count,
        IProgress<double>? progress = null, CancellationToken cancel = default)
    {
        if (count < 1)
            throw new EngineException("GenerationPromptsOutOfRange", EngineErrorKind.InvalidArgument, $"Generation agreement needs at least one prompt, not {count}.");
        var prompts = Generation.Prompts.Make(reference, settings, count);
        Generation.Prompts.Check(difference, settings);
        var (engine, generators) = Generation.Prompts.Open([reference, difference], settings.Engine, settings.Session);
        try
        {
            long agree = 0;
            double divergence = 0, repeatA = 0, repeatB = 0;
            int identical = 0;
            for (int p = 0; p < prompts.Count; p++)
            {
                var a = generators[0].Generate(prompts[p], settings.NewTokens, cancel).Tokens;
                var b = generators[1].Generate(prompts[p], settings.NewTokens, cancel).Tokens;
                int first = settings.NewTokens;
                for (int i = 0; i < a.Length; i++)
                {
                    if (a[i] == b[i]) agree++;
                    else if (first == settings.NewTokens) first = i;
                }
                divergence += first;
                if (first == settings.NewTokens) identical++;
                repeatA += Repetition(a);
                repeatB += Repetition(b);
                progress?.Report((p + 1.0) / prompts.Count);
            }
            return new GenerationAgreement
            {
                Engine = engine.ToString(), Prompts = prompts.Count, PromptLength = settings.PromptLength, NewTokens = settings.NewTokens,
                PromptSource = settings.Data is null ? "Random tokens" : Path.GetFileName(settings.Data.Source),
                TokenAgreement = (double)agree / ((long)prompts.Count * settings.NewTokens),
                MeanFirstDivergence = divergence / prompts.Count,
                IdenticalContinuations = identical,
                ReferenceRepetition = repeatA / prompts.Count,
                DifferenceRepetition = repeatB / prompts.Count,
            };
        }
        finally
        {
            foreach (var g in generators) g.Dispose();
        }
    }

    /// <summary>The share of a sequence's 4-grams seen before in it.</summary>
    internal static double Repetition(long[] tokens)
    {
        const int N = 4;
        if (tokens.Length <= N) return 0;
        var seen = new HashSet<(long, long, long, long)>();
        int repeated = 0, total = 0;
        for (int i = 0; i + N <= tokens.Length; i++, total++)
            if (!seen.Add((tokens[i], tokens[i + 1], tokens[i + 2], tokens[i + 3]))) repeated++;
        return (double)repeated / total;
    }
}
