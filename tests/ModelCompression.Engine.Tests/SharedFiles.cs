namespace ModelCompression.Engine.Tests;

/// <summary>Locates ../shared (models and data sets) beside the repository; tests that need it skip when it is absent.</summary>
public static class SharedFiles
{
    public static readonly string RepoRoot = FindRepoRoot();
    public static readonly string Root = Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared"));
    public static bool Available => Directory.Exists(Path.Combine(Root, "models"));
    public const string SkipReason = "../shared (models and data sets) is not beside the repository";

    public static string Model(string name) => Path.Combine(Root, "models", name);
    public static string Data(string name) => Path.Combine(Root, "data", name);

    public static IEnumerable<string> Models => Available
        ? Directory.EnumerateFiles(Path.Combine(Root, "models"), "*.onnx").Order(StringComparer.Ordinal)
        : [];

    static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "ModelCompression.psd1"))) return dir.FullName;
        throw new InvalidOperationException("Cannot find the repository root (ModelCompression.psd1) above " + AppContext.BaseDirectory);
    }
}

/// <summary>A fact that needs ../shared; skipped with the reason when it is not there.</summary>
public sealed class SharedFactAttribute : FactAttribute
{
    public SharedFactAttribute() { if (!SharedFiles.Available) Skip = SharedFiles.SkipReason; }
}

public sealed class SharedTheoryAttribute : TheoryAttribute
{
    public SharedTheoryAttribute() { if (!SharedFiles.Available) Skip = SharedFiles.SkipReason; }
}

/// <summary>A fact about Unix files (FIFOs, devices, links, locks); skipped with the reason elsewhere.</summary>
public sealed class UnixFactAttribute : FactAttribute
{
    public UnixFactAttribute(string needs = "Unix FIFOs, devices and links") { if (OperatingSystem.IsWindows()) Skip = "needs " + needs; }
}

public sealed class UnixTheoryAttribute : TheoryAttribute
{
    public UnixTheoryAttribute() { if (OperatingSystem.IsWindows()) Skip = "needs Unix FIFOs, devices and links"; }
}

/// <summary>A temporary folder deleted at the end of a test.</summary>
public sealed class TempDir : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("mc-test-").FullName;
    public string File(string name) => System.IO.Path.Combine(Path, name);
    public void Dispose() { try { Directory.Delete(Path, true); } catch (IOException) { } }
}
