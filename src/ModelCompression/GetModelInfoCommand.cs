using System.Management.Automation;
using ModelCompression.Native.Onnx;

namespace ModelCompression;

/// <summary>Reports a model's size, parameters, types, operators, inputs and outputs, sparsity and history.</summary>
[Cmdlet(VerbsCommon.Get, "ModelInfo", DefaultParameterSetName = ModelSet)]
[OutputType(typeof(ModelInfo))]
public sealed class GetModelInfoCommand : ModelFileCmdletBase
{
    const string ModelSet = "Model";

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ModelSet, ValueFromPipeline = true)]
    [ValidateNotNull]
    public Model? InputObject { get; set; }

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
        foreach (string file in ResolvedFiles())
            TryInvoke(() => WriteObject(ModelInfo.From(new Model(LoadModel(file)), ScanWeights)), file);
    }
}
