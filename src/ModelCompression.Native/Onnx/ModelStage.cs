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

    /// <summary>Reads a history written by <see cref="Serialize"/>; a damaged entry yields an empty history, not a failed load.</summary>
    public static IReadOnlyList<ModelStage> Deserialize(string json)
    {
        try { return JsonSerializer.Deserialize<List<ModelStage>>(json, Json) ?? []; }
        catch (JsonException) { return []; }
    }
}
