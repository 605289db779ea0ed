using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;

namespace ModelCompression.Native.Runtime.Generation;

/// <summary>Where generation's prompts come from and how long they and their continuations are.</summary>
public sealed record GenerationSettings
{
    public int PromptLength { get; init; } = 128;
    public int NewTokens { get; init; } = 128;
    /// <summary>Token data (rows of token ids, e.g. an .npz with x [rows, sequence]); prompts are the first tokens of its rows. Null: random tokens.</summary>
    public DataSet? Data { get; init; }
    public GenerationEngine Engine { get; init; } = GenerationEngine.Auto;
    public SessionSettings Session { get; init; } = new();
    public int Seed { get; init; } = 1234;
}

/// <summary>Prompts for generation, the generators that continue them, and the checks both need.</summary>
public static class Prompts
{
    /// <summary><paramref name="count"/> prompts: the first tokens of the data's rows in order (cycling), or random tokens of the model's vocabulary.</summary>
    public static List<long[]> Make(OnnxModel model, GenerationSettings s, int count)
    {
        Check(model, s);
        var contract = DecoderContract.RequireGenerative(model, "generation");
        if (s.Data is { } data)
        {
            var rows = ModelInputs.Bind(model, data)[contract.Tokens.Name];
            if (rows.Shape.Length != 2 || rows.Shape[1] < s.PromptLength)
                throw new EngineException("GenerationPromptTooLong", EngineErrorKind.InvalidArgument,
                    $"Prompts of {s.PromptLength} tokens do not fit the rows of '{data.Source}' ([{string.Join(",", rows.Shape)}]); give a shorter prompt length.") { Target = data.Source };
            var ids = rows.AsInt64();
            long width = rows.Shape[1];
            return Enumerable.Range(0, count).Select(i => ids.AsSpan((int)(i % rows.Shape[0] * width), s.PromptLength).ToArray()).ToList();
        }
        long vocabulary = InputSynthesizer.VocabularySize(model, contract.Tokens.Name) ?? 100;
        var rng = new Random(s.Seed);
        return Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, s.PromptLength).Select(_ => rng.NextInt64(vocabulary)).ToArray()).ToList();
    }

    /// <summary>Lengths in range and within the model's context (its position table, or its GenAI folder's context_length).</summary>
    public static void Check(OnnxModel model, GenerationSettings s)
    {
        if (s.PromptLength < 1)
            throw new EngineException("GenerationPromptLengthOutOfRange", EngineErrorKind.InvalidArgument, $"A prompt has at least one token, not {s.PromptLength}.");
        if (s.NewTokens < 1)
            throw new EngineException("GenerationNewTokensOutOfRange", EngineErrorKind.InvalidArgument, $"Generation makes at least one new token, not {s.NewTokens}.");
        if (ContextLength(model) is { } context && s.PromptLength + (long)s.NewTokens > context)
            throw new EngineException("GenerationContextExceeded", EngineErrorKind.InvalidArgument,
                $"A prompt of {s.PromptLength} tokens and {s.NewTokens} new ones need {s.PromptLength + (long)s.NewTokens} positions; model '{model.Name}' has {context}.") { Target = model.SourcePath };
    }

    /// <summary>
    /// The positions the model can take: the rows of the table its positions index (a rotary cos cache or a position
    /// embedding), its GenAI folder's context_length when smaller; null when the model shows neither.
    /// </summary>
    public static long? ContextLength(OnnxModel model)
    {
        var graph = model.Proto.Graph;
        var tables = graph.Initializer.Where(t => t.Dims.Count == 2).ToDictionary(t => t.Name, t => t.Dims[0], StringComparer.Ordinal);
        long? context = null;
        foreach (var n in graph.Node)
        {
            // Decomposed exports gather the cos table by position_ids; GroupQueryAttention takes it as input 7.
            string? table = n.OpType == "Gather" && n.Input.Count == 2 && n.Input[1] == DecoderContract.PositionIdsName ? n.Input[0]
                : n.OpType == "GroupQueryAttention" && n.Input.Count > 7 ? n.Input[7] : null;
            if (table is not null && tables.TryGetValue(table, out long rows)) context = Math.Min(context ?? long.MaxValue, rows);
        }
        if ((model.Folder?.Config["model"] as System.Text.Json.Nodes.JsonObject)?["context_length"] is System.Text.Json.Nodes.JsonValue v && v.TryGetValue(out long declared))
            context = Math.Min(context ?? long.MaxValue, declared);
        return context;
    }

    /// <summary>The engine Auto stands for: GenAI when every model comes from a GenAI folder, else the module's own ONNX Runtime loop.</summary>
    public static GenerationEngine Resolve(IReadOnlyList<OnnxModel> models, GenerationEngine engine) =>
        engine != GenerationEngine.Auto ? engine : models.All(m => m.Folder is not null) ? GenerationEngine.GenAI : GenerationEngine.OnnxRuntime;

    /// <summary>
    /// The generators for <paramref name="models"/>, one engine for all so that they compare fairly (<see cref="Resolve"/>).
    /// </summary>
    public static (GenerationEngine Engine, List<IGreedyGenerator> Generators) Open(IReadOnlyList<OnnxModel> models, GenerationEngine engine, SessionSettings session)
    {
        engine = Resolve(models, engine);
        var generators = new List<IGreedyGenerator>();
        try
        {
            foreach (var m in models)
                generators.Add(engine == GenerationEngine.GenAI ? new GenAiGenerator(m, session) : new OrtGreedyGenerator(m, session));
        }
        catch
        {
            foreach (var g in generators) g.Dispose();
            throw;
        }
        return (engine, generators);
    }
}
