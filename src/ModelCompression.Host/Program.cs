// mc-host: runs examples/quickstart.ps1 (or a given script or -Command) in a hosted PowerShell engine with
// out/ModelCompression imported, and prints the output objects as PowerShell would format them.
using System.Collections.ObjectModel;
using System.Management.Automation;
using System.Management.Automation.Runspaces;

string root = FindRepoRoot();
string module = Path.Combine(root, "out", "ModelCompression", "ModelCompression.psd1");
if (!File.Exists(module))
{
    Console.Error.WriteLine($"The module is not built: {module} is missing. Run 'dotnet build' at the repository root.");
    return 2;
}

string script;
if (args.Length >= 2 && args[0].Equals("-Command", StringComparison.OrdinalIgnoreCase)) script = string.Join(' ', args[1..]);
else
{
    string file = Path.GetFullPath(args.Length > 0 ? args[0] : Path.Combine(root, "examples", "quickstart.ps1"));
    if (!File.Exists(file)) { Console.Error.WriteLine($"Script '{file}' does not exist."); return 2; }
    script = $". '{file.Replace("'", "''")}'";
}

var iss = InitialSessionState.CreateDefault2();
iss.ImportPSModule(module);
using var ps = PowerShell.Create(iss);
ps.Runspace.SessionStateProxy.Path.SetLocation(root);
ps.AddScript(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "BareEngineShims.ps1"))).AddStatement();
ps.AddScript(script);
ps.Streams.Warning.DataAdded += (s, e) => Console.Error.WriteLine("WARNING: " + ((PSDataCollection<WarningRecord>)s!)[e.Index].Message);
ps.Streams.Verbose.DataAdded += (s, e) => Console.Error.WriteLine("VERBOSE: " + ((PSDataCollection<VerboseRecord>)s!)[e.Index].Message);
ps.Streams.Information.DataAdded += (s, e) => Console.WriteLine(((PSDataCollection<InformationRecord>)s!)[e.Index].MessageData);
Console.CancelKeyPress += (_, e) => { e.Cancel = true; ps.BeginStop(null, null); };

Collection<PSObject> output;
try { output = ps.Invoke(); }
catch (RuntimeException e)
{
    Console.Error.WriteLine($"ERROR: {e.ErrorRecord?.FullyQualifiedErrorId}: {e.Message}");
    return 1;
}
foreach (var item in output) Print(item);
foreach (var error in ps.Streams.Error) Console.Error.WriteLine($"ERROR: {error.FullyQualifiedErrorId}: {error}");
return ps.HadErrors ? 1 : 0;

// Objects print as "Name : Value" lists (like Format-List); the bare engine has no formatting cmdlets.
static void Print(PSObject item)
{
    object value = item.BaseObject;
    if (value is string or ValueType) { Console.WriteLine(value); return; }
    var props = item.Properties.Where(p => p.IsGettable).ToList();
    int width = props.Count == 0 ? 0 : props.Max(p => p.Name.Length);
    foreach (var p in props)
    {
        object? v;
        try { v = p.Value; } catch (GetValueException) { continue; }
        Console.WriteLine($"{p.Name.PadRight(width)} : {Show(v)}");
    }
    Console.WriteLine();
}

static string Show(object? v) => v switch
{
    null => "",
    string s => s,
    System.Collections.IDictionary d => string.Join(", ", d.Keys.Cast<object>().Select(k => $"{k}={d[k]}")),
    System.Collections.IEnumerable e => string.Join("; ", e.Cast<object>()),
    _ => v.ToString() ?? "",
};

static string FindRepoRoot()
{
    foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "ModelCompression.psd1"))) return dir.FullName;
    throw new InvalidOperationException("Run mc-host inside the ModelCompression repository.");
}
