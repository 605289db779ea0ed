using System.Management.Automation;

namespace ModelCompression.Module.Tests;

public class QuantizationCmdletTests
{
    [Fact]
    public void DynamicQuantizationReturnsANewModelWithHistoryAndReport()
    {
        using var ps = new PowerShellHost();
        var result = ps.Run("$m = Get-Model ./models/wine_mlp.onnx; $q = $m | Invoke-ModelQuantization -Mode Dynamic -PerChannel; $m; $q");
        Assert.Empty(ps.Streams.Error);
        Assert.Equal(2, result.Count);
        var (m, q) = (result[0], result[1]);
        Assert.Equal("ModelCompression.Model", q.BaseObject.GetType().FullName);
        Assert.True((long)q.Properties["SizeBytes"].Value < 0.3 * (long)m.Properties["SizeBytes"].Value);
        Assert.Equal("Quantize", q.Properties["Stages"].Value);
        Assert.Equal("", m.Properties["Stages"].Value); // input untouched
        var metrics = (Dictionary<string, double>)ps.Run("$q.Report.Metrics").Single().BaseObject;
        Assert.Equal(3, metrics["Quantized.Gemm"]);
        var parameters = ps.Run("$q.History[0].Parameters['PerChannel']").Single();
        Assert.Equal("True", parameters.ToString());
    }

    [Fact]
    public void ParametersThatDoNotApplyToTheModeAreRefused()
    {
        using var ps = new PowerShellHost();
        ps.Run("Get-Model ./models/wine_mlp.onnx | Invoke-ModelQuantization -Mode Dynamic -Bits 4");
        Assert.Equal(["QuantizationParameterNotApplicable"], ps.ErrorIds);
        Assert.Equal(ErrorCategory.InvalidArgument, ps.Streams.Error[0].CategoryInfo.Category);
        Assert.Contains("-Bits", ps.Streams.Error[0].Exception.Message);
        ps.Run("Get-Model ./models/wine_mlp.onnx | Invoke-ModelQuantization -Mode Float16 -CalibrationData ./data/wine_train.npz");
        Assert.Equal(["QuantizationParameterNotApplicable"], ps.ErrorIds);
        ps.Run("Get-Model ./models/wine_mlp.onnx | Invoke-ModelQuantization -Mode Static");
        Assert.Equal(["QuantizationCalibrationDataMissing"], ps.ErrorIds);
    }

    [Fact]
    public void AlreadyQuantizedIsRefusedUnlessForced()
    {
        using var ps = new PowerShellHost();
        ps.Run("$q = Get-Model ./models/wine_mlp.onnx | Invoke-ModelQuantization -ExcludeNode '/fc3/*'; $q | Invoke-ModelQuantization");
        Assert.Equal(["ModelAlreadyQuantized"], ps.ErrorIds);
        var forced = ps.Run("$q | Invoke-ModelQuantization -Force");
        Assert.Empty(ps.Streams.Error);
        Assert.Equal("Quantize > Quantize", forced.Single().Properties["Stages"].Value);
    }

    [Fact]
    public void StaticCalibratesFromAFileWithProgressAndExports()
    {
        using var tmp = new TempDir();
        using var ps = new PowerShellHost();
        var file = ps.Run("Get-Model ./models/wine_mlp.onnx | Invoke-ModelQuantization -Mode Static -CalibrationData ./data/wine_train.npz -CalibrationBatchSize 16 | Export-Model $p -PassThru",
            new Dictionary<string, object?> { ["p"] = tmp.File("wine_static.onnx") });
        Assert.Empty(ps.Streams.Error);
        Assert.Single(file);
        Assert.Contains(ps.Streams.Progress, p => p.StatusDescription.StartsWith("Calibrating", StringComparison.Ordinal));
        var info = ps.Run("Get-ModelInfo $p", new Dictionary<string, object?> { ["p"] = tmp.File("wine_static.onnx") }).Single();
        var ops = (Dictionary<string, int>)info.Properties["Operators"].Value;
        Assert.True(ops.ContainsKey("QuantizeLinear") && ops.ContainsKey("DequantizeLinear"));
    }

    [Fact]
    public void StaticTargetCosineIsMeasuredReportedAndRefusedElsewhere()
    {
        using var ps = new PowerShellHost();
        ps.Run("$q = Get-Model ./models/wine_mlp.onnx | Invoke-ModelQuantization -Mode Static -CalibrationData ./data/wine_train.npz -TargetCosine 0.999");
        Assert.Empty(ps.Streams.Error);
        var metrics = (Dictionary<string, double>)ps.Run("$q.Report.Metrics").Single().BaseObject;
        Assert.True(metrics["CosineReached"] >= 0.999, $"cosine {metrics["CosineReached"]}");
        Assert.Equal(0.999, metrics["TargetCosine"]);
        Assert.Equal("0.999", ps.Run("$q.History[-1].Parameters['TargetCosine']").Single().ToString());
        ps.Run("Get-Model ./models/wine_mlp.onnx | Invoke-ModelQuantization -Mode Dynamic -TargetCosine 0.99");
        Assert.Equal(["QuantizationParameterNotApplicable"], ps.ErrorIds);
        ps.Run("Get-Model ./models/wine_mlp.onnx | Invoke-ModelQuantization -Mode Static -CalibrationData ./data/wine_train.npz -TargetCosine 1");
        Assert.Equal(["QuantizationTargetCosineNotMet"], ps.ErrorIds);
        Assert.Equal(ErrorCategory.InvalidOperation, ps.Streams.Error[0].CategoryInfo.Category);
    }

    [Fact]
    public void DynamicOnAConvOnlyModelExplainsWhyNothingWasQuantized()
    {
        if (!PowerShellHost.SharedAvailable) return;
        using var ps = new PowerShellHost();
        ps.Run("Get-Model $p | Invoke-ModelQuantization -Mode Dynamic",
            new Dictionary<string, object?> { ["p"] = Path.Combine(PowerShellHost.SharedRoot, "models", "ch_PP-OCRv4_det_infer.onnx") });
        Assert.Equal(["QuantizationNothingToQuantize"], ps.ErrorIds);
        Assert.Contains("Conv", ps.Streams.Error[0].Exception.Message);
    }

    [Fact]
    public void WeightOnlyAndFloat16WorkFromTheCmdlet()
    {
        using var ps = new PowerShellHost();
        var sizes = ps.Run("$m = Get-Model ./models/wine_mlp.onnx; ($m | Invoke-ModelQuantization -Mode WeightOnly -Bits 4 -BlockSize 16).SizeBytes; ($m | Invoke-ModelQuantization -Mode Float16 -StorageOnly).SizeBytes; $m.SizeBytes")
            .Select(o => (long)o.BaseObject).ToArray();
        Assert.Empty(ps.Streams.Error);
        Assert.True(sizes[0] < 0.2 * sizes[2]);
        Assert.True(sizes[1] < 0.52 * sizes[2]);
    }

    [Fact]
    public void OptimizeModelReturnsAModelAndWarnsForProviderSpecificLevels()
    {
        using var ps = new PowerShellHost();
        var basic = ps.Run("Get-Model ./models/wine_mlp.onnx | Optimize-Model");
        Assert.Empty(ps.Streams.Error);
        Assert.Empty(ps.Streams.Warning);
        Assert.Equal("Optimize", basic.Single().Properties["Stages"].Value);
        ps.Run("Get-Model ./models/wine_mlp.onnx | Optimize-Model -Level All");
        Assert.Empty(ps.Streams.Error);
        Assert.Contains(ps.Streams.Warning, w => w.Message.Contains("CPU", StringComparison.Ordinal));
        ps.Run("Get-Model ./models/wine_mlp.onnx | Optimize-Model -ExecutionProvider NoSuchProvider");
        Assert.Equal(["ExecutionProviderUnavailable"], ps.ErrorIds);
    }
}
