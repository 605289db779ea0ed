using System.Management.Automation;
using System.Text.RegularExpressions;

namespace ModelCompression.Module.Tests;

/// <summary>Help as a user meets it: Get-Help -Full from the built MAML, and the docs kept in step with the code.</summary>
public class HelpTests
{
    // -WhatIf and -Confirm are documented on the page (PlatyPS does too); the other common parameters are not.
    static readonly string[] CommonParameters = [.. PSCmdlet.CommonParameters];

    public static IEnumerable<object[]> Cmdlets()
    {
        using var ps = new PowerShellHost();
        return ps.Run("(Get-Module ModelCompression).ExportedCmdlets.Keys").Select(o => new object[] { o.ToString() }).ToList();
    }

    [Theory]
    [MemberData(nameof(Cmdlets))]
    public void GetHelpFullShowsSynopsisParametersAndExamples(string cmdlet)
    {
        using var ps = new PowerShellHost();
        var help = ps.Run($"Get-Help {cmdlet} -Full").Single();
        Assert.Empty(ps.Streams.Error);
        string synopsis = help.Properties["Synopsis"].Value?.ToString()?.Trim() ?? "";
        Assert.False(synopsis.Length == 0 || synopsis.StartsWith(cmdlet + " ", StringComparison.Ordinal), $"{cmdlet} has no synopsis in its help: '{synopsis}'");

        var documented = ps.Run($"(Get-Help {cmdlet} -Full).parameters.parameter | ForEach-Object {{ $_.name }}").Select(o => o.ToString()).ToHashSet();
        var inCode = ps.Run($"(Get-Command {cmdlet}).Parameters.Keys").Select(o => o.ToString()!).Where(p => !CommonParameters.Contains(p)).ToHashSet();
        Assert.True(inCode.SetEquals(documented),
            $"{cmdlet}: parameters in code but not documented: [{string.Join(", ", inCode.Except(documented))}]; documented but not in code: [{string.Join(", ", documented.Except(inCode))}]");
        foreach (var p in inCode)
        {
            var text = ps.Run($"(Get-Help {cmdlet} -Parameter {p}).description.Text -join ' '").SingleOrDefault()?.ToString() ?? "";
            Assert.False(string.IsNullOrWhiteSpace(text), $"{cmdlet} -{p} has no description");
        }
        var examples = ps.Run($"(Get-Help {cmdlet} -Examples).examples.example").ToList();
        Assert.NotEmpty(examples);
    }

    [Fact]
    public void AboutTopicIsInstalled()
    {
        using var ps = new PowerShellHost();
        var text = string.Join("\n", ps.Run("Get-Help about_ModelCompression").Select(o => o.ToString()));
        Assert.Contains("ModelCompression", text);
        Assert.Contains("Get-Model", text);
    }

    public static IEnumerable<object[]> Examples()
    {
        foreach (var file in Directory.EnumerateFiles(Path.Combine(PowerShellHost.RepoRoot, "docs", "en-US"), "*-*.md").Order())
        {
            string text = File.ReadAllText(file).Replace("\r\n", "\n");
            int start = text.IndexOf("\n## EXAMPLES", StringComparison.Ordinal), end = text.IndexOf("\n## PARAMETERS", StringComparison.Ordinal);
            if (start < 0 || end < start) continue;
            int n = 0;
            foreach (Match m in Regex.Matches(text[start..end], "```powershell\n(.*?)```", RegexOptions.Singleline))
                yield return [Path.GetFileNameWithoutExtension(file), ++n, m.Groups[1].Value];
        }
    }

    /// <summary>
    /// Every example in the docs runs without an error in a scratch folder holding the repository's models and data
    /// (examples that need ../shared skip when it is absent).
    /// </summary>
    [Theory]
    [MemberData(nameof(Examples))]
    public void DocumentedExamplesRun(string page, int number, string code)
    {
        if (code.Contains("../shared", StringComparison.Ordinal) && !PowerShellHost.SharedAvailable) return;
        using var tmp = new TempDir();
        foreach (var folder in new[] { "models", "data" })
        {
            Directory.CreateDirectory(tmp.File(folder));
            foreach (var f in Directory.EnumerateFiles(Path.Combine(PowerShellHost.RepoRoot, folder)))
                File.Copy(f, Path.Combine(tmp.File(folder), Path.GetFileName(f)));
        }
        using var ps = new PowerShellHost(tmp.Path);
        // Examples that train for hundreds of steps (minutes) run two here: the code path is the same, and the
        // figures their text quotes are measured by the benches (docs/performance.md).
        code = Regex.Replace(code, @"-MaxSteps \d+", "-MaxSteps 2");
        ps.Run(code.Replace("../shared", PowerShellHost.SharedRoot, StringComparison.Ordinal));
        Assert.True(ps.Streams.Error.Count == 0,
            $"{page} example {number} failed: {string.Join("; ", ps.Streams.Error.Select(e => e.FullyQualifiedErrorId + ": " + e))}");
    }
}
