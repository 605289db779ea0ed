using System.Globalization;
using System.Management.Automation;
using System.Text;

namespace ModelCompression.Module.Tests;

/// <summary>Invoke-Distillation as a user meets it: output, history and report, progress, errors, Ctrl+C.</summary>
public class DistillationTests
{
    const string Train = "./data/wine_train.npz";
    const string Test = "./data/wine_test.npz";

    [Fact]
    public void DistilsTheWineTeacherIntoASmallStudentWithProgressPerEpoch()
    {
        using var ps = new PowerShellHost();
        var result = ps.Run($"Invoke-Distillation -Teacher ./models/wine_mlp.onnx -HiddenLayers 256 -TrainingData {Train} -ValidationData {Test} " +
            "-Epochs 60 -BatchSize 16 -LearningRate 0.01 -Schedule Cosine -Seed 2");
        Assert.Empty(ps.Streams.Error);
        var model = Assert.Single(result);
        Assert.Equal("ModelCompression.Model", model.BaseObject.GetType().FullName);
        Assert.Equal(4355L, model.Properties["Parameters"].Value);
        Assert.Equal("Distillation", model.Properties["Stages"].Value);
        var report = (PSObject)PSObject.AsPSObject(model.Properties["Report"].Value);
        var metrics = (IDictionary<string, double>)report.Properties["Metrics"].Value;
        Assert.Equal(1.0, metrics["TeacherValidationAccuracy"]);
        Assert.True(metrics["Epoch60.ValidationAccuracy"] >= 0.985, $"student accuracy {metrics["Epoch60.ValidationAccuracy"]}");
        Assert.Equal(60, ((Array)report.Properties["Entries"].Value).Length);
        var epochs = ps.Streams.Progress.Where(p => p.StatusDescription.StartsWith("epoch ", StringComparison.Ordinal)).ToList();
        Assert.Equal(60, epochs.Count);
        Assert.Contains("validation accuracy", epochs[^1].StatusDescription);
        Assert.Equal(100, epochs[^1].PercentComplete);
        Assert.Contains(ps.Streams.Progress, p => p.RecordType == ProgressRecordType.Completed);

        // the student exported and reloaded keeps its history
        using var tmp = new TempDir();
        ps.Run("$s | Export-Model $p | Out-Null; (Get-Model $p).History[-1].Parameters['Temperature']",
            new Dictionary<string, object?> { ["s"] = model, ["p"] = tmp.File("student.onnx") });
        Assert.Empty(ps.Streams.Error);
        Assert.Equal("4", ps.Run("(Get-Model $p).History[-1].Parameters['Temperature']", new Dictionary<string, object?> { ["p"] = tmp.File("student.onnx") }).Single().ToString());
    }

    /// <summary>
    /// The issue's pipeline on breast cancer: structured pruning to a quarter of the width costs the model accuracy
    /// (92.4 % against the teacher's 96.5 %); distillation from the original brings it back within 1.5 points.
    /// </summary>
    [SharedFact]
    public void PrunedModelRecoversItsAccuracyByDistillation()
    {
        using var ps = new PowerShellHost();
        using var tmp = new TempDir();
        var vars = new Dictionary<string, object?>
        {
            ["m"] = Path.Combine(PowerShellHost.SharedRoot, "models", "breast_cancer_mlp.onnx"),
            ["train"] = Path.Combine(PowerShellHost.SharedRoot, "data", "breast_cancer_train.npz"),
            ["test"] = Path.Combine(PowerShellHost.SharedRoot, "data", "breast_cancer_test.npz"),
            ["p"] = tmp.File("student.onnx"),
        };
        var result = ps.Run("$t = Get-Model $m; " +
            "$pruned = $t | Invoke-ModelPruning -Structured -Rate 0.75 -WarningAction SilentlyContinue; " +
            "$before = (Compare-Model $t $pruned -InputData $test).Outputs[0]; " +
            "$student = $pruned | Invoke-Distillation -Teacher $t -TrainingData $train -ValidationData $test -Epochs 40 -BatchSize 16 -LearningRate 0.003 -Schedule Cosine; " +
            "$after = (Compare-Model $t $student -InputData $test).Outputs[0]; " +
            "$student | Export-Model $p | Out-Null; " +
            "$pruned.Parameters; $student.Parameters; $student.Stages; $before.DifferenceAccuracy; $after.DifferenceAccuracy; $after.ReferenceAccuracy", vars);
        Assert.Empty(ps.Streams.Error);
        var v = result.Select(o => o.BaseObject).ToList();
        Assert.Equal((long)v[0], (long)v[1]);
        Assert.True((long)v[1] * 4 <= 74242, $"student has {v[1]} parameters");
        Assert.Equal("Pruning > Distillation", v[2]!.ToString());
        double pruned = (double)v[3], distilled = (double)v[4], teacher = (double)v[5];
        Assert.True(pruned < teacher - 0.015, $"pruning alone keeps {pruned:P2} against {teacher:P2}: nothing to recover");
        Assert.True(distilled >= teacher - 0.015, $"distilled {distilled:P2} vs teacher {teacher:P2}");
        Assert.True(File.Exists(tmp.File("student.onnx")));
    }

    [Fact]
    public void StudentFromThePipelineTrainsAndTheInputIsUnchanged()
    {
        using var ps = new PowerShellHost();
        var result = ps.Run($"$draft = Invoke-Distillation -Teacher ./models/wine_mlp.onnx -HiddenLayers 16 -TrainingData {Train} -Epochs 1; " +
            $"$next = $draft | Invoke-Distillation -Teacher ./models/wine_mlp.onnx -TrainingData {Train} -Epochs 2 -Optimizer SGD -LearningRate 0.05; " +
            "$draft.Stages; $next.Stages");
        Assert.Empty(ps.Streams.Error);
        Assert.Equal(["Distillation", "Distillation > Distillation"], result.Select(o => o.ToString()));
    }

    static void WriteCsv(string path, int columns, Func<int, int> label)
    {
        var sb = new StringBuilder(string.Join(",", Enumerable.Range(0, columns).Select(i => "f" + i)) + ",label\n");
        var rng = new Random(1);
        for (int r = 0; r < 20; r++)
            sb.Append(string.Join(",", Enumerable.Range(0, columns).Select(_ => (rng.NextDouble() - 0.5).ToString("F3", CultureInfo.InvariantCulture)))).Append(',').Append(label(r)).Append('\n');
        File.WriteAllText(path, sb.ToString());
    }

    [Fact]
    public void BadInputIsAnErrorWithAStableIdBeforeTraining()
    {
        using var tmp = new TempDir();
        WriteCsv(tmp.File("narrow.csv"), 7, r => r % 3);
        WriteCsv(tmp.File("labels.csv"), 13, r => r % 5);
        using var ps = new PowerShellHost();
        ps.Run("Invoke-Distillation -Teacher ./models/wine_mlp.onnx -HiddenLayers 8 -TrainingData $p -Epochs 1", new Dictionary<string, object?> { ["p"] = tmp.File("narrow.csv") });
        Assert.Equal(["DataShapeMismatch"], ps.ErrorIds);
        Assert.DoesNotContain(ps.Streams.Progress, p => p.StatusDescription.StartsWith("epoch", StringComparison.Ordinal));
        ps.Run("Invoke-Distillation -Teacher ./models/wine_mlp.onnx -HiddenLayers 8 -TrainingData $p -Epochs 1", new Dictionary<string, object?> { ["p"] = tmp.File("labels.csv") });
        Assert.Equal(["LabelOutOfRange"], ps.ErrorIds);
        ps.Run($"Invoke-Distillation -Teacher ./models/wine_mlp.onnx -HiddenLayers 8 -TrainingData {Train} -Alpha 2");
        Assert.Equal(["AlphaOutOfRange"], ps.ErrorIds);
        ps.Run($"Invoke-Distillation -Teacher ./models/wine_mlp.onnx -HiddenLayers 8 -TrainingData ./data/missing.npz");
        Assert.Equal(["DataFileNotFound"], ps.ErrorIds);
        ps.Run($"Invoke-Distillation -Teacher ./models/wine_mlp.onnx -HiddenLayers 8 -TrainingData {Train} -Epochs 1 -Freeze nothing");
        Assert.Equal(["FreezeTensorNotFound"], ps.ErrorIds);
    }

    [SharedFact]
    public void TeacherAndStudentThatDisagreeAreRefused()
    {
        using var ps = new PowerShellHost();
        ps.Run($"Get-Model $p | Invoke-Distillation -Teacher ./models/wine_mlp.onnx -TrainingData {Train} -Epochs 1",
            new Dictionary<string, object?> { ["p"] = Path.Combine(PowerShellHost.SharedRoot, "models", "breast_cancer_mlp.onnx") });
        Assert.Equal(["DistillationInputMismatch"], ps.ErrorIds);
        ps.Run($"Get-Model $p | Invoke-Distillation -Teacher ./models/wine_mlp.onnx -TrainingData {Train} -Epochs 1",
            new Dictionary<string, object?> { ["p"] = Path.Combine(PowerShellHost.SharedRoot, "models", "tiny_bert.onnx") });
        Assert.NotEmpty(ps.ErrorIds);
    }

    [Fact]
    public void WarnsAboutOptionsThatDoNotApply()
    {
        using var ps = new PowerShellHost();
        ps.Run($"Invoke-Distillation -Teacher ./models/wine_mlp.onnx -HiddenLayers 8 -TrainingData {Train} -Epochs 1 -Loss MSE -Temperature 2 -Momentum 0.5 | Out-Null");
        Assert.Empty(ps.Streams.Error);
        Assert.Equal(2, ps.Streams.Warning.Count);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void CtrlCStopsAndKeepsTheBestStudentOnlyWithPartial(bool partial)
    {
        using var ps = new PowerShellHost();
        ps.Shell.Commands.Clear();
        ps.Shell.AddScript($"Invoke-Distillation -Teacher ./models/wine_mlp.onnx -HiddenLayers 64 -TrainingData {Train} -ValidationData {Test} -Epochs 100000 -BatchSize 4" + (partial ? " -Partial" : ""));
        int epochs = 0;
        ps.Shell.Streams.Progress.DataAdded += (s, e) =>
        {
            var record = ((PSDataCollection<ProgressRecord>)s!)[e.Index];
            if (record.StatusDescription.StartsWith("epoch ", StringComparison.Ordinal) && Interlocked.Increment(ref epochs) == 3) ps.Shell.BeginStop(null, null);
        };
        var output = new PSDataCollection<PSObject>();
        var async = ps.Shell.BeginInvoke<PSObject, PSObject>(null, output);
        Assert.ThrowsAny<PipelineStoppedException>(() => ps.Shell.EndInvoke(async));
        Assert.Empty(output);
        Assert.True(epochs >= 3);
        var kept = ps.Run("$DistillationPartial").SingleOrDefault();
        if (!partial) Assert.Null(kept);
        else
        {
            Assert.NotNull(kept);
            Assert.Equal("ModelCompression.Model", kept!.BaseObject.GetType().FullName);
            Assert.Equal("true", ps.Run("$DistillationPartial.History[-1].Parameters['Partial']").Single().ToString());
        }
    }
}
