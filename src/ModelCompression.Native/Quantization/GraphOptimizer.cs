using Microsoft.ML.OnnxRuntime;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Native.Quantization;

/// <summary>
/// ONNX Runtime's own offline graph optimizations (Optimize-Model): the session optimizes the graph at the
/// requested level and writes it out (SessionOptions.OptimizedModelFilePath); the result becomes a new model.
/// Basic: constant folding, redundant node removal, Conv+BatchNormalization/Add/Mul folding (portable ONNX).
/// Extended/All add fusions into com.microsoft operators and layouts tied to the provider they were made for.
/// </summary>
public static class GraphOptimizer
{
    public const string StageName = "Optimize";

    public static OnnxModel Optimize(OnnxModel model, string level, string provider = "CPU", CancellationToken cancel = default)
    {
        var ortLevel = SessionSettings.OptimizationLevel(level);
        if (ortLevel == GraphOptimizationLevel.ORT_DISABLE_ALL)
            throw new EngineException("GraphOptimizationLevelInvalid", EngineErrorKind.InvalidArgument, "Optimization level None does nothing; use Basic, Extended or All.");
        string canonical = ortLevel switch
        {
            GraphOptimizationLevel.ORT_ENABLE_BASIC => "Basic",
            GraphOptimizationLevel.ORT_ENABLE_EXTENDED => "Extended",
            _ => "All",
        };
        cancel.ThrowIfCancellationRequested();
        string dir = ScratchFolder.CreateSubdirectory("optimize-");
        try
        {
            string output = Path.Combine(dir, "optimized.onnx");
            SessionOptions Options()
            {
                var options = new SessionSettings { Provider = provider }.Create();
                options.GraphOptimizationLevel = ortLevel;
                options.OptimizedModelFilePath = output;
                // A model over protobuf's 2 GB can only be written with its weights beside it.
                options.AddSessionConfigEntry("session.optimized_model_external_initializers_file_name", "optimized.onnx.data");
                options.AddSessionConfigEntry("session.optimized_model_external_initializers_min_size_in_bytes", "1048576");
                return options;
            }
            // ONNX Runtime optimizes while it loads, which it cannot be stopped from doing: Ctrl+C leaves it to finish alone.
            try { using var session = RuntimeModel.Open(model.Proto, model.Name, Options, cancel, model.LoadedFrom); }
            catch (OnnxRuntimeException e)
            {
                throw new EngineException("ModelSessionFailed", EngineErrorKind.InvalidData,
                    $"ONNX Runtime cannot load model '{model.Name}' to optimize it: {e.Message}", e) { Target = model.SourcePath };
            }
            cancel.ThrowIfCancellationRequested();
            // The loaded model alone holds the adopted data file its tensors point at, until the derived model does.
            var loaded = ModelIO.LoadAndAdopt(output, cancel);
            var optimized = loaded.Proto;
            var before = OpCounts(model.Proto.Graph);
            var result = model.Derive(StageName, new Dictionary<string, string> { ["Level"] = canonical, ["Provider"] = provider }, proto =>
            {
                proto.Graph = optimized.Graph;
                proto.OpsetImport.Clear();
                proto.OpsetImport.AddRange(optimized.OpsetImport);
                proto.IrVersion = Math.Max(proto.IrVersion, optimized.IrVersion);
                var after = OpCounts(proto.Graph);
                var report = new ModelReport { Stage = $"{StageName} ({canonical})" };
                foreach (var op in before.Keys.Union(after.Keys).Order(StringComparer.Ordinal))
                {
                    int b = before.GetValueOrDefault(op), a = after.GetValueOrDefault(op);
                    if (a != b) report.Entries.Add(new ReportEntry(op, op, a < b ? "Removed" : "Added", $"{b} → {a}"));
                }
                report.Metrics[ReportMetrics.NodesBefore] = model.Proto.Graph.Node.Count;
                report.Metrics[ReportMetrics.NodesAfter] = proto.Graph.Node.Count;
                if (canonical != "Basic")
                    report.Warnings.Add($"Level {canonical} output can contain ONNX Runtime operators and layouts specific to the {provider} provider it was optimized for; run it with that provider.");
                return report;
            });
            GC.KeepAlive(loaded);
            return result;
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    static Dictionary<string, int> OpCounts(GraphProto g) =>
        g.Node.GroupBy(n => n.Domain is "" or "ai.onnx" ? n.OpType : n.Domain + "." + n.OpType).ToDictionary(x => x.Key, x => x.Count(), StringComparer.Ordinal);
}
