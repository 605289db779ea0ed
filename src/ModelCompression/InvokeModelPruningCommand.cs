using System.Management.Automation;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Pruning;

namespace ModelCompression;

/// <summary>
/// Prunes MatMul/Gemm/Conv weights: unstructured (-Rate, per layer or -Scope Global), N:M semi-structured (-Pattern),
/// or structured (-Structured: whole channels, attention heads and hidden-size channels removed and the graph
/// rewritten so the model is smaller and faster; -RemoveBlocks/-RemoveBlockName remove whole residual blocks).
/// </summary>
[Cmdlet(VerbsLifecycle.Invoke, "ModelPruning", DefaultParameterSetName = RateSet)]
[OutputType(typeof(Model))]
public sealed class InvokeModelPruningCommand : ModelCmdletBase
{
    const string RateSet = "Rate";
    const string PatternSet = "Pattern";
    const string Activity = "Pruning model";

    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true)]
    [ValidateNotNull]
    [ModelArgument]
    public Model? InputObject { get; set; }

    [Parameter(ParameterSetName = RateSet)]
    public double? Rate { get; set; }

    [Parameter(ParameterSetName = RateSet)]
    [ValidateSet("Layer", "Global", IgnoreCase = true)]
    public string Scope { get; set; } = "Layer";

    [Parameter(ParameterSetName = RateSet)]
    public SwitchParameter Structured { get; set; }

    [Parameter(ParameterSetName = RateSet)]
    [ValidateSet("Heads", "KeyValueHeads", "Hidden", "Ffn", IgnoreCase = true)]
    public string[] Target { get; set; } = [];

    [Parameter(ParameterSetName = RateSet)]
    public double? HeadRate { get; set; }

    [Parameter(ParameterSetName = RateSet)]
    public double? KeyValueHeadRate { get; set; }

    [Parameter(ParameterSetName = RateSet)]
    public double? HiddenRate { get; set; }

    [Parameter(ParameterSetName = RateSet)]
    public double? FfnRate { get; set; }

    [Parameter(ParameterSetName = RateSet)]
    public int? RemoveBlocks { get; set; }

    [Parameter(ParameterSetName = RateSet)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[] RemoveBlockName { get; set; } = [];

    [Parameter(Mandatory = true, ParameterSetName = PatternSet)]
    [ValidateNotNullOrEmpty]
    public string Pattern { get; set; } = "";

    [Parameter]
    [ValidateSet("Magnitude", "Random", "Activation", IgnoreCase = true)]
    public string Criterion { get; set; } = "Magnitude";

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? CalibrationData { get; set; }

    [Parameter]
    [ValidateSet("MatMul", "Gemm", "Conv", IgnoreCase = true)]
    public string[] OpType { get; set; } = [];

    [Parameter]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[] ExcludeNode { get; set; } = [];

    [Parameter]
    [ValidateRange(0, long.MaxValue)]
    public long MinElements { get; set; } = PruningOptions.DefaultMinElements;

    [Parameter]
    public int Seed { get; set; }

    PruningOptions? options;

    protected override void BeginProcessing()
    {
        // Everything about the options is checked once, before any model: a bad option stops the command.
        options = InvokeOrTerminate(() =>
        {
            DataSet? data = CalibrationData is null ? null : DataSet.Load(ResolveOutputPath(CalibrationData));
            var o = new PruningOptions
            {
                Rate = Rate,
                Pattern = ParameterSetName == PatternSet ? SparsityPattern.Parse(Pattern) : null,
                Scope = Enum.Parse<PruningScope>(Scope, ignoreCase: true),
                Structured = Structured,
                Targets = Target.Select(t => Enum.Parse<PrunedPart>(t, ignoreCase: true)).ToList(),
                HeadRate = HeadRate,
                KeyValueHeadRate = KeyValueHeadRate,
                HiddenRate = HiddenRate,
                FfnRate = FfnRate,
                RemoveBlocks = RemoveBlocks,
                RemoveBlockNames = RemoveBlockName,
                Criterion = Enum.Parse<PruningCriterion>(Criterion, ignoreCase: true),
                CalibrationData = data,
                OpTypes = OpType,
                ExcludeNodes = ExcludeNode,
                MinElements = MinElements,
                Seed = MyInvocation.BoundParameters.ContainsKey(nameof(Seed)) ? Seed : null,
            };
            o.Validate();
            return o;
        }, CalibrationData);
    }

    protected override void ProcessRecord()
    {
        var model = InputObject!;
        var progress = Progress(Activity, $"{options!.Method} pruning of '{model.Name}'");
        TryInvoke(() =>
        {
            var pruned = ModelPruner.Prune(model.Engine, options, progress, CancellationToken);
            var report = pruned.Report!;
            foreach (var note in report.Notes) WriteVerbose(note);
            int skipped = report.Entries.Count(e => e.Action == "Skipped");
            if (skipped > 0)
                WriteWarning($"Model '{model.Name}': {skipped} layer(s) were left unpruned; their reasons are in the output's Report.Entries.");
            WriteObject(new Model(pruned, model));
        }, model);
        CompleteProgress(Activity);
    }
}
