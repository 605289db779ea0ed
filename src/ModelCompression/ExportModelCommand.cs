using System.Management.Automation;
using ModelCompression.Native.Onnx;

namespace ModelCompression;

/// <summary>Writes models to ONNX files atomically, with their compression history in the metadata.</summary>
[Cmdlet(VerbsData.Export, "Model", DefaultParameterSetName = PathSet, SupportsShouldProcess = true)]
[OutputType(typeof(FileInfo), typeof(DirectoryInfo))]
public sealed class ExportModelCommand : ModelCmdletBase
{
    const string PathSet = "Path";
    const string DirectorySet = "Directory";

    [Parameter(Mandatory = true, ValueFromPipeline = true)]
    [ValidateNotNull]
    public Model? InputObject { get; set; }

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = PathSet)]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    [Parameter(Mandatory = true, ParameterSetName = DirectorySet)]
    [ValidateNotNullOrEmpty]
    public string Directory { get; set; } = "";

    [Parameter]
    public SwitchParameter Force { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    [Parameter]
    public SwitchParameter ExternalData { get; set; }

    protected override void ProcessRecord()
    {
        var model = InputObject!;
        // A model from an ONNX Runtime GenAI folder is written as such a folder by -Directory: the folder itself.
        var folder = ParameterSetName == DirectorySet ? model.Engine.Folder : null;
        string target = folder is not null ? ResolveOutputPath(Directory)
            : ParameterSetName == DirectorySet
            ? System.IO.Path.Combine(ResolveOutputPath(Directory), (model.OriginPath is null ? model.Name + ".onnx" : System.IO.Path.GetFileName(model.OriginPath)))
            : ResolveOutputPath(Path);
        if (!ShouldProcess(target, $"Export model '{model.Name}'")) return;

        TryInvoke(() =>
        {
            // -ExternalData: always; -ExternalData:$false: one file unless over 2 GB; neither: as the model came.
            bool? external = MyInvocation.BoundParameters.ContainsKey(nameof(ExternalData)) ? ExternalData.IsPresent : null;
            var options = new SaveOptions { ExternalData = external, Overwrite = Force };
            var result = folder is not null ? folder.Export(model.Engine, target, options, CancellationToken) : ModelIO.Save(model.Engine, target, options, CancellationToken);
            if (result.ExternalDataForced)
                WriteWarning($"Model '{model.Name}' is too large for a single protobuf file; its tensors were written to '{result.DataPath}'.");
            WriteVerbose($"Wrote '{result.ModelPath}'" + (result.DataPath is null ? "." : $" and '{result.DataPath}'."));
            // Through the provider, as Get-Item would: PSPath and the other provider properties, and the FileSystem view.
            if (PassThru) WriteObject(InvokeProvider.Item.Get([folder is null ? result.ModelPath : target], force: true, literalPath: true), enumerateCollection: true);
        }, target);
    }
}
