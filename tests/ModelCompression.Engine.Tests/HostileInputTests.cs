using System.Diagnostics;
using Google.Protobuf;
using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;
using ModelCompression.Native.Onnx.Proto;
using ModelCompression.Native.Quantization;
using ModelCompression.Native.Runtime;
using DT = ModelCompression.Native.Onnx.Proto.TensorProto.Types.DataType;

namespace ModelCompression.Engine.Tests;

/// <summary>
/// Files that lie about their sizes, repeat names, carry damaged metadata or point at things that are not files:
/// each is a clear error with a stable id, decided before anything is allocated or opened, and never a hang.
/// </summary>
public class HostileInputTests
{
    static string Write(TempDir tmp, ModelProto proto, string name = "m.onnx")
    {
        File.WriteAllBytes(tmp.File(name), proto.ToByteArray());
        return tmp.File(name);
    }

    [Theory]
    [InlineData(1L << 31)]           // more elements than an array holds
    [InlineData((1L << 31) - 1)]     // exactly the largest array
    [InlineData(1L << 40)]
    public void ATensorClaimingMoreValuesThanItStoresIsRefusedWithoutAllocating(long elements)
    {
        using var tmp = new TempDir();
        var proto = TestModels.Mlp().Proto;
        var t = proto.Graph.Initializer[0];
        t.Dims.Clear();
        t.Dims.Add(elements);
        t.ClearRawData();   // no values at all
        string path = Write(tmp, proto);
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<EngineException>(() => ModelIO.Load(path));
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 16 << 20, "the refusal allocated for the declared size");
        Assert.Equal("TensorDataSizeMismatch", e.ErrorId);
        Assert.Equal(EngineErrorKind.InvalidData, e.Kind);

        // The same tensor made in memory is refused by the readers too, before they allocate.
        before = GC.GetAllocatedBytesForCurrentThread();
        Assert.Equal("TensorDataSizeMismatch", Assert.Throws<EngineException>(() => TensorData.ToFloat(t)).ErrorId);
        Assert.Equal("TensorDataSizeMismatch", Assert.Throws<EngineException>(() => TensorData.CountZeros(t)).ErrorId);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 16 << 20);
    }

    [Theory]
    [InlineData(1L << 62)]
    [InlineData(long.MaxValue / 3)]
    public void ShapesWhoseByteCountOverflowAreInvalidData(long dim)
    {
        using var tmp = new TempDir();
        var proto = TestModels.Mlp().Proto;
        var t = proto.Graph.Initializer[0];
        t.Dims.Clear();
        t.Dims.AddRange([dim, 4]);
        Assert.Equal("TensorShapeInvalid", Assert.Throws<EngineException>(() => ModelIO.Load(Write(tmp, proto))).ErrorId);
    }

    [Fact]
    public void RepeatedNamesAreRefusedAtLoad()
    {
        using var tmp = new TempDir();
        var proto = TestModels.Mlp().Proto;
        proto.Graph.Initializer.Add(proto.Graph.Initializer[0].Clone());
        Assert.Equal("ModelDuplicateName", Assert.Throws<EngineException>(() => ModelIO.Load(Write(tmp, proto))).ErrorId);

        proto = TestModels.Mlp().Proto;
        proto.Graph.Node[1].Output[0] = proto.Graph.Node[0].Output[0];
        Assert.Equal("ModelDuplicateName", Assert.Throws<EngineException>(() => ModelIO.Load(Write(tmp, proto, "n.onnx"))).ErrorId);
    }

    [Theory]
    [InlineData("[{}]")]
    [InlineData("[null]")]
    [InlineData("[{\"Name\":\"x\",\"Parameters\":{\"a\":null},\"Tool\":\"t\"}]")]
    [InlineData("{")]
    [InlineData("42")]
    public void ADamagedHistoryIsDroppedWithAWarning(string json)
    {
        using var tmp = new TempDir();
        var proto = TestModels.Mlp().Proto;
        proto.MetadataProps.Add(new StringStringEntryProto { Key = ModelStage.MetadataKey, Value = json });
        var model = ModelIO.Load(Write(tmp, proto));
        Assert.Empty(model.History);
        Assert.Contains("damaged", Assert.Single(model.LoadWarnings));
    }

    [UnixFact]
    public void ExternalDataAtAFifoIsRefusedWithoutOpeningIt()
    {
        using var tmp = new TempDir();
        using (var mkfifo = Process.Start("mkfifo", [tmp.File("w.bin")])) mkfifo.WaitForExit();
        var proto = TestModels.Mlp().Proto;
        var t = proto.Graph.Initializer[0];
        t.ClearRawData();
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = "w.bin" });
        t.DataLocation = TensorProto.Types.DataLocation.External;
        string path = Write(tmp, proto);
        var load = Task.Run(() => ModelIO.Load(path));
        Assert.True(Task.WhenAny(load, Task.Delay(TimeSpan.FromSeconds(30))).Result == load, "loading blocked on the FIFO");
        var e = Assert.IsType<EngineException>(load.Exception!.InnerException);
        Assert.Equal("ExternalDataOutOfRange", e.ErrorId);
    }

    [UnixTheory]
    [InlineData("/dev/zero", "ModelFileEmpty")]
    [InlineData("/dev/null", "ModelFileEmpty")]
    [InlineData("/proc", "ModelPathIsDirectory")]
    [InlineData("dangling", "ModelFileNotFound")]
    [InlineData("loop", "ModelFileNotFound")]
    public void AModelPathThatIsALinkToSomethingOddGetsAStableId(string target, string errorId)
    {
        using var tmp = new TempDir();
        string link = tmp.File("m.onnx");
        switch (target)
        {
            case "dangling": File.CreateSymbolicLink(link, tmp.File("nothing-here")); break;
            case "loop": File.CreateSymbolicLink(link, tmp.File("other")); File.CreateSymbolicLink(tmp.File("other"), link); break;
            default: File.CreateSymbolicLink(link, target); break;
        }
        Assert.Equal(errorId, Assert.Throws<EngineException>(() => ModelIO.Load(link)).ErrorId);
    }

    [Theory]
    [InlineData(1L << 20, 1L << 20)]
    [InlineData(1L << 62, 16)]
    public void DeclaredInputShapesAreNotTrustedForAllocation(long rows, long cols)
    {
        var b = new GraphBuilder("huge").Input("x", DT.Float, rows, cols).Output("y", DT.Float, rows, cols);
        b.Node("Relu", ["x"], ["y"]);
        var model = b.BuildModel("huge");
        long before = GC.GetAllocatedBytesForCurrentThread();
        var e = Assert.Throws<EngineException>(() => InputSynthesizer.Synthesize(model, new SynthesisOptions()));
        Assert.Equal("InputTooLarge", e.ErrorId);
        Assert.Contains("-InputShape", e.Message);
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
        // The caller's own shape is used as given.
        var inputs = InputSynthesizer.Synthesize(model, new SynthesisOptions { InputShapes = new Dictionary<string, long[]> { ["x"] = [2, 3] } });
        Assert.Equal([2, 3], inputs["x"].Shape);
    }

    /// <summary>A Loop of 10^12 iterations: cancelling the token stops ONNX Runtime within moments.</summary>
    [Fact]
    public void CancellationStopsAnOnnxRuntimeRun()
    {
        var body = new GraphProto { Name = "body" };
        body.Input.Add(GraphBuilder.Value("i", DT.Int64));
        body.Input.Add(GraphBuilder.Value("c", DT.Bool));
        body.Input.Add(GraphBuilder.Value("v", DT.Float, 1));
        body.Output.Add(GraphBuilder.Value("c_out", DT.Bool));
        body.Output.Add(GraphBuilder.Value("v_out", DT.Float, 1));
        body.Node.Add(new NodeProto { OpType = "Identity", Name = "keep", Input = { "c" }, Output = { "c_out" } });
        body.Node.Add(new NodeProto { OpType = "Add", Name = "step", Input = { "v", "one" }, Output = { "v_out" } });

        var b = new GraphBuilder("spin").Input("x", DT.Float, 1).Output("y", DT.Float, 1);
        b.InitializerInt64("trips", [], [1_000_000_000_000]);
        b.Graph.Initializer.Add(TensorData.FromRaw("go", DT.Bool, [], [1]));
        b.Initializer("one", [1], [1f]);
        var loop = new NodeProto { OpType = "Loop", Name = "loop", Input = { "trips", "go", "x" }, Output = { "y" } };
        loop.Attribute.Add(new AttributeProto { Name = "body", Type = AttributeProto.Types.AttributeType.Graph, G = body });
        b.Graph.Node.Add(loop);
        using var session = new ModelSession(b.BuildModel("spin"));

        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        var clock = Stopwatch.StartNew();
        Assert.ThrowsAny<OperationCanceledException>(() => session.Run(new Dictionary<string, NamedArray> { ["x"] = new("x", [1], new float[1]) }, null, cts.Token));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"the run went on for {clock.Elapsed.TotalSeconds:F0} s after cancellation");
    }

    /// <summary>A Gemm with no output and a MatMul with no weight beside a good MatMul: skipped with a reason, never an index error.</summary>
    [Theory]
    [InlineData(QuantizationMode.Dynamic)]
    [InlineData(QuantizationMode.WeightOnly)]
    public void QuantizersSkipNodesThatLackInputsOrOutputs(QuantizationMode mode)
    {
        var b = new GraphBuilder("gaps").Input("x", DT.Float, "batch", 32).Output("y", DT.Float, "batch", 32);
        var w = b.Initializer("w", [32, 32], Enumerable.Range(0, 32 * 32).Select(i => MathF.Sin(i) * 0.1f).ToArray());
        b.Node("MatMul", ["x", w], ["y"], name: "good");
        b.Graph.Node.Add(new NodeProto { OpType = "Gemm", Name = "no_output", Input = { "x", w } });
        b.Graph.Node.Add(new NodeProto { OpType = "MatMul", Name = "no_weight", Input = { "x" }, Output = { "z" } });
        var q = ModelQuantizer.Quantize(b.BuildModel("gaps"), new QuantizationOptions { Mode = mode });
        Assert.Contains(q.Report!.Entries, e => e.Target == "good" && e.Action == "Quantized");
        Assert.DoesNotContain(q.Report.Entries, e => e.Target is "no_output" or "no_weight" && e.Action == "Quantized");
    }

    /// <summary>Found by the fuzzer: a GenAI configuration whose numbers or file name have the wrong JSON type.</summary>
    [Theory]
    [InlineData("\"head_size\": 8", "\"head_size\": 1.5")]
    [InlineData("\"head_size\": 8", "\"head_size\": \"eight\"")]
    [InlineData("\"filename\": \"model.onnx\"", "\"filename\": []")]
    [InlineData("\"model\": {", "\"model\": 0, \"unused\": {")] // seed 31, case 1695: UnexpectedError before
    public void AGenAiConfigurationOfTheWrongTypesIsInvalidData(string field, string replacement)
    {
        using var tmp = new TempDir();
        LlamaModels.WriteRandom(tmp.File("model.onnx"), new LlamaConfig(1, 16, 2, 1, 8, 32, 32, MaxPositions: 16));
        string config = tmp.File("genai_config.json");
        string text = File.ReadAllText(config);
        Assert.Contains(field, text);
        File.WriteAllText(config, text.Replace(field, replacement));
        Assert.Equal("GenAiConfigInvalid", Assert.Throws<EngineException>(() => ModelIO.Load(tmp.Path)).ErrorId);
    }
}
