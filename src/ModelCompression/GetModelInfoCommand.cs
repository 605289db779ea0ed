using System.Management.Automation;
using ModelCompression.Native.Onnx;

namespace ModelCompression;

/// <summary>Reports a model's size, parameters, types, operators, inputs and outputs, sparsity and history.</summary>
[Cmdlet(VerbsCommon.Get, "ModelInfo", DefaultParameterSetName = ModelSet)]
[OutputType(typeof(ModelInfo))]
public sealed class GetModelInfoCommand : ModelCmdletBase
{
    const string ModelSet = "Model";
    const string PathSet = "Path";
    const string LiteralPathSet = "LiteralPath";

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ModelSet, ValueFromPipeline = true)]
    [ValidateNotNull]
    public Model? InputObject { get; set; }

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = PathSet, ValueFromPipeline = true)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[] Path { get; set; } = [];

    [Parameter(Mandatory = true, ParameterSetName = LiteralPathSet, ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = [];

    /// <summary>Read every weight in external data to measure sparsity, however large (otherwise only up to 1 GB of them).</summary>
    [Parameter]
    public SwitchParameter ScanWeights { get; set; }

    protected override void ProcessRecord()
    {
        if (InputObject is not null)
        {
            TryInvoke(() => WriteObject(ModelInfo.From(InputObject, ScanWeights)), InputObject);
            return;
        }
        bool literal = ParameterSetName == LiteralPathSet;
        foreach (string file in PathResolution.Resolve(this, literal ? LiteralPath : Path, literal))
            TryInvoke(() => WriteObject(ModelInfo.From(new Model(LoadModel(file)), ScanWeights)), file);
    }
}
