using System.Collections;
using System.Management.Automation;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Runtime;
using ModelCompression.Native.Runtime.Generation;

namespace ModelCompression;

/// <summary>
/// Runs a reference model and another model in ONNX Runtime on the same inputs and reports how far apart their
/// outputs are, with size and parameter ratios; missed gates become error records while the report is still written.
/// </summary>
[Cmdlet(VerbsData.Compare, "Model")]
[OutputType(typeof(ModelComparisonReport))]
public sealed class CompareModelCommand : ModelCmdletBase
{
    /// <summary>The view for comparisons that measured perplexity: both perplexities instead of accuracy.</summary>
    const string PerplexityView = "ModelCompression.ModelComparisonReport#Perplexity";
    const int DefaultBatchSize = 32;

    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNull]
    [ModelArgument]
    public Model? Reference { get; set; }

    [Parameter(Mandatory = true, Position = 1, ValueFromPipeline = true)]
    [ValidateNotNull]
    [ModelArgument]
    public Model? Difference { get; set; }

    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? InputData { get; set; }

    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int? BatchSize { get; set; }

    [Parameter]
    public Hashtable? InputShape { get; set; }

    [Parameter]
    [ValidateCount(2, 2)]
    public long[]? IntegerRange { get; set; }

    [Parameter]
    [ValidateRange(-1.0, 1.0)]
    public double? MinCosine { get; set; }

    [Parameter]
    [ValidateRange(0.0, 1.0)]
    public double? MaxAccuracyDrop { get; set; }

    [Parameter]
    [ValidateRange(0.0, 1.0)]
    public double? MinTop1Agreement { get; set; }

    [Parameter]
    [ValidateRange(0.0, 1.0)]
    public double? MaxPerplexityRise { get; set; }

    [Parameter]
    public SwitchParameter Generate { get; set; }

    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int? PromptLength { get; set; }

    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int? NewTokens { get; set; }

    [Parameter]
    [ValidateRange(1, int.MaxValue)]
    public int? Prompts { get; set; }

    [Parameter]
    [ValidateRange(0.0, 1.0)]
    public double? MinGenerationAgreement { get; set; }

    [Parameter]
    [ValidateSet("Auto", "OnnxRuntime", "GenAI")]
    public string? GenerationEngine { get; set; }

    protected override void ProcessRecord()
    {
        var reference = Reference!;
        var difference = Difference!;
        var progress = NewProgress("Comparing models");
        ModelComparison? comparison = null;
        bool ok = TryInvoke(() =>
        {
            var (data, synthesis) = InputArguments.Inputs(this, [reference.Engine, difference.Engine], InputData,
                BatchSize ?? DefaultBatchSize, BatchSize is not null, InputShape, IntegerRange);
            var inputs = new InputSource { Data = data, BatchSize = (int)synthesis.BatchSize, Synthesis = synthesis };
            var gates = new ComparisonGates
            {
                MinCosine = MinCosine, MaxAccuracyDrop = MaxAccuracyDrop, MinTop1Agreement = MinTop1Agreement, MaxPerplexityRise = MaxPerplexityRise,
                MinGenerationAgreement = MinGenerationAgreement,
            };
            comparison = ModelComparison.Run(reference.Engine, difference.Engine, inputs, gates, null,
                progress.Phase($"{difference.Name} against {reference.Name}"), CancellationToken, GenerationRequest());
        }, difference);
        progress.Complete();
        if (!ok || comparison is null) return;
        var report = ModelComparisonReport.From(comparison, reference, difference);
        var output = PSObject.AsPSObject(report);
        if (report.PerplexityRise is not null) output.TypeNames.Insert(0, PerplexityView);
        WriteObject(output);
        foreach (var gate in report.FailedGates)
            WriteError(new ErrorRecord(new ModelGateException(gate), gate.ErrorId, ErrorCategory.InvalidResult, report));
    }

    /// <summary>-Generate's comparison (by default 16 prompts of 64 tokens, 64 new tokens each); its options without -Generate are refused.</summary>
    GenerationComparisonRequest? GenerationRequest()
    {
        if (!Generate)
        {
            if (PromptLength is not null || NewTokens is not null || Prompts is not null || GenerationEngine is not null)
                throw new EngineException("GenerationParameterNotApplicable", EngineErrorKind.InvalidArgument,
                    "-PromptLength, -NewTokens, -Prompts and -GenerationEngine shape the generation comparison; add -Generate.");
            return null;
        }
        var settings = new GenerationSettings { PromptLength = PromptLength ?? 64, NewTokens = NewTokens ?? 64, Engine = Enum.Parse<GenerationEngine>(GenerationEngine ?? "Auto") };
        return new GenerationComparisonRequest(settings, Prompts ?? 16);
    }
}
