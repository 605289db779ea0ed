using System.Management.Automation;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Quantization;

namespace ModelCompression;

/// <summary>Applies ONNX Runtime's offline graph optimizations and returns the optimized graph as a new model.</summary>
[Cmdlet(VerbsCommon.Optimize, "Model")]
[OutputType(typeof(Model))]
public sealed class OptimizeModelCommand : ModelCmdletBase
{
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    [ValidateNotNull]
    [ModelArgument]
    public Model? InputObject { get; set; }

    [Parameter]
    [ValidateSet("Basic", "Extended", "All")]
    public string Level { get; set; } = "Basic";

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string ExecutionProvider { get; set; } = "CPU";

    protected override void ProcessRecord()
    {
        var model = InputObject!;
        var progress = NewProgress("Optimizing");
        TryInvoke(() =>
        {
            progress.Report($"{model.Name} ({Level})", 0);
            var result = GraphOptimizer.Optimize(model.Engine, Level, ExecutionProvider, CancellationToken);
            progress.Complete();
            WriteStageReport(model, result.Report!);
            WriteVerbose($"'{model.Name}': {result.Report!.Metrics[ReportMetrics.NodesBefore]} → {result.Report.Metrics[ReportMetrics.NodesAfter]} nodes.");
            WriteObject(new Model(result, model));
        }, model);
    }
}
