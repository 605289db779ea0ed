using System.Management.Automation;

namespace ModelCompression;

/// <summary>
/// Cmdlets that read ONNX files named by -Path (wildcards, escapes) or -LiteralPath (PSPath from Get-ChildItem),
/// resolved the way PowerShell's own cmdlets resolve them.
/// </summary>
public abstract class ModelFileCmdletBase : ModelCmdletBase
{
    protected const string PathSet = "Path";
    protected const string LiteralPathSet = "LiteralPath";

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = PathSet, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[] Path { get; set; } = [];

    [Parameter(Mandatory = true, ParameterSetName = LiteralPathSet, ValueFromPipelineByPropertyName = true)]
    [Alias("PSPath", "LP")]
    [ValidateNotNullOrEmpty]
    public string[] LiteralPath { get; set; } = [];

    /// <summary>
    /// The file-system paths the arguments name. A path that names nothing is PowerShell's own error (PathNotFound,
    /// ObjectNotFound, "Cannot find path '...' because it does not exist."), for a pattern that matches nothing too,
    /// as Resolve-Path writes it; the other paths go on.
    /// </summary>
    protected IEnumerable<string> ResolvedFiles()
    {
        bool literal = ParameterSetName == LiteralPathSet;
        foreach (string path in literal ? LiteralPath : Path)
        {
            var files = Resolve(path, literal);
            if (files.Count == 0)
            {
                string full = SessionState.Path.GetUnresolvedProviderPathFromPSPath(path);
                var e = new ItemNotFoundException($"Cannot find path '{full}' because it does not exist.");
                WriteError(new ErrorRecord(e, "PathNotFound", ErrorCategory.ObjectNotFound, path));
            }
            foreach (string file in files) yield return file;
        }
    }

    List<string> Resolve(string path, bool literal)
    {
        if (literal)
        {
            string full = SessionState.Path.GetUnresolvedProviderPathFromPSPath(path);
            // A link that leads nowhere still exists: loading it explains what is wrong with it.
            bool exists = File.Exists(full) || Directory.Exists(full) || new FileInfo(full).LinkTarget is not null;
            return exists ? [full] : [];
        }
        try { return SessionState.Path.GetResolvedProviderPathFromPSPath(path, out _).ToList(); }
        catch (ItemNotFoundException) { return []; }
    }
}
