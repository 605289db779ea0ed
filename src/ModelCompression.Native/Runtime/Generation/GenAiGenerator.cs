using System.Diagnostics;
using System.Text.Json.Nodes;
using ModelCompression.Native.Onnx;
using GenAI = Microsoft.ML.OnnxRuntimeGenAI;

namespace ModelCompression.Native.Runtime.Generation;

/// <summary>
/// Greedy decoding with ONNX Runtime GenAI, the runtime GenAI folders are deployed on. A model loaded from its folder
/// and unchanged runs from there; a compressed one is written to a temporary folder first (data files linked where the
/// file system allows), which is what Export-Model -Directory would write.
/// </summary>
public sealed class GenAiGenerator : IGreedyGenerator
{
    readonly GenAI.Model model;
    readonly string? temporary;
    readonly string name;

    public GenAiGenerator(OnnxModel source, SessionSettings? settings = null)
    {
        var folder = source.Folder ?? throw new EngineException("GenerationEngineNotApplicable", EngineErrorKind.InvalidArgument,
            $"Model '{source.Name}' was not loaded from an ONNX Runtime GenAI folder (one with {GenAiFolder.ConfigFileName}); generate with the OnnxRuntime engine.") { Target = source.SourcePath };
        DecoderContract.RequireGenerative(source, "greedy generation");
        ContribChecks.Check(source.Proto, source.Name);
        name = source.Name;
        string path = folder.Path;
        if (source.LoadedFrom is not { } file || !file.IsUnchanged())
        {
            temporary = Directory.CreateTempSubdirectory("mc-genai-").FullName;
            path = Path.Combine(temporary, "model");
            folder.Export(source, path, new SaveOptions { ExternalData = source.SerializedSize >= RuntimeModel.InMemoryLimit, LinkExternalFiles = true });
        }
        try
        {
            // ONNX Runtime's log at error level here too: the process's environment first (GenAI shares it), then the session.
            _ = OrtObjects.Environment;
            using var config = new GenAI.Config(path);
            config.ClearProviders();
            var sessionOptions = new JsonObject { ["log_severity_level"] = (int)OrtObjects.LogLevel };
            if (settings is { IntraOpThreads: > 0 } s) sessionOptions["intra_op_num_threads"] = s.IntraOpThreads;
            config.Overlay(new JsonObject { ["model"] = new JsonObject { ["decoder"] = new JsonObject { ["session_options"] = sessionOptions } } }.ToJsonString());
            model = new GenAI.Model(config);
        }
        catch (GenAI.OnnxRuntimeGenAIException e)
        {
            Dispose();
            throw new EngineException("GenAiModelFailed", EngineErrorKind.InvalidData, $"ONNX Runtime GenAI cannot load model '{name}': {e.Message}", e) { Target = folder.Path };
        }
    }

    public GenerationEngine Engine => GenerationEngine.GenAI;

    public GenerationRun Generate(long[] prompt, int newTokens, CancellationToken cancel = default)
    {
        var tokens = new long[newTokens];
        var steps = new double[newTokens];
        try
        {
            using var p = new GenAI.GeneratorParams(model);
            // Exactly newTokens: the end-of-text token does not stop a measurement early.
            p.SetSearchOption("max_length", prompt.Length + newTokens);
            p.SetSearchOption("min_length", prompt.Length + newTokens);
            p.SetSearchOption("do_sample", false);
            using var g = new GenAI.Generator(model, p);
            long start = Stopwatch.GetTimestamp();
            g.AppendTokens(Array.ConvertAll(prompt, t => checked((int)t)));
            for (int i = 0; i < newTokens && !g.IsDone(); i++)
            {
                cancel.ThrowIfCancellationRequested();
                g.GenerateNextToken();
                tokens[i] = g.GetNextTokens()[0];
                steps[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
                start = Stopwatch.GetTimestamp();
            }
        }
        catch (GenAI.OnnxRuntimeGenAIException e)
        {
            throw new EngineException("ModelRunFailed", EngineErrorKind.InvalidOperation, $"ONNX Runtime GenAI failed to generate with '{name}': {e.Message}", e);
        }
        return new GenerationRun(tokens, steps);
    }

    public void Dispose()
    {
        model?.Dispose();
        if (temporary is not null && Directory.Exists(temporary))
            try { Directory.Delete(temporary, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
