using System.Globalization;
using System.IO.Compression;
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

    // ---------------------------------------------------------------- language models

    static string Shared(string folder, string file) => Path.Combine(PowerShellHost.SharedRoot, folder, file);

    /// <summary>A version-1 .npy of int64 values with the given shape.</summary>
    static byte[] Npy(long[] values, params long[] shape)
    {
        string header = $"{{'descr': '<i8', 'fortran_order': False, 'shape': ({string.Join(", ", shape)}{(shape.Length == 1 ? "," : "")}), }}";
        header += new string(' ', (16 - (10 + header.Length + 1) % 16) % 16) + "\n";
        var bytes = new List<byte> { 0x93 };
        bytes.AddRange("NUMPY\u0001\u0000"u8.ToArray());
        bytes.AddRange([(byte)header.Length, (byte)(header.Length >> 8)]);
        bytes.AddRange(Encoding.ASCII.GetBytes(header));
        foreach (long v in values) bytes.AddRange(BitConverter.GetBytes(v));
        return [.. bytes];
    }

    /// <summary>
    /// Held-out-style windows for validation: x = <paramref name="rows"/> windows of 128 tokens taken from the start of
    /// tiny_lm_train.npy (int32 after a 128-byte header), y = the next token at each position, or one label per row.
    /// </summary>
    static void WriteWindows(string path, int rows, bool labelPerRow = false)
    {
        using var f = File.OpenRead(Shared("data", "tiny_lm_train.npy"));
        f.Seek(128, SeekOrigin.Begin);
        var raw = new byte[4 * (rows * 128 + 1)];
        f.ReadExactly(raw);
        var tokens = Enumerable.Range(0, raw.Length / 4).Select(i => (long)BitConverter.ToInt32(raw, 4 * i)).ToArray();
        var x = Enumerable.Range(0, rows * 128).Select(i => tokens[i]).ToArray();
        var y = labelPerRow ? Enumerable.Range(0, rows).Select(r => tokens[r]).ToArray() : Enumerable.Range(0, rows * 128).Select(i => tokens[i + 1]).ToArray();
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        using (var s = zip.CreateEntry("x.npy").Open()) s.Write(Npy(x, rows, 128));
        using (var s = zip.CreateEntry("y.npy").Open()) s.Write(labelPerRow ? Npy(y, rows) : Npy(y, rows, 128));
    }

    [SharedFact]
    public void DistilsAPrunedLanguageModelOnTokenWindowsWithProgressPerStep()
    {
        using var tmp = new TempDir();
        WriteWindows(tmp.File("valid.npz"), 8);
        using var ps = new PowerShellHost();
        var vars = new Dictionary<string, object?> { ["m"] = Shared("models", "tiny_lm.onnx"), ["train"] = Shared("data", "tiny_lm_train.npy"), ["valid"] = tmp.File("valid.npz") };
        var result = ps.Run("$t = Get-Model $m; " +
            "$s = $t | Invoke-ModelPruning -Structured -Rate 0.5 -WarningAction SilentlyContinue | Invoke-Distillation -Teacher $t -TrainingData $train -SequenceLength 32 " +
            "-BatchSize 4 -MaxSteps 4 -ValidationInterval 2 -ValidationData $valid -LearningRate 0.0002 -Temperature 1 -Alpha 1; " +
            "$s.Stages; $s.History[-1].Parameters['MaxSteps']; $s.History[-1].Parameters['SequenceLength']; " +
            "$s.Report.Metrics['Step2.ValidationPerplexity']; $s.Report.Metrics['Step4.ValidationPerplexity']; $s.Report.Metrics['TeacherValidationPerplexity']; $s.Report.Metrics['Steps']", vars);
        Assert.Empty(ps.Streams.Error);
        var v = result.Select(o => o.BaseObject).ToList();
        Assert.Equal(["Pruning > Distillation", "4", "32"], v.Take(3).Select(o => o.ToString()));
        double step2 = (double)v[3], step4 = (double)v[4], teacher = (double)v[5];
        Assert.InRange(teacher, 1.5, 10);
        Assert.True(step4 > teacher && step2 > teacher, $"student {step2} / {step4}, teacher {teacher}");
        Assert.Equal(4.0, (double)v[6]);
        var records = ps.Streams.Progress.Where(p => p.StatusDescription.StartsWith("step ", StringComparison.Ordinal) && p.StatusDescription.Contains("validation perplexity")).ToList();
        Assert.Equal(["step 2/4", "step 4/4"], records.Select(p => p.StatusDescription.Split(':')[0]));
        Assert.Equal([50, 100], records.Select(p => p.PercentComplete));
    }

    [SharedFact]
    public void LanguageModelParametersAndDataAreCheckedWithStableIds()
    {
        using var tmp = new TempDir();
        WriteWindows(tmp.File("per-row.npz"), 4, labelPerRow: true);
        File.WriteAllBytes(tmp.File("far.npy"), Npy(Enumerable.Range(0, 400).Select(i => (long)(i == 200 ? 300 : i % 256)).ToArray(), 400));
        using var ps = new PowerShellHost();
        var vars = new Dictionary<string, object?>
        {
            ["m"] = Shared("models", "tiny_lm.onnx"), ["train"] = Shared("data", "tiny_lm_train.npy"), ["test"] = Shared("data", "tiny_lm_test.npz"),
            ["perRow"] = tmp.File("per-row.npz"), ["far"] = tmp.File("far.npy"),
        };
        string[] Ids(string arguments)
        {
            ps.Run("$t = Get-Model $m; $t | Invoke-Distillation -Teacher $t -BatchSize 2 -MaxSteps 1 " + arguments, vars);
            return ps.ErrorIds.ToArray();
        }
        Assert.Equal(["SequenceLengthNeedsTokenData"], Ids("-TrainingData $test -SequenceLength 32"));
        Assert.Equal(["TokenDataNeedsSequenceLength"], Ids("-TrainingData $train"));
        Assert.Equal(["SequenceLengthUnsupported"], Ids("-TrainingData $train -SequenceLength 500"));
        Assert.Equal(["TokenIdOutOfRange"], Ids("-TrainingData $far -SequenceLength 32"));
        Assert.Equal(["LabelShapeMismatch"], Ids("-TrainingData $perRow"));
        Assert.Equal(["LabelShapeMismatch"], Ids("-TrainingData $train -SequenceLength 32 -ValidationData $perRow"));
        foreach (var bad in new[] { "-MaxSteps 0", "-SequenceLength 0", "-ValidationInterval 0" })
        {
            ps.Run("Invoke-Distillation -Teacher $m -HiddenLayers 4 -TrainingData $train " + bad, vars);
            Assert.Equal(["ParameterArgumentValidationError"], ps.ErrorIds);
        }
    }
}
