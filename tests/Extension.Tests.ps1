# The Azure DevOps extension: build.ps1 -Task Extension packages the ModelCompressionGate task with the module into a
# .vsix (npm packages as the lock files pin them), and the task's entry runs the way the agent runs it: node on
# index.js, inputs in INPUT_* variables, agent variables in the environment, pwsh on PATH. It passes good models, fails
# missed gates with one error issue each, and refuses bad input with one issue per problem and no report that passes.
BeforeAll {
    . $PSScriptRoot/Common.ps1
    $HasNode = [bool](Get-Command node -ErrorAction SilentlyContinue) -and [bool](Get-Command npm -ErrorAction SilentlyContinue)
    function Skip-WithoutNode {
        if (-not $HasNode) { Set-ItResult -Skipped -Because 'node and npm are not on PATH (the extension needs Node.js 20 or later)' }
    }
    $ExtensionPath = Join-Path $RepoRoot 'out/extension'
    $TaskEntry = Join-Path $ExtensionPath 'ModelCompressionGate/index.js'
    if ($HasNode) {
        $watch = [Diagnostics.Stopwatch]::StartNew()
        $BuildOutput = Invoke-Pwsh -Command "& '$RepoRoot/build.ps1' -Task Extension -ExtensionPath '$ExtensionPath'"
        $BuildExitCode = $LASTEXITCODE
        $BuildSeconds = $watch.Elapsed.TotalSeconds
        Write-Host ("build.ps1 -Task Extension took {0:F0} s" -f $BuildSeconds)
    }

    # pwsh as the agent has it on PATH: this very PowerShell (under `dotnet pwsh` the process is dotnet running pwsh.dll).
    $Shims = New-Item -ItemType Directory -Force (Join-Path ([IO.Path]::GetTempPath()) "mc-pwsh-$PID")
    $exe = [Environment]::ProcessPath
    $dll = if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet') { "`"$(Join-Path $PSHOME 'pwsh.dll')`"" } else { '' }
    if ($IsWindows) { Set-Content (Join-Path $Shims 'pwsh.cmd') "@`"$exe`" $dll %*" }
    else {
        Set-Content (Join-Path $Shims 'pwsh') "#!/bin/sh`nexec `"$exe`" $dll `"`$@`""
        & chmod +x (Join-Path $Shims 'pwsh')
    }

    # Runs the task's entry as the agent does; returns its output lines and exit code, and where the reports went.
    function Invoke-Task([hashtable] $Inputs) {
        $staging = Join-Path $TestDrive "staging-$([guid]::NewGuid().ToString('N').Substring(0, 8))"
        $environment = @{
            SYSTEM_DEFAULTWORKINGDIRECTORY = $Sources.FullName; BUILD_ARTIFACTSTAGINGDIRECTORY = $staging; AGENT_TEMPDIRECTORY = $TestDrive
            PATH = "$Shims$([IO.Path]::PathSeparator)$env:PATH"
        }
        foreach ($key in $Inputs.Keys) { $environment["INPUT_$($key.ToUpperInvariant())"] = $Inputs[$key] }
        $saved = @{}
        foreach ($key in $environment.Keys) { $saved[$key] = [Environment]::GetEnvironmentVariable($key); [Environment]::SetEnvironmentVariable($key, $environment[$key]) }
        # The task library escapes % and line breaks in what follows a ##vso command.
        try { $lines = @(& node $TaskEntry 2>&1 | ForEach-Object { "$_" -replace '%AZP25', '%' -replace '%0D', "`r" -replace '%0A', "`n" }); $code = $LASTEXITCODE }
        finally { foreach ($key in $saved.Keys) { [Environment]::SetEnvironmentVariable($key, $saved[$key]) } }
        [pscustomobject]@{
            Lines = $lines; ExitCode = $code; Reports = Join-Path $staging 'model-compression'
            Issues = @($lines | Where-Object { $_ -match '^##vso\[task\.(log)?issue type=error' })
            Result = ($lines | Where-Object { $_ -like '##vso`[task.complete*' } | Select-Object -Last 1)
        }
    }
    $Gates = @{ MinCosine = '0.99'; MaxAccuracyDrop = '0.05'; MinTop1Agreement = '0.9'; MaxLatencyRatio = '100'; LatencySeconds = '0.5' }
}

AfterAll { if ($Shims) { Remove-Item -Recurse -Force $Shims -ErrorAction SilentlyContinue } }

Describe 'build.ps1 -Task Extension' {
    It 'packages the task, its npm packages and the module into a .vsix, all of one version' {
        Skip-WithoutNode
        $BuildExitCode | Should -Be 0 -Because ($BuildOutput -join "`n")
        $vsix = @(Get-ChildItem $ExtensionPath -Filter *.vsix)
        $vsix.Count | Should -Be 1
        Add-Type -AssemblyName System.IO.Compression.FileSystem
        $zip = [IO.Compression.ZipFile]::OpenRead($vsix[0].FullName)
        try { $entries = @($zip.Entries.FullName) }
        finally { $zip.Dispose() }
        foreach ($entry in 'extension.vsixmanifest', 'ModelCompressionGate/task.json', 'ModelCompressionGate/index.js', 'ModelCompressionGate/run.ps1',
            'ModelCompressionGate/scripts/Test-CompressionGate.ps1', 'ModelCompressionGate/scripts/Resolve-CompressionStage.ps1',
            'ModelCompressionGate/ModelCompression/ModelCompression.psd1', 'ModelCompressionGate/ModelCompression/Dependencies/ModelCompression.Native.dll',
            'ModelCompressionGate/node_modules/azure-pipelines-task-lib/package.json') {
            $entries | Should -Contain $entry
        }
        $entries | Where-Object { $_ -like '*node_modules/tfx-cli/*' } | Should -BeNullOrEmpty -Because 'tfx-cli packages, it does not ship'
        $version = (Import-PowerShellDataFile (Join-Path $RepoRoot 'ModelCompression.psd1')).ModuleVersion
        $task = Get-Content -Raw (Join-Path $ExtensionPath 'ModelCompressionGate/task.json') | ConvertFrom-Json
        $task.execution.PSObject.Properties.Name | Should -Be 'Node20_1'
        "$($task.version.Major).$($task.version.Minor).$($task.version.Patch)" | Should -Be $version
        (Get-Content -Raw (Join-Path $ExtensionPath 'vss-extension.json') | ConvertFrom-Json).version | Should -Be $version
        (Get-Content -Raw (Join-Path $ExtensionPath 'ModelCompressionGate/node_modules/azure-pipelines-task-lib/package.json') | ConvertFrom-Json).version | Should -BeLike '5.*'
    }
}

Describe 'The ModelCompressionGate task' {
    BeforeAll {
        # A sources folder as an agent checks it out: a wine and a breast-cancer classifier, each with its own test data.
        $Sources = New-Item -ItemType Directory (Join-Path $TestDrive 'sources')
        New-Item -ItemType Directory (Join-Path $Sources 'models'), (Join-Path $Sources 'data') | Out-Null
        if ($SharedAvailable) {
            foreach ($name in 'wine_mlp', 'breast_cancer_mlp') { Copy-Item (Join-Path $SharedRoot "models/$name.onnx") (Join-Path $Sources 'models') }
            foreach ($name in 'wine_test', 'breast_cancer_test') { Copy-Item (Join-Path $SharedRoot "data/$name.npz") (Join-Path $Sources 'data') }
        }
        '{ "wine_mlp": "wine_test.npz", "breast_cancer_mlp": "breast_cancer_test.npz" }' | Set-Content (Join-Path $Sources 'data/gate-data.json')
    }

    It 'passes good models: exit 0, no error issue, summary.json passed, the reports uploaded as an artifact' {
        Skip-WithoutNode; Skip-WithoutShared
        $run = Invoke-Task (@{ Models = 'models/*.onnx'; Data = 'data/gate-data.json'
            Pipeline = "Invoke-ModelPruning -Structured -Rate 0.25`nInvoke-ModelQuantization -Mode Dynamic" } + $Gates)
        $run.ExitCode | Should -Be 0 -Because ($run.Lines -join "`n")
        $run.Issues | Should -BeNullOrEmpty
        $run.Result | Should -BeLike '##vso`[task.complete result=Succeeded*'
        $run.Lines | Should -Contain "##vso[artifact.upload containerfolder=model-compression;artifactname=model-compression;]$($run.Reports)"
        $summary = Get-Content -Raw (Join-Path $run.Reports 'summary.json') | ConvertFrom-Json
        $summary.Passed | Should -BeTrue
        @($summary.Models.Model | Sort-Object) | Should -Be 'breast_cancer_mlp', 'wine_mlp'
        foreach ($m in $summary.Models) { $m.Data | Should -BeLike '*_test.npz'; $m.SizeRatio | Should -BeLessThan 0.3 }
        Join-Path $run.Reports 'wine_mlp/comparison.json' | Should -Exist
        Join-Path $run.Reports 'wine_mlp/wine_mlp.compressed.onnx' | Should -Exist
    }

    It 'fails missed gates: exit 1, one error issue per failed gate, the reports still uploaded' {
        Skip-WithoutNode; Skip-WithoutShared
        # Two gates missed on one model: fidelity (a cosine of 1) and latency (a fortieth of the original's at most).
        $inputs = @{ Models = 'models/wine_mlp.onnx'; Data = 'data/gate-data.json'; Pipeline = 'Invoke-ModelQuantization' } + $Gates
        $inputs.MinCosine = '1'
        $inputs.MaxLatencyRatio = '0.025'
        $run = Invoke-Task $inputs
        $run.ExitCode | Should -Be 1 -Because ($run.Lines -join "`n")
        $run.Result | Should -BeLike '##vso`[task.complete result=Failed*'
        $summary = Get-Content -Raw (Join-Path $run.Reports 'summary.json') | ConvertFrom-Json
        $summary.Passed | Should -BeFalse
        $failed = @($summary.Models | ForEach-Object { foreach ($g in $_.FailedGates) { "$($_.Model): $($g.ErrorId): $($g.Message)" } })
        $failed.Count | Should -Be 2
        @($run.Issues -replace '^##vso\[[^\]]*\]') | Should -Be $failed
        $run.Lines | Where-Object { $_ -like '##vso`[artifact.upload*' } | Should -Not -BeNullOrEmpty
    }

    It 'refuses <name>: exit 1, one issue, and no report that passes' -ForEach @(
        @{ name = 'no model input'; inputs = @{ Pipeline = 'Invoke-ModelQuantization' }; issue = 'Input required: models' }
        @{ name = 'a glob matching nothing'; inputs = @{ Models = 'nowhere/*.onnx'; Pipeline = 'Invoke-ModelQuantization' }; issue = "Input models: no .onnx file matches 'nowhere/*.onnx'*" }
        @{ name = 'an unknown stage'; inputs = @{ Models = 'models/*.onnx'; Pipeline = 'Invoke-ModelCompression -Rate 0.5' }; issue = "Input pipeline: Stage 'Invoke-ModelCompression' is not a compression stage*" }
        @{ name = 'an unknown parameter'; inputs = @{ Models = 'models/*.onnx'; Pipeline = 'Invoke-ModelQuantization -Bits 4 -Speed 2' }; issue = "Input pipeline: Stage 'Invoke-ModelQuantization' has no parameter -Speed*" }
        @{ name = 'code as an argument'; inputs = @{ Models = 'models/*.onnx'; Pipeline = 'Invoke-ModelQuantization -Mode $env:HOME' }; issue = 'Input pipeline: *must be a constant*' }
        @{ name = 'a cosine out of range'; inputs = @{ Models = 'models/*.onnx'; Pipeline = 'Invoke-ModelQuantization'; MinCosine = '1.5' }; issue = "Input minCosine: '1.5' is not a cosine from -1 to 1." }
        @{ name = 'an accuracy drop in percent'; inputs = @{ Models = 'models/*.onnx'; Pipeline = 'Invoke-ModelQuantization'; MaxAccuracyDrop = '2' }; issue = "Input maxAccuracyDrop: '2' is not a fraction from 0 to 1*" }
        @{ name = 'a perplexity rise with a unit'; inputs = @{ Models = 'models/*.onnx'; Pipeline = 'Invoke-ModelQuantization'; MaxPerplexityRise = '5%' }; issue = "Input maxPerplexityRise: '5%' is not a fraction*" }
        @{ name = 'a latency ratio of 0'; inputs = @{ Models = 'models/*.onnx'; Pipeline = 'Invoke-ModelQuantization'; MaxLatencyRatio = '0' }; issue = "Input maxLatencyRatio: '0' is not a ratio above 0*" }
    ) {
        Skip-WithoutNode
        if ($inputs.Models) { Copy-Item $WineModel (Join-Path $Sources 'models') -ErrorAction SilentlyContinue }
        $run = Invoke-Task $inputs
        $run.ExitCode | Should -Be 1 -Because ($run.Lines -join "`n")
        $run.Issues.Count | Should -Be 1 -Because ($run.Lines -join "`n")
        ($run.Issues[0] -replace '^##vso\[[^\]]*\]') | Should -BeLike $issue
        $run.Result | Should -BeLike '##vso`[task.complete result=Failed*'
        $summary = Join-Path $run.Reports 'summary.json'
        if (Test-Path $summary) { (Get-Content -Raw $summary | ConvertFrom-Json).Passed | Should -BeFalse }
    }
}
