using ModelCompression.Native.Data;
using Google.Protobuf;
using ModelCompression.Native;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Runtime;

namespace ModelCompression.Engine.Tests;

public class ModelIOTests
{
    public static IEnumerable<object[]> SharedModels() => SharedFiles.Models.Select(m => new object[] { Path.GetFileName(m) });

    [SharedTheory]
    [MemberData(nameof(SharedModels))]
    public void RoundTripOfSharedModelIsIdenticalInOnnxRuntime(string file)
    {
        using var tmp = new TempDir();
        var model = ModelIO.Load(SharedFiles.Model(file));
        ModelIO.Save(model, tmp.File(file));
        var back = ModelIO.Load(tmp.File(file));
        Assert.Equal(model.Proto, back.Proto);

        var inputs = new InputSource { Synthesis = new SynthesisOptions { DefaultDimension = 32 }, SyntheticBatches = 1 };
        foreach (var f in ModelComparer.Compare(model, back, inputs))
        {
            Assert.Equal(0, f.MaxAbsError);
            Assert.Equal(1, f.Cosine, 12);
        }
    }

    [Fact]
    public void UnknownFieldsSurviveARoundTrip()
    {
        using var tmp = new TempDir();
        var proto = TestModels.Mlp().Proto;
        var bytes = proto.ToByteArray();
        // Append field 999 (varint 42): a field from a future ONNX version.
        var extra = new MemoryStream();
        var cos = new CodedOutputStream(extra);
        cos.WriteTag(999, WireFormat.WireType.Varint);
        cos.WriteInt64(42);
        cos.Flush();
        File.WriteAllBytes(tmp.File("m.onnx"), [.. bytes, .. extra.ToArray()]);
        var loaded = ModelIO.Load(tmp.File("m.onnx"));
        ModelIO.Save(loaded, tmp.File("out.onnx"));
        var written = File.ReadAllBytes(tmp.File("out.onnx"));
        Assert.Equal([.. bytes, .. extra.ToArray()], written);
    }

    [Fact]
    public void ExternalDataIsWrittenAndReadBack()
    {
        using var tmp = new TempDir();
        var model = TestModels.Mlp(inputs: 64, hidden: 64);
        var result = ModelIO.Save(model, tmp.File("ext.onnx"), new SaveOptions { ExternalData = true });
        Assert.NotNull(result.DataPath);
        Assert.True(new FileInfo(result.DataPath!).Length > 64 * 64 * 4);
        Assert.True(new FileInfo(result.ModelPath).Length < 4096);
        var back = ModelIO.Load(tmp.File("ext.onnx"));
        Assert.Equal(model.Proto.Graph.Initializer.Select(TensorData.ToFloat), back.Proto.Graph.Initializer.Select(TensorData.ToFloat));
        var f = ModelComparer.Compare(model, back, new InputSource()).Single();
        Assert.Equal(0, f.MaxAbsError);
    }

    [Fact]
    public void ModelsTooLargeForOneFileAreWrittenWithExternalData()
    {
        using var tmp = new TempDir();
        var model = TestModels.Mlp(inputs: 64, hidden: 64);
        var result = ModelIO.Save(model, tmp.File("big.onnx"), new SaveOptions { SingleFileLimit = 10_000 });
        Assert.True(result.ExternalDataForced);
        Assert.True(File.Exists(tmp.File("big.onnx.data")));
        Assert.Equal(model.Proto.Graph.Initializer.Select(TensorData.ToFloat), ModelIO.Load(tmp.File("big.onnx")).Proto.Graph.Initializer.Select(TensorData.ToFloat));
    }

    [Theory]
    [InlineData("../secret.bin")]
    [InlineData("/etc/passwd")]
    [InlineData("sub/../../x.bin")]
    public void ExternalDataOutsideTheModelFolderIsRefused(string location)
    {
        using var tmp = new TempDir();
        var proto = TestModels.Mlp().Proto;
        MakeExternal(proto.Graph.Initializer[0], location, 0, 32 * 4);
        File.WriteAllBytes(tmp.File("m.onnx"), proto.ToByteArray());
        var e = Assert.Throws<EngineException>(() => ModelIO.Load(tmp.File("m.onnx")));
        Assert.Equal("ExternalDataPathEscapes", e.ErrorId);
        Assert.Equal(EngineErrorKind.SecurityError, e.Kind);
    }

    [Fact]
    public void ExternalDataThroughALinkIsRefused()
    {
        using var tmp = new TempDir();
        using var outside = new TempDir();
        File.WriteAllBytes(outside.File("w.bin"), new byte[8 * 16 * 4]);
        File.CreateSymbolicLink(tmp.File("w.bin"), outside.File("w.bin"));
        var proto = TestModels.Mlp().Proto;
        MakeExternal(proto.Graph.Initializer[0], "w.bin", 0, 8 * 16 * 4);
        File.WriteAllBytes(tmp.File("m.onnx"), proto.ToByteArray());
        Assert.Equal("ExternalDataPathEscapes", Assert.Throws<EngineException>(() => ModelIO.Load(tmp.File("m.onnx"))).ErrorId);
    }

    [Fact]
    public void DeclaredSizesThatDoNotFitTheFileAreRefused()
    {
        using var tmp = new TempDir();
        File.WriteAllBytes(tmp.File("w.bin"), new byte[1024]);
        var proto = TestModels.Mlp().Proto;
        var t = proto.Graph.Initializer[0];
        t.Dims.Clear();
        t.Dims.AddRange([1L << 20, 1L << 20]); // a tensor claiming 4 TB
        MakeExternal(t, "w.bin", 0, -1);
        File.WriteAllBytes(tmp.File("m.onnx"), proto.ToByteArray());
        Assert.Equal("ExternalDataOutOfRange", Assert.Throws<EngineException>(() => ModelIO.Load(tmp.File("m.onnx"))).ErrorId);
    }

    [Fact]
    public void MissingExternalDataFileIsReported()
    {
        using var tmp = new TempDir();
        var proto = TestModels.Mlp().Proto;
        MakeExternal(proto.Graph.Initializer[0], "gone.bin", 0, 8 * 16 * 4);
        File.WriteAllBytes(tmp.File("m.onnx"), proto.ToByteArray());
        var e = Assert.Throws<EngineException>(() => ModelIO.Load(tmp.File("m.onnx")));
        Assert.Equal("ExternalDataNotFound", e.ErrorId);
        Assert.Contains("gone.bin", e.Message);
    }

    [Fact]
    public void BadFilesGetStableErrorIds()
    {
        using var tmp = new TempDir();
        Assert.Equal("ModelFileNotFound", Assert.Throws<EngineException>(() => ModelIO.Load(tmp.File("none.onnx"))).ErrorId);
        Assert.Equal("ModelPathIsDirectory", Assert.Throws<EngineException>(() => ModelIO.Load(tmp.Path)).ErrorId);
        File.WriteAllBytes(tmp.File("empty.onnx"), []);
        Assert.Equal("ModelFileEmpty", Assert.Throws<EngineException>(() => ModelIO.Load(tmp.File("empty.onnx"))).ErrorId);
        File.WriteAllBytes(tmp.File("png.onnx"), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, 1, 2, 3]);
        Assert.Equal("ModelFileNotOnnx", Assert.Throws<EngineException>(() => ModelIO.Load(tmp.File("png.onnx"))).ErrorId);
        var bytes = TestModels.Mlp().Proto.ToByteArray();
        File.WriteAllBytes(tmp.File("cut.onnx"), bytes[..(bytes.Length / 2)]);
        Assert.Equal("ModelFileTruncated", Assert.Throws<EngineException>(() => ModelIO.Load(tmp.File("cut.onnx"))).ErrorId);
    }

    [Fact]
    public void SaveRefusesToOverwriteAndLeavesNoTemporaryFiles()
    {
        using var tmp = new TempDir();
        var model = TestModels.Mlp();
        File.WriteAllText(tmp.File("m.onnx"), "keep");
        Assert.Equal("ExportFileExists", Assert.Throws<EngineException>(() => ModelIO.Save(model, tmp.File("m.onnx"))).ErrorId);
        Assert.Equal("keep", File.ReadAllText(tmp.File("m.onnx")));
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => ModelIO.Save(model, tmp.File("c.onnx"), new SaveOptions { ExternalData = true }, cts.Token));
        Assert.Equal(["m.onnx"], Directory.GetFiles(tmp.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void HistoryTravelsInMetadata()
    {
        using var tmp = new TempDir();
        var model = TestModels.Mlp().Derive("Test", new Dictionary<string, string> { ["Rate"] = "0.5" }, _ => null);
        ModelIO.Save(model, tmp.File("h.onnx"));
        var back = ModelIO.Load(tmp.File("h.onnx"));
        var stage = Assert.Single(back.History);
        Assert.Equal("Test", stage.Name);
        Assert.Equal("0.5", stage.Parameters["Rate"]);
        Assert.Empty(TestModels.Mlp().History);
    }

    static void MakeExternal(TensorProto t, string location, long offset, long length)
    {
        t.ClearRawData();
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString() });
        if (length >= 0) t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.ToString() });
        t.DataLocation = TensorProto.Types.DataLocation.External;
    }
}
