using System.Management.Automation;
using System.Runtime.Loader;

namespace ModelCompression.Module.Tests;

public class ModuleTests
{
    static readonly string WineModel = Path.Combine(PowerShellHost.RepoRoot, "models", "wine_mlp.onnx");

    [Fact]
    public void ManifestIsValidAndExportsExactlyTheCmdlets()
    {
        using var ps = new PowerShellHost();
        var manifest = ps.Run("Test-ModuleManifest $p", new Dictionary<string, object?> { ["p"] = PowerShellHost.ModulePath });
        Assert.Empty(ps.Streams.Error);
        var info = (PSModuleInfo)manifest.Single().BaseObject;
        Assert.Equal("Core", Assert.Single(info.CompatiblePSEditions));
        var exported = ps.Run("(Get-Module ModelCompression).ExportedCmdlets.Keys").Select(o => o.ToString()).Order().ToArray();
        Assert.Equal(info.ExportedCmdlets.Keys.Order().ToArray(), exported);
        Assert.Contains("Get-Model", exported);
        // The manifest's version and the assemblies' (Directory.Build.props) are one version; the history records it.
        var assembly = ps.Run("(Get-Module ModelCompression).ImplementingAssembly.GetName().Version").Single().BaseObject;
        Assert.Equal(info.Version, new Version(((Version)assembly).ToString(3)));
        foreach (var name in exported)
        {
            var output = ps.Run($"(Get-Command {name}).OutputType").ToList();
            Assert.True(output.Count > 0, $"{name} declares no [OutputType]");
        }
    }

    [Fact]
    public void GetModelReturnsAModelPerFile()
    {
        using var ps = new PowerShellHost();
        var models = ps.Run("Get-Model ./models/*.onnx");
        Assert.Empty(ps.Streams.Error);
        var model = Assert.Single(models);
        Assert.Equal("ModelCompression.Model", model.BaseObject.GetType().FullName);
        Assert.Equal("wine_mlp", model.Properties["Name"].Value);
        Assert.Equal(70147L, model.Properties["Parameters"].Value);
    }

    [Fact]
    public void LiteralPathBindsFromPSPathProperty()
    {
        using var ps = new PowerShellHost();
        var models = ps.Run("[pscustomobject]@{ PSPath = \"Microsoft.PowerShell.Core\\FileSystem::$p\" } | Get-Model",
            new Dictionary<string, object?> { ["p"] = WineModel });
        Assert.Empty(ps.Streams.Error);
        Assert.Single(models);
        Assert.Single(ps.Run("Get-ChildItem ./models/*.onnx | Get-Model | Get-ModelInfo"));
    }

    [Fact]
    public void BadFilesAreErrorsWithStableIdsAndTheOthersStillLoad()
    {
        using var tmp = new TempDir();
        File.WriteAllBytes(tmp.File("empty.onnx"), []);
        File.WriteAllBytes(tmp.File("image.onnx"), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]);
        var bytes = File.ReadAllBytes(WineModel);
        File.WriteAllBytes(tmp.File("cut.onnx"), bytes[..(bytes.Length / 3)]);
        Directory.CreateDirectory(tmp.File("folder.onnx"));
        using var ps = new PowerShellHost(tmp.Path);
        var models = ps.Run("'missing.onnx', 'folder.onnx', 'empty.onnx', 'image.onnx', 'cut.onnx', $good, 'nothing*.onnx' | Get-Model",
            new Dictionary<string, object?> { ["good"] = WineModel });
        Assert.Single(models);
        Assert.Equal(["ModelFileNotFound", "ModelPathIsDirectory", "ModelFileEmpty", "ModelFileNotOnnx", "ModelFileTruncated", "ModelFileNotFound"], ps.ErrorIds);
        var categories = ps.Streams.Error.Select(e => e.CategoryInfo.Category).ToArray();
        Assert.Equal([ErrorCategory.ObjectNotFound, ErrorCategory.InvalidArgument, ErrorCategory.InvalidData, ErrorCategory.InvalidData, ErrorCategory.InvalidData, ErrorCategory.ObjectNotFound], categories);
        Assert.All(ps.Streams.Error.Take(5), e => Assert.Contains(tmp.Path, e.Exception.Message));
    }

    [Fact]
    public void GetModelInfoDescribesTheModel()
    {
        using var ps = new PowerShellHost();
        var info = ps.Run("Get-Model ./models/wine_mlp.onnx | Get-ModelInfo").Single();
        Assert.Empty(ps.Streams.Error);
        Assert.Equal(70147L, info.Properties["Parameters"].Value);
        Assert.Equal(281293L, info.Properties["FileSize"].Value);
        Assert.Equal(8L, info.Properties["IrVersion"].Value);
        Assert.Equal("pytorch 1.13.0", info.Properties["Producer"].Value);
        var ops = (Dictionary<string, int>)info.Properties["Operators"].Value;
        Assert.Equal(3, ops["Gemm"]);
        Assert.Equal(2, ops["Relu"]);
        Assert.Equal("features: float32[batch,13]", info.Properties["InputText"].Value);
        Assert.Equal(0.0, info.Properties["Sparsity"].Value);
        // A path works too, and the result is the same object type.
        Assert.Equal("ModelCompression.ModelInfo", ps.Run("Get-ModelInfo ./models/wine_mlp.onnx").Single().BaseObject.GetType().FullName);
    }

    [Fact]
    public void ExportModelIsAtomicHonoursForceWhatIfAndPassThru()
    {
        using var tmp = new TempDir();
        using var ps = new PowerShellHost(tmp.Path);
        var vars = new Dictionary<string, object?> { ["src"] = WineModel };

        ps.Run("Get-Model $src | Export-Model ./a.onnx -WhatIf", vars);
        Assert.False(File.Exists(tmp.File("a.onnx")));

        var file = ps.Run("Get-Model $src | Export-Model ./a.onnx -PassThru", vars).Single();
        Assert.IsType<FileInfo>(file.BaseObject);
        Assert.Equal(new FileInfo(WineModel).Length, new FileInfo(tmp.File("a.onnx")).Length);

        File.WriteAllText(tmp.File("b.onnx"), "keep me");
        ps.Run("Get-Model $src | Export-Model ./b.onnx", vars);
        Assert.Equal(["ExportFileExists"], ps.ErrorIds);
        Assert.Equal(ErrorCategory.ResourceExists, ps.Streams.Error[0].CategoryInfo.Category);
        Assert.Equal("keep me", File.ReadAllText(tmp.File("b.onnx")));
        ps.Run("Get-Model $src | Export-Model ./b.onnx -Force", vars);
        Assert.Empty(ps.Streams.Error);
        Assert.Equal(new FileInfo(WineModel).Length, new FileInfo(tmp.File("b.onnx")).Length);

        Directory.CreateDirectory(tmp.File("dir"));
        ps.Run("Get-Model $src, ./a.onnx | Export-Model -Directory ./dir -ExternalData", vars);
        Assert.Empty(ps.Streams.Error);
        Assert.True(File.Exists(tmp.File("dir/wine_mlp.onnx.data")));
        Assert.True(File.Exists(tmp.File("dir/a.onnx")));

        ps.Run("Get-Model $src | Export-Model ./missing-folder/x.onnx", vars);
        Assert.Equal(["ExportDirectoryNotFound"], ps.ErrorIds);
        // Nothing half-written anywhere: only the files asked for.
        Assert.Empty(Directory.EnumerateFiles(tmp.Path, "*.tmp", SearchOption.AllDirectories));
        Assert.Equal(281293, new FileInfo(WineModel).Length); // the source is never touched
    }

    [Fact]
    public void ExternalDataModelsRoundTripThroughTheCmdlets()
    {
        using var tmp = new TempDir();
        using var ps = new PowerShellHost(tmp.Path);
        ps.Run("Get-Model $src | Export-Model ./ext.onnx -ExternalData; Get-Model ./ext.onnx | Export-Model ./back.onnx",
            new Dictionary<string, object?> { ["src"] = WineModel });
        Assert.Empty(ps.Streams.Error);
        Assert.True(new FileInfo(tmp.File("ext.onnx")).Length < 10_000);
        Assert.Equal(File.ReadAllBytes(tmp.File("back.onnx")).Length, new FileInfo(WineModel).Length);
    }

    /// <summary>
    /// Another Google.Protobuf (3.25.1, this test project's) is loaded in the default context first; the module's
    /// engine must still use its own (3.36.2) from Dependencies/, in its own load context.
    /// </summary>
    [Fact]
    public void EngineAndDependenciesLoadInTheModulesOwnContext()
    {
        var foreign = typeof(Google.Protobuf.ByteString).Assembly;
        Assert.Equal(new Version(3, 25, 1, 0), foreign.GetName().Version);
        using var tmp = new TempDir();
        using var ps = new PowerShellHost(tmp.Path);
        ps.Run("Get-Model $src | Export-Model ./copy.onnx; Get-Model ./copy.onnx | Get-ModelInfo", new Dictionary<string, object?> { ["src"] = WineModel });
        Assert.Empty(ps.Streams.Error);

        var context = AssemblyLoadContext.All.Single(c => c.Name == "ModelCompression");
        var names = context.Assemblies.Select(a => a.GetName()).ToList();
        Assert.Contains(names, n => n.Name == "ModelCompression.Native");
        Assert.Contains(names, n => n.Name == "Google.Protobuf" && n.Version!.Major == 3 && n.Version.Minor == 36);
        Assert.DoesNotContain(AssemblyLoadContext.Default.Assemblies, a => a.GetName().Name == "ModelCompression.Native");
    }
}
