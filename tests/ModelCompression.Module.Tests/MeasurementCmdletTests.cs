using System.Diagnostics;
using System.Management.Automation;

namespace ModelCompression.Module.Tests;

/// <summary>Measure-ModelLatency and Compare-Model as a user meets them.</summary>
public class MeasurementCmdletTests
{
    static object? Prop(PSObject o, string name) => o.Properties[name].Value;

    [Fact]
    public void MeasureTakesModelsAndPathsFromThePipelineAndABaseline()
    {
        using var ps = new PowerShellHost();
        var reports = ps.Run("$m = Get-Model ./models/wine_mlp.onnx; $m, './models/wine_mlp.onnx' | Measure-ModelLatency -Baseline ./models/wine_mlp.onnx -Iterations 40 -Warmup 2 -BatchSize 4 -IntraOpThreads 1");
        Assert.Empty(ps.Streams.Error);
        Assert.Equal(3, reports.Count);
        Assert.All(reports, r => Assert.Equal("ModelCompression.LatencyReport", r.BaseObject.GetType().FullName));
        Assert.Equal(["Baseline", "Model", "Model"], reports.Select(r => (string)Prop(r, "Role")!));
        Assert.Null(Prop(reports[0], "RatioToBaseline"));
        foreach (var r in reports.Skip(1))
        {
            Assert.Equal("wine_mlp", Prop(r, "Baseline"));
            Assert.InRange((double)Prop(r, "RatioToBaseline")!, 0.5, 2.0);
            Assert.True((double)Prop(r, "RatioLower")! <= (double)Prop(r, "RatioToBaseline")!);
            Assert.NotNull(Prop(r, "Significant"));
        }
        Assert.All(reports, r =>
        {
            Assert.Equal(40, Prop(r, "Iterations"));
            Assert.Equal(4L, Prop(r, "BatchSize"));
            Assert.Equal("features[4,13]", Prop(r, "Inputs"));
            Assert.Equal(1, Prop(r, "IntraOpThreads"));
            Assert.True((double)Prop(r, "P50Ms")! > 0);
        });
        Assert.Contains(ps.Streams.Progress, p => p.StatusDescription.StartsWith("Measuring", StringComparison.Ordinal));
        Assert.Contains(ps.Streams.Progress, p => p.RecordType == ProgressRecordType.Completed);
    }

    [Fact]
    public void MeasureWithDurationInSecondsAndDataFile()
    {
        using var ps = new PowerShellHost();
        var sw = Stopwatch.StartNew();
        var r = ps.Run("Measure-ModelLatency ./models/wine_mlp.onnx -InputData ./data/wine_test.npz -BatchSize 8 -Duration 0.5 -Warmup 0 -GraphOptimization Basic -InterOpThreads 1").Single();
        Assert.Empty(ps.Streams.Error);
        Assert.True(sw.Elapsed.TotalSeconds >= 0.5);
        Assert.True((int)Prop(r, "Iterations")! > 5);
        Assert.StartsWith("wine_test.npz (", (string)Prop(r, "InputSource")!);
        Assert.Equal("Basic", Prop(r, "GraphOptimization"));
    }

    [Fact]
    public void MeasureReportSerializesToJson()
    {
        using var ps = new PowerShellHost();
        var json = ps.Run("Get-Model ./models/wine_mlp.onnx | Measure-ModelLatency -Iterations 5 -Warmup 0 | ConvertTo-Json").Single().ToString()!;
        Assert.Empty(ps.Streams.Error);
        using var doc = System.Text.Json.JsonDocument.Parse(json);
        Assert.Equal("wine_mlp", doc.RootElement.GetProperty("Model").GetString());
        Assert.True(doc.RootElement.GetProperty("P99Ms").GetDouble() > 0);
    }

    [Theory]
    [InlineData("-Provider NoSuchProvider", "ExecutionProviderUnavailable")]
    [InlineData("-InputShape @{ nosuchinput = 1,13 }", "InputShapeKeyUnknown")]
    [InlineData("-InputShape @{ features = 1,2,3 }", "InputShapeRankMismatch")]
    [InlineData("-InputData ./data/missing.npz", "DataFileNotFound")]
    public void MeasureErrorsHaveStableIds(string arguments, string errorId)
    {
        using var ps = new PowerShellHost();
        try { ps.Run($"Measure-ModelLatency ./models/wine_mlp.onnx -Iterations 2 {arguments}"); }
        catch (RuntimeException) { }
        var e = Assert.Single(ps.Streams.Error);
        Assert.Equal(errorId, e.FullyQualifiedErrorId.Split(',')[0]);
    }

    [SharedFact]
    public void MissingSymbolicDimensionIsNamedAndInputShapeFixesIt()
    {
        using var ps = new PowerShellHost();
        string bert = Path.Combine(PowerShellHost.SharedRoot, "models", "tiny_bert.onnx");
        var vars = new Dictionary<string, object?> { ["bert"] = bert };
        string dim = ps.Run("(Get-ModelInfo $bert).Inputs[0].Shape[1]", vars).Single().ToString()!;
        ps.Run("Measure-ModelLatency $bert -Iterations 2", vars);
        var e = Assert.Single(ps.Streams.Error);
        Assert.Equal("InputDimensionUnresolved", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Contains($"'{dim}'", e.Exception.Message);
        var r = ps.Run($"Measure-ModelLatency $bert -Iterations 2 -Warmup 0 -InputShape @{{ {dim} = 16 }} -IntegerRange 0,50", vars).Single();
        Assert.Empty(ps.Streams.Error);
        Assert.Equal("input_ids[1,16]", Prop(r, "Inputs"));
    }

    [Fact]
    public void ProviderCompletionListsTheAvailableProviders()
    {
        using var ps = new PowerShellHost();
        string line = "Measure-ModelLatency ./models/wine_mlp.onnx -Provider ";
        var completion = ps.Run("[System.Management.Automation.CommandCompletion]::CompleteInput($line, $line.Length, $null)",
            new Dictionary<string, object?> { ["line"] = line }).Single().BaseObject as CommandCompletion;
        Assert.NotNull(completion);
        Assert.Contains(completion!.CompletionMatches, m => m.CompletionText == "CPU");
    }

    [Fact]
    public void StoppingTheMeasurementEndsItPromptly()
    {
        using var ps = new PowerShellHost();
        ps.Shell.Commands.Clear();
        ps.Shell.AddScript("Measure-ModelLatency ./models/wine_mlp.onnx -Duration 60 -Warmup 0");
        var async = ps.Shell.BeginInvoke();
        Thread.Sleep(1500);
        var sw = Stopwatch.StartNew();
        ps.Shell.Stop();
        Assert.True(async.AsyncWaitHandle.WaitOne(TimeSpan.FromSeconds(10)));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"stopping took {sw.Elapsed}");
        Assert.Equal(PSInvocationState.Stopped, ps.Shell.InvocationStateInfo.State);
    }

    [Fact]
    public void CompareModelAgainstItselfOnLabelledData()
    {
        using var ps = new PowerShellHost();
        var r = ps.Run("Get-Model ./models/wine_mlp.onnx | Compare-Model -Reference ./models/wine_mlp.onnx -InputData ./data/wine_test.npz -MinCosine 0.9999 -MaxAccuracyDrop 0 -MinTop1Agreement 1").Single();
        Assert.Empty(ps.Streams.Error);
        Assert.Equal("ModelCompression.ModelComparisonReport", r.BaseObject.GetType().FullName);
        Assert.Equal(true, Prop(r, "Passed"));
        Assert.Equal(1.0, (double)Prop(r, "SizeRatio")!);
        Assert.Equal(1.0, (double)Prop(r, "Cosine")!, 9);
        Assert.Equal(0.0, (double?)Prop(r, "AccuracyDrop"));
        var outputs = (Array)Prop(r, "Outputs")!;
        Assert.Single(outputs.Cast<object>());
        Assert.Contains("labelled", (string)Prop(r, "InputSource")!);
    }

    /// <summary>A copy of the wine model with 40 KB of its 256x256 weight zeroed: valid ONNX, different outputs.</summary>
    static string DamagedModel(TempDir tmp)
    {
        var bytes = File.ReadAllBytes(Path.Combine(PowerShellHost.RepoRoot, "models", "wine_mlp.onnx"));
        Array.Clear(bytes, 100_000, 40_000);
        string path = tmp.File("damaged.onnx");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Fact]
    public void MissedGatesWriteErrorsWithStableIdsAfterTheReport()
    {
        using var tmp = new TempDir();
        using var ps = new PowerShellHost();
        var vars = new Dictionary<string, object?> { ["damaged"] = DamagedModel(tmp) };
        var output = ps.Run("Compare-Model ./models/wine_mlp.onnx $damaged -InputData ./data/wine_test.npz -MinCosine 0.99999 -MaxAccuracyDrop 0.5", vars);
        var r = Assert.Single(output);
        Assert.Equal(false, Prop(r, "Passed"));
        Assert.True((double)Prop(r, "Cosine")! < 0.99999);
        var e = Assert.Single(ps.Streams.Error);
        Assert.Equal("CosineBelowMinimum", e.FullyQualifiedErrorId.Split(',')[0]);
        Assert.Equal(ErrorCategory.InvalidResult, e.CategoryInfo.Category);
        Assert.Equal("ModelCompression.ModelGateException", e.Exception.GetType().FullName);

        // With Stop the step fails, and -OutVariable still holds the report.
        var caught = ps.Run("try { Compare-Model ./models/wine_mlp.onnx $damaged -MinCosine 0.99999 -OutVariable rep -ErrorAction Stop | Out-Null; 'no error' } catch { $_.FullyQualifiedErrorId; $rep[0].Passed }", vars);
        Assert.Equal("CosineBelowMinimum,ModelCompression.CompareModelCommand", caught[0].ToString());
        Assert.Equal(false, caught[1].BaseObject);
    }

    [Fact]
    public void AccuracyGateWithoutLabelsIsAnError()
    {
        using var ps = new PowerShellHost();
        var output = ps.Run("Compare-Model ./models/wine_mlp.onnx ./models/wine_mlp.onnx -MaxAccuracyDrop 0.01");
        Assert.Empty(output);
        Assert.Equal("AccuracyGateRequiresLabels", Assert.Single(ps.ErrorIds));
    }

    [SharedFact]
    public void CompareModelSynthesizesInputsWithShapesAndIntegerRange()
    {
        using var ps = new PowerShellHost();
        var vars = new Dictionary<string, object?> { ["bert"] = Path.Combine(PowerShellHost.SharedRoot, "models", "tiny_bert.onnx") };
        string dim = ps.Run("(Get-ModelInfo $bert).Inputs[0].Shape[1]", vars).Single().ToString()!;
        ps.Run("Compare-Model $bert $bert -BatchSize 2", vars);
        Assert.Equal("InputDimensionUnresolved", Assert.Single(ps.ErrorIds));
        var r = ps.Run($"Compare-Model $bert $bert -BatchSize 2 -InputShape @{{ {dim} = 16 }} -IntegerRange 0,50 -MinCosine 0.9999", vars).Single();
        Assert.Empty(ps.Streams.Error);
        Assert.Equal("Synthesized (4 batches of 2)", Prop(r, "InputSource"));
        Assert.Equal(8L, Prop(r, "Rows"));
        Assert.Equal(1.0, (double)Prop(r, "Cosine")!, 6);
        ps.Run("Compare-Model $bert $bert -IntegerRange 5,5 -InputShape @{ input_ids = 1,8 }", vars);
        Assert.Equal("IntegerRangeInvalid", Assert.Single(ps.ErrorIds));
    }
}
