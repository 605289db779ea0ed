using System.Management.Automation;
using ModelCompression.Native;
using ModelCompression.Native.Onnx;

namespace ModelCompression;

/// <summary>Loads ONNX model files into Model objects.</summary>
[Cmdlet(VerbsCommon.Get, "Model", DefaultParameterSetName = PathSet)]
[OutputType(typeof(Model))]
public sealed class GetModelCommand : ModelCmdletBase
{
    const string PathSet = "Path";
    const string LiteralPathSet = "LiteralPath";

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = PathSet, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[] Path { get; set; } = [];

    [Parameter(Mandatory = true, ParameterSetName = LiteralPathSet, ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = [];

    protected override void ProcessRecord()
    {
        foreach (string file in PathResolution.Resolve(this, ParameterSetName == LiteralPathSet ? LiteralPath : Path, ParameterSetName == LiteralPathSet))
        {
            WriteVerbose($"Loading '{file}'.");
            TryInvoke(() => WriteObject(new Model(LoadModel(file))), file);
        }
    }
}

/// <summary>Turns -Path (wildcards) and -LiteralPath arguments into file-system paths; a pattern that matches nothing is an error.</summary>
static class PathResolution
{
    public static IEnumerable<string> Resolve(ModelCmdletBase cmdlet, string[] paths, bool literal)
    {
        foreach (string path in paths)
        {
            if (literal || !WildcardPattern.ContainsWildcardCharacters(path))
            {
                yield return cmdlet.SessionState.Path.GetUnresolvedProviderPathFromPSPath(path);
                continue;
            }
            List<string> matches = [];
            try
            {
                matches = cmdlet.SessionState.Path.GetResolvedProviderPathFromPSPath(path, out _).ToList();
            }
            catch (ItemNotFoundException) { }
            if (matches.Count == 0)
            {
                var e = new EngineException("ModelFileNotFound", EngineErrorKind.ObjectNotFound, $"No file matches '{path}'.");
                cmdlet.WriteError(new ErrorRecord(e, e.ErrorId, ErrorCategory.ObjectNotFound, path));
            }
            foreach (var m in matches) yield return m;
        }
    }
}
