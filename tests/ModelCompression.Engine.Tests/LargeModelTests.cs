using ModelCompression.Native.Data;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using ModelCompression.Native;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Pruning;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests;

/// <summary>Tests that change process-wide limits (when stages spill, when sessions go by file) run alone.</summary>
[CollectionDefinition(nameof(ProcessWideLimits), DisableParallelization = true)]
public sealed class ProcessWideLimits;

/// <summary>
/// Models of any size: external data stays on disk until read and is checked against the file it came from, stages of
/// large models spill to scratch files, models over protobuf's 2 GB are written with external data, and ONNX Runtime
/// gets large models by file.
/// </summary>
[Collection(nameof(ProcessWideLimits))]
public class LargeModelTests
{
    /// <summary>An MLP whose weights are large enough to spill (128 KB and more).</summary>
    static OnnxModel Original() => TestModels.Mlp(inputs: 128, hidden: 256);

    /// <summary>The MLP saved with every weight in one external data file; returns the model path.</summary>
    static string ExternalMlp(TempDir tmp, string name = "m.onnx")
    {
        ModelIO.Save(Original(), tmp.File(name), new SaveOptions { ExternalData = true });
        return tmp.File(name);
    }

    [Fact]
    public void LoadingReadsTheGraphNotTheWeights()
    {
        using var tmp = new TempDir();
        var original = Original();
        var model = ModelIO.Load(ExternalMlp(tmp));
        var weights = model.Proto.Graph.Initializer.Where(t => TensorData.StorageBytes(t) >= 1024).ToList();
        Assert.NotEmpty(weights);
        Assert.All(weights, t => Assert.True(TensorData.IsExternal(t) && t.RawData.IsEmpty, $"{t.Name} was read at load"));
        // Read on demand, equal to what was written.
        Assert.Equal(original.Proto.Graph.Initializer.Select(TensorData.ToFloat), model.Proto.Graph.Initializer.Select(TensorData.ToFloat));
        Assert.Equal(original.SerializedSize, model.SerializedSize, tolerance: 256);
    }

    [Theory]
    [InlineData("rewritten")]
    [InlineData("truncated")]
    [InlineData("deleted")]
    public void ADataFileChangedUnderneathIsAnErrorAndNothingIsWritten(string change)
    {
        using var tmp = new TempDir();
        var model = ModelIO.Load(ExternalMlp(tmp));
        string data = tmp.File("m.onnx.data");
        switch (change)
        {
            case "rewritten":   // same length, other bytes, later write time
                var bytes = File.ReadAllBytes(data);
                Array.Reverse(bytes);
                File.WriteAllBytes(data, bytes);
                File.SetLastWriteTimeUtc(data, DateTime.UtcNow.AddMinutes(1));
                break;
            case "truncated": using (var f = new FileStream(data, FileMode.Open)) f.SetLength(f.Length / 2); break;
            case "deleted": File.Delete(data); break;
        }
        var weight = model.Proto.Graph.Initializer.First(TensorData.IsExternal);
        Assert.Equal("ExternalDataChanged", Assert.Throws<EngineException>(() => TensorData.ToFloat(weight)).ErrorId);
        var e = Assert.Throws<EngineException>(() => ModelIO.Save(model, tmp.File("out.onnx"), new SaveOptions { ExternalData = true }));
        Assert.Equal("ExternalDataChanged", e.ErrorId);
        Assert.DoesNotContain(Directory.GetFiles(tmp.Path), f => Path.GetFileName(f).Contains("out", StringComparison.Ordinal));
    }

    [Fact]
    public void ADataFileShorterThanTheGraphSaysIsRefusedAtLoad()
    {
        using var tmp = new TempDir();
        string path = ExternalMlp(tmp);
        using (var f = new FileStream(tmp.File("m.onnx.data"), FileMode.Open)) f.SetLength(f.Length - 1);
        var e = Assert.Throws<EngineException>(() => ModelIO.Load(path));
        Assert.Equal("ExternalDataOutOfRange", e.ErrorId);
        Assert.Equal(EngineErrorKind.InvalidData, e.Kind);
    }

    [Fact]
    public void ExportCopiesExternalTensorsWithoutChangingTheSource()
    {
        using var tmp = new TempDir();
        var model = ModelIO.Load(ExternalMlp(tmp));
        byte[] before = File.ReadAllBytes(tmp.File("m.onnx.data"));
        ModelIO.Save(model, tmp.File("copy.onnx"));   // as it came: with external data
        ModelIO.Save(model, tmp.File("single.onnx"), new SaveOptions { ExternalData = false });
        Assert.Equal(before, File.ReadAllBytes(tmp.File("m.onnx.data")));
        Assert.True(File.Exists(tmp.File("copy.onnx.data")));
        foreach (var name in new[] { "copy.onnx", "single.onnx" })
        {
            var back = ModelIO.Load(tmp.File(name));
            Assert.Equal(model.Proto.Graph.Initializer.Select(TensorData.ToFloat), back.Proto.Graph.Initializer.Select(TensorData.ToFloat));
            Assert.Equal(0, ModelComparer.Compare(model, back, new InputSource()).Single().MaxAbsError);
        }
        Assert.False(File.Exists(tmp.File("single.onnx.data")));
    }

    [Fact]
    public void StagesOfLargeModelsSpillNewTensorsToScratchFilesThatGoWithTheModel()
    {
        using var tmp = new TempDir();
        var model = ModelIO.Load(ExternalMlp(tmp));
        long threshold = OnnxModel.SpillThreshold;
        OnnxModel.SpillThreshold = 0;
        try
        {
            string scratch = PruneSpillAndExport(model, tmp);
            // Once no model points at the scratch file, it is deleted.
            for (int i = 0; i < 10 && File.Exists(scratch); i++) { GC.Collect(); GC.WaitForPendingFinalizers(); }
            Assert.False(File.Exists(scratch), "the scratch file outlived every model that used it");
        }
        finally { OnnxModel.SpillThreshold = threshold; }
    }

    /// <summary>Prunes with spilling on, checks the result, and returns the scratch file's path (the models die here).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    static string PruneSpillAndExport(OnnxModel model, TempDir tmp)
    {
        var pruned = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5 });
        var file = Assert.Single(pruned.Files.OfType<ScratchFile>());
        Assert.True(File.Exists(file.Path));
        Assert.All(pruned.Proto.Graph.Initializer.Where(t => TensorData.StorageBytes(t) >= TensorSpill.MinimumBytes), t => Assert.True(TensorData.IsExternal(t)));
        OnnxModel.SpillThreshold = long.MaxValue;
        var inMemory = ModelPruner.Prune(model, new PruningOptions { Rate = 0.5 });
        Assert.Empty(inMemory.Files.OfType<ScratchFile>());
        Assert.Equal(0, ModelComparer.Compare(inMemory, pruned, new InputSource()).Single().MaxAbsError);
        ModelIO.Save(pruned, tmp.File("p.onnx"));
        Assert.Equal(inMemory.Proto.Graph.Initializer.Select(TensorData.ToFloat), ModelIO.Load(tmp.File("p.onnx")).Proto.Graph.Initializer.Select(TensorData.ToFloat));
        return file.Path;
    }

    [Fact]
    public void OnnxRuntimeGetsLargeModelsByFileAndLeavesNoTemporaryFiles()
    {
        using var tmp = new TempDir();
        var model = ModelIO.Load(ExternalMlp(tmp));
        var derived = model.Derive("Edit", new Dictionary<string, string>(), p => { p.Graph.Name = "edited"; return null; });
        var before = Directory.GetDirectories(ScratchFolder.Path, "session-*").ToHashSet();
        long limit = RuntimeModel.InMemoryLimit;
        RuntimeModel.InMemoryLimit = 0;
        try
        {
            var inputs = new InputSource();
            Assert.Equal(0, ModelComparer.Compare(Original(), derived, inputs).Single().MaxAbsError);
            Assert.DoesNotContain(Directory.GetDirectories(ScratchFolder.Path, "session-*"), d => !before.Contains(d));
        }
        finally { RuntimeModel.InMemoryLimit = limit; }
    }

    /// <summary>
    /// A model whose single-file form passes 2^31 bytes (36 initializers of 64 MB that share one region of one data
    /// file, so the test needs little memory or disk to start from) is written with external data, loads back, and
    /// ONNX Runtime loads and runs it.
    /// </summary>
    [Fact]
    public void AModelOver2GBIsWrittenWithExternalDataAndLoadsInOnnxRuntime()
    {
        using var tmp = new TempDir();
        const int rows = 4096, cols = 4096, tensors = 36;
        var weights = new float[rows * cols];
        for (int i = 0; i < weights.Length; i++) weights[i] = (i % 1013) * 1e-3f;
        File.WriteAllBytes(tmp.File("shared.bin"), MemoryMarshal.AsBytes(weights.AsSpan()).ToArray());

        var b = new GraphBuilder("over2gb").Input("ids", DT.Int64, 1).Output("y", DT.Float, 1, cols);
        string? sum = null;
        for (int t = 0; t < tensors; t++)
        {
            var w = new TensorProto { Name = $"w{t}", DataType = (int)DT.Float, DataLocation = TensorProto.Types.DataLocation.External };
            w.Dims.AddRange([rows, cols]);
            w.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "shared.bin" });
            w.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = ((long)rows * cols * 4).ToString() });
            b.Graph.Initializer.Add(w);
            string row = b.Node("Gather", [w.Name, "ids"]);
            sum = sum is null ? row : b.Node("Add", [sum, row], t == tensors - 1 ? ["y"] : null);
        }
        File.WriteAllBytes(tmp.File("big.onnx"), Google.Protobuf.MessageExtensions.ToByteArray(b.Build()));

        var model = ModelIO.Load(tmp.File("big.onnx"));
        Assert.True(model.SerializedSize > (1L << 31), $"serialized size {model.SerializedSize:N0}");
        // Asked for one file: too large for one, so written with external data regardless.
        var saved = ModelIO.Save(model, tmp.File("out.onnx"), new SaveOptions { ExternalData = false });
        Assert.True(saved.ExternalDataForced);
        Assert.True(new FileInfo(saved.ModelPath).Length < 1 << 20);
        Assert.Equal((long)tensors * rows * cols * 4, new FileInfo(saved.DataPath!).Length, tolerance: tensors * 4096);
        File.Delete(tmp.File("shared.bin"));

        var back = ModelIO.Load(saved.ModelPath);
        Assert.True(back.SerializedSize > (1L << 31));
        using var session = new InferenceSession(saved.ModelPath);
        using var ids = OrtValue.CreateTensorValueFromMemory(new long[] { 3 }, [1]);
        using var run = new RunOptions();
        using var result = session.Run(run, ["ids"], [ids], ["y"]);
        var y = result[0].GetTensorDataAsSpan<float>();
        Assert.Equal(tensors * weights[3 * cols + 5], y[5], 3);
    }
}
