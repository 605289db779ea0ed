using System.Management.Automation;

namespace ModelCompression;

/// <summary>Loads ONNX model files into Model objects.</summary>
[Cmdlet(VerbsCommon.Get, "Model", DefaultParameterSetName = PathSet)]
[OutputType(typeof(Model))]
public sealed class GetModelCommand : ModelFileCmdletBase
{
    protected override void ProcessRecord()
    {
        foreach (string file in ResolvedFiles())
        {
            WriteVerbose($"Loading '{file}'.");
            TryInvoke(() => WriteObject(new Model(LoadModel(file))), file);
        }
    }
}
