using ModelCompression.Native;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;

namespace ModelCompression.Engine.Tests;

/// <summary>
/// Temporary files name their owner (process id and start time) and are locked by it; what a killed run left is removed
/// by the next run that could have made it, never what a live process holds; two exports to one path commit one at a time.
/// </summary>
[Collection(nameof(ProcessWideLimits))]
public class TemporaryFilesTests
{
    /// <summary>No process has this id (above any pid_max).</summary>
    static readonly FileOwner Dead = new(int.MaxValue - 1, 12345);

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(42)]
    [InlineData(999)]
    [InlineData(4_194_304)]
    public void NamesCarryTheirOwnerWhateverTheNumberOfDigits(int pid)
    {
        // A fixed-width slice of "mc-scratch-{pid}-{guid}" once failed for a pid under 1000 (containers start at 1).
        var owner = new FileOwner(pid, 98765);
        string folder = ScratchFolder.Name(owner, "0123456789ab");
        Assert.Equal($"mc-scratch-{pid}-98765-0123456789ab", folder);
        Assert.True(ScratchFolder.TryGetOwner(folder, out var parsed));
        Assert.Equal(owner, parsed);

        string file = TemporaryFiles.Name("my-model.v2.onnx.data", owner, "abcdef01");
        Assert.Equal($".my-model.v2.onnx.data.mc-{pid}-98765-abcdef01.tmp", file);
        Assert.True(TemporaryFiles.TryGetOwner(file, out parsed));
        Assert.Equal(owner, parsed);
    }

    [Theory]
    [InlineData("model.onnx")]
    [InlineData(".model.onnx.1a2b3c4d.tmp")]          // the old export temporaries: no owner to check, left alone
    [InlineData(".model.onnx.mc-12-x-abcdef01.tmp")]
    [InlineData(".model.onnx.mc-12-34.tmp")]
    [InlineData("model.onnx.mc-12-34-abcdef01.tmp")]
    public void NamesThisEngineDidNotMakeGiveNoOwner(string name) => Assert.False(TemporaryFiles.TryGetOwner(name, out _));

    [Fact]
    public void ScratchFoldersOfOlderVersionsGiveTheirProcessIdAlone()
    {
        Assert.True(ScratchFolder.TryGetOwner("mc-scratch-123-0f1e2d3c4b5a69788796a5b4c3d2e1f", out var owner));
        Assert.Equal(new FileOwner(123, 0), owner);
        Assert.False(ScratchFolder.TryGetOwner("mc-scratch-x-1-2", out _));
    }

    [Fact]
    public void AnOwnerIsGoneWhenItsProcessIsGoneOrItsIdWasReused()
    {
        Assert.False(FileOwner.Current.IsGone);
        Assert.NotEqual(0, FileOwner.Current.StartTime);
        Assert.True(Dead.IsGone);
        Assert.True((FileOwner.Current with { StartTime = FileOwner.Current.StartTime + 1 }).IsGone, "a reused id");
        Assert.False((FileOwner.Current with { StartTime = 0 }).IsGone, "start time unknown: the id alone decides");
    }

    [Fact]
    public void AnExportRemovesWhatKilledExportsLeftAndNothingElse()
    {
        using var tmp = new TempDir();
        string dead = tmp.File(TemporaryFiles.Name("out.onnx.data", Dead, "00000001"));
        string deadOther = tmp.File(TemporaryFiles.Name("other.onnx", Dead, "00000002"));
        string live = tmp.File(TemporaryFiles.Name("out.onnx", FileOwner.Current, "00000003"));
        string foreign = tmp.File(".out.onnx.1a2b3c4d.tmp");
        foreach (var f in new[] { dead, deadOther, live, foreign }) File.WriteAllBytes(f, new byte[100]);

        ModelIO.Save(TestModels.Mlp(), tmp.File("out.onnx"), new SaveOptions { ExternalData = true });

        Assert.Equal(new[] { "out.onnx", "out.onnx.data", Path.GetFileName(live), Path.GetFileName(foreign) }.Order(StringComparer.Ordinal),
            Directory.GetFiles(tmp.Path).Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal));
    }

    [UnixFact("flock (Windows keeps an open file from deletion by itself)")]
    public void AFileWhoseOwnerLooksGoneIsKeptWhileALiveProcessHoldsItsLock()
    {
        // A process in another PID namespace can carry an id that looks dead (or reused) from here; its lock says it lives.
        using var tmp = new TempDir();
        string path = tmp.File(TemporaryFiles.Name("out.onnx", Dead, "00000001"));
        using (var held = TemporaryFiles.Create(path))
        {
            held.Write(new byte[10]);
            Assert.Equal(0, TemporaryFiles.RemoveStale(tmp.Path));
            Assert.True(File.Exists(path));
        }
        Assert.Equal(1, TemporaryFiles.RemoveStale(tmp.Path));
        Assert.False(File.Exists(path));
    }

    [UnixFact("flock")]
    public void ScratchFoldersOfGoneProcessesAreRemovedUnlessTheirLockIsHeld()
    {
        using var tmp = new TempDir();
        string gone = Directory.CreateDirectory(tmp.File(ScratchFolder.Name(Dead, "000000000001"))).FullName;
        File.WriteAllBytes(Path.Combine(gone, "x.data"), new byte[100]);
        string held = Directory.CreateDirectory(tmp.File(ScratchFolder.Name(Dead, "000000000002"))).FullName;
        string live = Directory.CreateDirectory(tmp.File(ScratchFolder.Name(FileOwner.Current, "000000000003"))).FullName;
        string old = Directory.CreateDirectory(tmp.File($"mc-scratch-{Dead.ProcessId}-0f1e2d3c4b5a69788796a5b4c3d2e1f")).FullName;
        using var lockHeld = NativeFiles.TryLockFolder(held).Lock;

        ScratchFolder.RemoveStale(tmp.Path);

        Assert.False(Directory.Exists(gone));
        Assert.False(Directory.Exists(old));
        Assert.True(Directory.Exists(live));
        Assert.True(Directory.Exists(held), "a folder whose lock a live process holds was removed");
    }

    [UnixFact("flock on folders")]
    public void AGenAiFolderExportRemovesWhatKilledExportsLeftAndStagesInAFolderItOwns()
    {
        using var tmp = new TempDir();
        string source = Directory.CreateDirectory(tmp.File("source")).FullName;
        LlamaModels.WriteRandom(Path.Combine(source, "model.onnx"), new LlamaConfig(1, 16, 2, 1, 8, 32, 32, MaxPositions: 16));
        var model = ModelIO.Load(source);
        string dead = Directory.CreateDirectory(tmp.File(TemporaryFiles.Name("out", Dead, "00000001"))).FullName;
        File.WriteAllBytes(Path.Combine(dead, "model.onnx.data"), new byte[100]);
        string held = Directory.CreateDirectory(tmp.File(TemporaryFiles.Name("out", Dead, "00000002"))).FullName;
        using (NativeFiles.TryLockFolder(held).Lock)
        {
            model.Folder!.Export(model, tmp.File("out"), new SaveOptions());
            Assert.False(Directory.Exists(dead), "a killed export's staging folder outlived the next export");
            Assert.True(Directory.Exists(held), "a staging folder whose lock a live process holds was removed");
        }
        Assert.Equal(["genai_config.json", "model.onnx", "model.onnx.data"], Directory.GetFiles(tmp.File("out")).Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal));
        // Without -Force a second export is refused, and leaves no staging folder either.
        Assert.Equal("ExportFileExists", Assert.Throws<EngineException>(() => model.Folder.Export(model, tmp.File("out"), new SaveOptions())).ErrorId);
        Assert.Equal(new[] { Path.GetFileName(held), "out", "source" }.Order(StringComparer.Ordinal), Directory.GetDirectories(tmp.Path).Select(d => Path.GetFileName(d)).Order(StringComparer.Ordinal));
    }

    [UnixFact("flock on folders")]
    public void TwoExportsToOnePathCommitOneAtATime()
    {
        using var tmp = new TempDir();
        Task<SaveResult> export;
        using (NativeFiles.LockFolder(tmp.Path, default))
        {
            // Another export holds the folder: this one writes its files but gives them their names only after.
            export = Task.Run(() => ModelIO.Save(TestModels.Mlp(), tmp.File("out.onnx"), new SaveOptions { ExternalData = true }));
            Assert.False(export.Wait(500));
            Assert.False(File.Exists(tmp.File("out.onnx")));
            Assert.False(File.Exists(tmp.File("out.onnx.data")));
            // Meanwhile the other export finished: without -Force this one must not replace it.
            File.WriteAllBytes(tmp.File("out.onnx"), [1, 2, 3]);
        }
        var e = Assert.Throws<AggregateException>(() => export.Wait(TimeSpan.FromSeconds(30))).InnerException as EngineException;
        Assert.Equal("ExportFileExists", e?.ErrorId);
        Assert.Equal(["out.onnx"], Directory.GetFiles(tmp.Path).Select(f => Path.GetFileName(f)));
        Assert.Equal([1, 2, 3], File.ReadAllBytes(tmp.File("out.onnx")));
    }

    [Fact]
    public void AStageThatFailsDeletesItsScratchFileAtOnce()
    {
        var model = TestModels.Mlp();
        long threshold = OnnxModel.SpillThreshold;
        OnnxModel.SpillThreshold = 0;
        string? scratch = null;
        try
        {
            Assert.Throws<OperationCanceledException>(() => model.Derive("Fails", new Dictionary<string, string>(), proto =>
            {
                var t = new TensorProto { Name = "big", DataType = (int)TensorProto.Types.DataType.Float };
                t.Dims.Add(TensorSpill.MinimumBytes / 4);
                Assert.True(TensorSpill.TrySpill(t, new byte[TensorSpill.MinimumBytes]));
                Assert.True(ExternalTensor.TryGet(t, out var e));
                scratch = e.File.Path;
                Assert.True(File.Exists(scratch));
                throw new OperationCanceledException();
            }));
        }
        finally { OnnxModel.SpillThreshold = threshold; }
        Assert.NotNull(scratch);
        Assert.False(File.Exists(scratch), "the failed stage's scratch file is still there");
    }
}
