using System.Text.Json;
using System.Text.Json.Serialization;

namespace ModelCompression.Native.Onnx;

/// <summary>One compression stage applied to a model: what ran, with which parameters, and what it changed.</summary>
public sealed record ModelStage(
    string Name,
    IReadOnlyDictionary<string, string> Parameters,
    long SizeBefore,
    long SizeAfter,
    double Seconds,
    DateTimeOffset Timestamp,
    string Tool)
{
    /// <summary>The key under which the history travels in the model's metadata_props.</summary>
    public const string MetadataKey = "model_compression.history";

    private static readonly JsonSerializerOptions Json = new() { DefaultIgnoreCondition = JsonIgnoreCondition.Never };

    public static string Serialize(IReadOnlyList<ModelStage> stages) => JsonSerializer.Serialize(stages, Json);

    /// <summary>Reads a history written by <see cref="Serialize"/>; false (and an empty history) when it is damaged.</summary>
    public static bool TryDeserialize(string json, out IReadOnlyList<ModelStage> history)
    {
        history = [];
        List<ModelStage?>? stages;
        try { stages = JsonSerializer.Deserialize<List<ModelStage?>>(json, Json); }
        catch (JsonException) { return false; }
        if (stages is null || stages.Any(s => s is null || s.Name is null || s.Parameters is null || s.Tool is null || s.Parameters.Values.Any(v => v is null)))
            return false;
        history = [.. stages.Select(s => s!)];
        return true;
    }
}
