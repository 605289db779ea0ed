using ModelCompression.Native;
using ModelCompression.Native.Data;
using ModelCompression.Native.Onnx;

namespace ModelCompression.Engine.Tests;

public class DataSetTests
{
    [SharedFact]
    public void NpzAndCsvOfTheSameSplitHoldTheSameData()
    {
        var npz = DataSet.Load(SharedFiles.Data("wine_test.npz"));
        var csv = DataSet.Load(SharedFiles.Data("wine_test.csv"));
        Assert.Equal(npz.Rows, csv.Rows);
        Assert.Equal(npz.Labels, csv.Labels);
        var a = npz.Features.Single().AsFloat();
        var b = csv.Features.Single().AsFloat();
        Assert.Equal(a.Length, b.Length);
        Assert.All(a.Zip(b), p => Assert.InRange(Math.Abs(p.First - p.Second), 0, 1e-5)); // CSV holds rounded decimals
    }

    [SharedFact]
    public void SharedDataFeedsTheMatchingModel()
    {
        var model = ModelIO.Load(SharedFiles.Model("wine_mlp.onnx"));
        var data = DataSet.Load(SharedFiles.Data("wine_test.npz"));
        var map = ModelInputs.Bind(model, data);
        Assert.Equal(new long[] { data.Rows, 13 }, map["features"].Shape);
        // The wrong data set is refused before anything runs.
        var other = DataSet.Load(SharedFiles.Data("breast_cancer_test.npz"));
        var e = Assert.Throws<EngineException>(() => ModelInputs.Bind(model, other));
        Assert.Equal("DataShapeMismatch", e.ErrorId);
    }

    [Fact]
    public void NpyRoundTripsAndBadFilesAreNamed()
    {
        using var tmp = new TempDir();
        var x = new NamedArray("x", [2, 3], new float[] { 1, 2, 3, 4, 5, 6 });
        var y = new NamedArray("y", [2], new long[] { 0, 1 });
        Npy.WriteNpz(tmp.File("d.npz"), [x, y]);
        var d = DataSet.Load(tmp.File("d.npz"));
        Assert.Equal(x.AsFloat(), d.Features.Single().AsFloat());
        Assert.Equal([0L, 1L], d.Labels!);

        File.WriteAllText(tmp.File("bad.npy"), "not numpy");
        var e = Assert.Throws<EngineException>(() => DataSet.Load(tmp.File("bad.npy")));
        Assert.Equal("NpyInvalid", e.ErrorId);
        Assert.Contains("bad.npy", e.Message);
        File.WriteAllText(tmp.File("bad.csv"), "a,b,label\n1,2,0\n1,x,1\n");
        Assert.Equal("CsvValueInvalid", Assert.Throws<EngineException>(() => DataSet.Load(tmp.File("bad.csv"))).ErrorId);
        Assert.Equal("DataFileNotFound", Assert.Throws<EngineException>(() => DataSet.Load(tmp.File("none.npz"))).ErrorId);
        File.WriteAllText(tmp.File("data.txt"), "1,2");
        Assert.Equal("DataFileFormatUnsupported", Assert.Throws<EngineException>(() => DataSet.Load(tmp.File("data.txt"))).ErrorId);
    }
}
