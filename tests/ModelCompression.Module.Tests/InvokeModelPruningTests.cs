using System.Management.Automation;

namespace ModelCompression.Module.Tests;

public class InvokeModelPruningTests
{
    [Fact]
    public void GlobalMagnitudeReturnsANewSparseModelAndLeavesTheInputAlone()
    {
        using var ps = new PowerShellHost();
        var result = ps.Run("$m = Get-Model ./models/wine_mlp.onnx; $p = $m | Invoke-ModelPruning -Rate 0.5 -Scope Global; $p; $m; ($p | Get-ModelInfo).Sparsity; ($m | Get-ModelInfo).Sparsity");
        Assert.Empty(ps.Streams.Error);
        Assert.Equal(4, result.Count);
        var pruned = result[0];
        Assert.Equal("ModelCompression.Model", pruned.BaseObject.GetType().FullName);
        Assert.Equal("Pruning", pruned.Properties["Stages"].Value);
        Assert.Equal("", result[1].Properties["Stages"].Value);
        var report = (PSObject)PSObject.AsPSObject(pruned.Properties["Report"].Value);
        var metrics = (Dictionary<string, double>)report.Properties["Metrics"].Value;
        Assert.InRange(metrics["Sparsity"], 0.495, 0.505);
        Assert.True((double)result[2].BaseObject > 0.45);
        Assert.True((double)result[3].BaseObject < 0.01);
        Assert.NotEmpty(ps.Streams.Progress);
        Assert.Contains(ps.Streams.Warning, w => w.Message.Contains("left unpruned"));
    }

    [Fact]
    public void StructuredPruningShrinksTheModelAndTheExportedFileLoadsBack()
    {
        using var tmp = new TempDir();
        using var ps = new PowerShellHost(tmp.Path);
        var result = ps.Run("$s = Invoke-ModelPruning $p -Rate 0.75 -Structured; $s | Export-Model ./small.onnx | Out-Null; $s.SizeBytes; (Get-Model ./small.onnx).Parameters; (Get-Model ./small.onnx).History[-1].Parameters['Method']",
            new Dictionary<string, object?> { ["p"] = Path.Combine(PowerShellHost.RepoRoot, "models", "wine_mlp.onnx") });
        Assert.Empty(ps.Streams.Error);
        Assert.True((long)result[0].BaseObject < 281293 / 3, $"size {result[0]}");
        // 13→64→64→3: 13*64+64 + 64*64+64 + 64*3+3
        Assert.Equal(13L * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3, result[1].BaseObject);
        Assert.Equal("Structured", result[2].BaseObject);
    }

    [Fact]
    public void OptionsThatDoNotApplyOrAreOutOfRangeAreRefused()
    {
        (string Arguments, string ErrorId)[] cases =
        [
            ("-Rate 1", "PruningRateOutOfRange"),
            ("-Rate -0.2", "PruningRateOutOfRange"),
            ("-Pattern 4:4", "PruningPatternInvalid"),
            ("-Pattern 2-4", "PruningPatternInvalid"),
            ("-Rate 0.5 -Seed 3", "PruningOptionConflict"),
            ("-Rate 0.5 -Structured -Seed 2", "PruningOptionConflict"),
            ("-Rate 0.5 -CalibrationData ./data/wine_train.npz", "PruningOptionConflict"),
            ("-Rate 0.5 -Criterion Activation", "PruningCalibrationDataRequired"),
            ("-Rate 0.5 -Criterion Activation -CalibrationData ./data/missing.npz", "DataFileNotFound"),
            ("-Rate 0.5 -Pattern 2:4", "AmbiguousParameterSet"),
            ("-Pattern 2:4 -Structured", "AmbiguousParameterSet"),
            ("-Pattern 2:4 -Scope Global", "AmbiguousParameterSet"),
            ("-Rate 0.999 -Structured -MinElements 0", "PruningWouldEmptyLayer"),
            ("-Rate 0.5 -Target Heads", "PruningOptionConflict"),
            ("-Rate 0.5 -HiddenRate 0.5", "PruningOptionConflict"),
            ("-Structured -Target Ffn -HeadRate 0.5", "PruningOptionConflict"),
            ("-Structured -FfnRate 1.5", "PruningRateOutOfRange"),
            ("-Structured", "PruningRateRequired"),
            ("-Structured -Rate 0.5 -Target Depth", "ParameterArgumentValidationError"),
            ("-Structured -Rate 0.5 -Target Heads", "PruningNoPrunableChannels"),
            ("-RemoveBlocks 0 -CalibrationData ./data/wine_train.npz", "PruningRemoveBlocksInvalid"),
            ("-RemoveBlocks 1", "PruningCalibrationDataRequired"),
            ("-RemoveBlocks 1 -RemoveBlockName x -CalibrationData ./data/wine_train.npz", "PruningOptionConflict"),
            ("-Rate 0.5 -RemoveBlockName x", "PruningOptionConflict"),
            ("-Pattern 2:4 -RemoveBlockName x", "AmbiguousParameterSet"),
            ("-RemoveBlockName x", "PruningNoBlocks"),
        ];
        using var ps = new PowerShellHost();
        foreach (var (arguments, errorId) in cases)
        {
            string? id = null;
            try
            {
                var result = ps.Run($"Get-Model ./models/wine_mlp.onnx | Invoke-ModelPruning {arguments}");
                Assert.Empty(result);
                id = ps.ErrorIds.FirstOrDefault();
            }
            catch (RuntimeException e)
            {
                id = e.ErrorRecord.FullyQualifiedErrorId;
            }
            Assert.True(id?.StartsWith(errorId, StringComparison.Ordinal) == true, $"{arguments}: expected {errorId}, got {id ?? "no error"}");
        }
    }

    [SharedFact]
    public void TransformerPartsAndBlocksFromTheCommandLine()
    {
        using var ps = new PowerShellHost();
        var result = ps.Run(
            "$lm = Get-Model $p; " +
            "$a = $lm | Invoke-ModelPruning -Structured -Target Heads, Ffn -Rate 0.5; " +
            "$b = $lm | Invoke-ModelPruning -RemoveBlockName 'blocks.3' -Structured -HiddenRate 0.25 -Verbose; " +
            "$a.Report.Metrics['HeadsAfter']; $a.Report.Metrics['HiddenAfter']; $a.Report.Metrics['FfnAfter']; $a.History[-1].Parameters['Target']; " +
            "$b.Report.Metrics['BlocksRemoved']; $b.Report.Metrics['HiddenAfter']; $b.Report.Metrics['FfnAfter']; $b.History[-1].Parameters['RemoveBlockName']; " +
            "($b.Report.Entries | Where-Object OpType -eq 'Block' | Where-Object Action -eq 'Removed').Target; $b.SizeBytes -lt $lm.SizeBytes",
            new Dictionary<string, object?> { ["p"] = Path.Combine(PowerShellHost.SharedRoot, "models", "tiny_lm.onnx") });
        Assert.Empty(ps.Streams.Error);
        Assert.Equal([8.0, 256.0, 2048.0], result.Take(3).Select(r => (double)r.BaseObject));
        Assert.Equal("Heads,Ffn", result[3].BaseObject);
        Assert.Equal([1.0, 192.0, 3072.0], result.Skip(4).Take(3).Select(r => (double)r.BaseObject));
        Assert.Equal("blocks.3", result[7].BaseObject);
        Assert.Equal("blocks.3", result[8].BaseObject);
        Assert.True((bool)result[9].BaseObject);
        Assert.Contains(ps.Streams.Verbose, v => v.Message.Contains("Not exact for the kept channels"));
    }
}
