using System.Collections.ObjectModel;
using System.Globalization;
using System.Management.Automation;
using System.Management.Automation.Runspaces;

namespace ModelCompression.Module.Tests;

/// <summary>
/// A hosted PowerShell engine with the built module (out/ModelCompression) imported, as a user gets it.
/// The bare engine lacks the Utility/Management modules; the host's stand-ins for the few commands the
/// examples use are loaded too (BareEngineShims.ps1).
/// </summary>
public sealed class PowerShellHost : IDisposable
{
    public static readonly string RepoRoot = FindRepoRoot();
    public static readonly string ModulePath = Path.Combine(RepoRoot, "out", "ModelCompression", "ModelCompression.psd1");
    public static readonly string SharedRoot = Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared"));
    public static bool SharedAvailable => Directory.Exists(Path.Combine(SharedRoot, "models"));

    public PowerShellHost(string? location = null)
    {
        CultureInfo.CurrentUICulture = CultureInfo.GetCultureInfo("en-US");
        var iss = InitialSessionState.CreateDefault2();
        iss.ImportPSModule(ModulePath);
        Shell = PowerShell.Create(iss);
        Location = location ?? RepoRoot;
        Shell.Runspace.SessionStateProxy.Path.SetLocation(Location);
        Run(File.ReadAllText(Path.Combine(RepoRoot, "src", "ModelCompression.Host", "BareEngineShims.ps1")));
    }

    public PowerShell Shell { get; }
    public string Location { get; }

    /// <summary>Runs a script; returns its output. Streams (errors, warnings, progress) stay on <see cref="Streams"/> until the next call.</summary>
    public Collection<PSObject> Run(string script, IDictionary<string, object?>? variables = null)
    {
        Shell.Commands.Clear();
        Shell.Streams.ClearStreams();
        foreach (var (name, value) in variables ?? new Dictionary<string, object?>())
            Shell.Runspace.SessionStateProxy.SetVariable(name, value);
        Shell.AddScript(script);
        return Shell.Invoke();
    }

    public PSDataStreams Streams => Shell.Streams;

    public IEnumerable<string> ErrorIds => Streams.Error.Select(e => e.FullyQualifiedErrorId.Split(',')[0]);

    public void Dispose() => Shell.Dispose();

    static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "ModelCompression.psd1"))) return dir.FullName;
        throw new InvalidOperationException("Cannot find the repository root above " + AppContext.BaseDirectory);
    }
}

public sealed class SharedFactAttribute : FactAttribute
{
    public SharedFactAttribute() { if (!PowerShellHost.SharedAvailable) Skip = "../shared (models and data sets) is not beside the repository"; }
}

public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("mc-mod-").FullName;
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
}
