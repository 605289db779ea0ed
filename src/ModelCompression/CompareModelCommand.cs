using ModelCompression.Native.Data;
using System.Collections;
using System.Management.Automation;
using ModelCompression.Native;
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
    public int BatchSize { get; set; } = 32;

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
    [ValidateRange(0.0, double.MaxValue)]
    public double? MaxPerplexityIncrease { get; set; }

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
        const string activity = "Comparing models";
        ModelComparison? comparison = null;
        bool ok = TryInvoke(() =>
        {
            var synthesis = InputShapeSpec.Apply(
                new SynthesisOptions { BatchSize = BatchSize, IntegerRange = InputArguments.Range(IntegerRange) },
                [reference.Engine, difference.Engine], InputArguments.Shapes(InputShape));
            var inputs = new InputSource { Data = InputArguments.Data(this, InputData, InputShape, IntegerRange), BatchSize = BatchSize, Synthesis = synthesis };
            var gates = new ComparisonGates
            {
                MinCosine = MinCosine, MaxAccuracyDrop = MaxAccuracyDrop, MinTop1Agreement = MinTop1Agreement, MaxPerplexityIncrease = MaxPerplexityIncrease,
                MinGenerationAgreement = MinGenerationAgreement,
            };
            comparison = ModelComparison.Run(reference.Engine, difference.Engine, inputs, gates, null,
                Progress(activity, $"{difference.Name} against {reference.Name}"), CancellationToken, GenerationRequest());
        }, difference);
        CompleteProgress(activity);
        if (!ok || comparison is null) return;
        var report = ModelComparisonReport.From(comparison, reference, difference);
        WriteObject(report);
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
