# The examples as written, in real pwsh: the quickstart, the pipeline's PowerShell steps, and the module's views
# at 80 columns. Also the scale-out a pipeline relies on: several models in parallel runspaces of one process.
BeforeAll {
    . $PSScriptRoot/Common.ps1
    $Examples = Join-Path $RepoRoot 'examples'
    $WineTest = Join-Path $RepoRoot 'data/wine_test.npz'
}

Describe 'The views' {
    BeforeAll {
        $m = Get-Model $WineModel
        $q = $m | Invoke-ModelQuantization
        # Formats objects as pwsh shows them in an 80-column console.
        function Show([Parameter(ValueFromPipeline)] $InputObject) { end { $input | Out-String -Width 80 } }
    }

    It 'keep the key columns of <type> at 80 columns' -ForEach @(
        @{ type = 'Model'; make = { $q }; columns = 'Name', 'Size\(KB\)', 'Parameters', 'Stages' }
        @{ type = 'ModelInfo'; make = { $m | Get-ModelInfo }; columns = 'Name', 'Size\(KB\)', 'Parameters', 'Nodes', 'Sparsity', 'Inputs' }
        @{ type = 'ModelComparisonReport'; make = { Compare-Model $m $q -InputData $WineTest }; columns = 'Reference', 'Difference', 'Cosine', 'Top1', 'AccDrop', 'Size', 'Passed' }
        @{ type = 'LatencyReport'; make = { Measure-ModelLatency $q -Baseline $m -Iterations 5 -Warmup 0 }; columns = 'Model', 'Role', 'P50\(ms\)', 'P99\(ms\)', 'Items/s', 'Ratio \[CI\]' }
        @{ type = 'ModelStageInfo'; make = { $q.History }; columns = 'Stage', 'Before\(KB\)', 'After\(KB\)', 'Seconds', 'Parameters' }
        @{ type = 'ReportRow'; make = { $q.Report.Entries }; columns = 'Target', 'OpType', 'Action', 'Detail' }
    ) {
        $text = & $make | Show
        $header = ($text -split "`n" | Where-Object { $_ -match '\S' })[0]
        $header | Should -Match ('^' + ($columns -join '\s+') + '\s*$')
        foreach ($line in $text -split "`n") { $line.TrimEnd().Length | Should -BeLessOrEqual 80 }
    }

    It 'show a compression report as a summary: stage, entries by action, metrics' {
        $text = $q.Report | Show
        $text | Should -Match 'Stage\s+: Quantize'
        $text | Should -Match 'Entries\s+: 3 Quantized'
        $text | Should -Match '(?s)Metrics\s+: .*SizeRatio='
    }
}

Describe 'examples/quickstart.ps1' {
    It 'runs the whole job in pwsh and shows every result in its own view, and only what was asked for' {
        # Both streams, as a console shows them: ONNX Runtime's native log lines would arrive on stderr.
        $out = Invoke-Pwsh -WorkingDirectory $TestDrive -Command "& '$Examples/quickstart.ps1'"
        $LASTEXITCODE | Should -Be 0 -Because ($out -join "`n")
        $text = $out -join "`n"
        foreach ($header in 'Name\s+Size\(KB\)\s+Parameters\s+Nodes', 'Name\s+Size\(KB\)\s+Parameters\s+Stages', 'Reference\s+Difference\s+Cosine',
            'Model\s+Role\s+P50\(ms\)', 'Name\s+Bytes', 'Stage\s+Before\(KB\)\s+After\(KB\)') {
            $text | Should -Match $header
        }
        # No object fell back to a property list (what a mixed stream of types gets after its first type).
        $text | Should -Not -Match '(?m)^(RatioToBaseline|Cosine|SizeBytes|Parameters|Difference)\s+:'
        $text | Should -Not -Match 'Exception|error|WARNING|onnxruntime'
        # The compressed file, visibly smaller than the original.
        $sizes = [regex]::Matches($text, '(?m)^(wine_mlp\.onnx|wine_mlp\.small\.onnx)\s+([\d,]+)\s*$')
        $sizes.Count | Should -Be 2
        $bytes = $sizes | ForEach-Object { [long]($_.Groups[2].Value -replace ',') }
        $bytes[1] | Should -BeLessThan ($bytes[0] / 10)
    }
}

Describe 'examples/azure-pipelines.yml' {
    It 'calls the scripts the tests run' {
        $yml = Get-Content -Raw (Join-Path $Examples 'azure-pipelines.yml')
        foreach ($script in 'Get-ModelMatrix.ps1', 'Test-CompressionGate.ps1', 'Join-CompressionReport.ps1') {
            $yml | Should -BeLike "*examples/pipeline/$script*"
            Join-Path $Examples "pipeline/$script" | Should -Exist
        }
        $yml | Should -Match "matrix: \$\[ dependencies\.list\.outputs\['models\.matrix'\] \]"
    }

    It 'fans a folder of models out as a matrix' {
        New-Item -ItemType Directory (Join-Path $TestDrive 'models') | Out-Null
        foreach ($name in 'wine_mlp', 'wine-copy') { Copy-Item $WineModel (Join-Path $TestDrive "models/$name.onnx") }
        $out = @(Invoke-Pwsh -WorkingDirectory $TestDrive -Command "& '$Examples/pipeline/Get-ModelMatrix.ps1' -Path models")
        $LASTEXITCODE | Should -Be 0 -Because ($out -join "`n")
        $out.Count | Should -Be 1
        $out[0] | Should -Match '^##vso\[task\.setvariable variable=matrix;isOutput=true\]'
        $matrix = ($out[0] -replace '^##vso\[[^\]]*\]') | ConvertFrom-Json -AsHashtable
        @($matrix.Keys | Sort-Object) | Should -Be 'wine_copy', 'wine_mlp'
        $matrix['wine_copy'].modelPath | Should -Be 'models/wine-copy.onnx'
        $matrix['wine_copy'].modelName | Should -Be 'wine-copy'
    }

    It 'passes good models: exit 0, no error line, both reports, and the gather step reads them' {
        $reports = Join-Path $TestDrive 'reports/wine_mlp'
        $out = Invoke-Pwsh -WorkingDirectory $RepoRoot -Command ("& '$Examples/pipeline/Test-CompressionGate.ps1' -Model models/wine_mlp.onnx " +
            "-Data data/wine_test.npz -Reports '$reports' -MaxLatencyRatio 100 -LatencySeconds 0.5")
        $LASTEXITCODE | Should -Be 0 -Because ($out -join "`n")
        $out | Where-Object { $_ -like '*##vso*' } | Should -BeNullOrEmpty
        (Get-Content -Raw (Join-Path $reports 'comparison.json') | ConvertFrom-Json).Passed | Should -BeTrue
        (Get-Content -Raw (Join-Path $reports 'latency.json') | ConvertFrom-Json).Count | Should -Be 2

        $table = Invoke-Pwsh -WorkingDirectory $TestDrive -Command "& '$Examples/pipeline/Join-CompressionReport.ps1' -Path reports"
        $LASTEXITCODE | Should -Be 0 -Because ($table -join "`n")
        ($table -join "`n") | Should -Match 'wine_mlp\s+True'
        $summary = Get-Content -Raw (Join-Path $TestDrive 'reports/summary.json') | ConvertFrom-Json
        $summary.Model | Should -Be 'wine_mlp'
        $summary.LatencyRatio | Should -BeGreaterThan 0
    }

    It 'fails a model that misses a gate: exit 1, one error line per missed gate' {
        $reports = Join-Path $TestDrive 'failing'
        $out = Invoke-Pwsh -WorkingDirectory $RepoRoot -Command ("& '$Examples/pipeline/Test-CompressionGate.ps1' -Model models/wine_mlp.onnx " +
            "-Data data/wine_test.npz -Reports '$reports' -MinCosine 1 -MaxLatencyRatio 100 -LatencySeconds 0.5")
        $LASTEXITCODE | Should -Be 1
        $errors = @($out | Where-Object { $_ -like '##vso*' })
        $gates = (Get-Content -Raw (Join-Path $reports 'comparison.json') | ConvertFrom-Json).FailedGates
        @($gates).Count | Should -Be 1
        $errors.Count | Should -Be 1
        $errors[0] | Should -Be "##vso[task.logissue type=error]CosineBelowMinimum: $($gates[0].Message)"
    }
}

Describe 'Scale-out' {
    It 'compresses several models with ForEach-Object -Parallel: one engine, several runspaces' {
        $folder = New-Item -ItemType Directory (Join-Path $TestDrive 'many')
        foreach ($i in 1..6) { Copy-Item $WineModel (Join-Path $folder "wine$i.onnx") }
        $results = Get-ChildItem (Join-Path $folder '*.onnx') | ForEach-Object -Parallel {
            Import-Module $using:ModulePath
            $m = Get-Model $_.FullName
            $q = $m | Invoke-ModelQuantization
            $r = Compare-Model $m $q -InputData $using:WineTest
            $q | Export-Model ($_.FullName -replace '\.onnx$', '.int8.onnx')
            [pscustomobject]@{ Name = $m.Name; Cosine = $r.Cosine; Thread = [Environment]::CurrentManagedThreadId }
        } -ThrottleLimit 4
        @($results).Count | Should -Be 6
        @($results.Name | Sort-Object) | Should -Be (1..6 | ForEach-Object { "wine$_" })
        foreach ($r in $results) { $r.Cosine | Should -BeGreaterThan 0.999 }
        @(Get-ChildItem (Join-Path $folder '*.int8.onnx')).Count | Should -Be 6
        # One engine: the module's load context exists once however many runspaces imported it.
        @([System.Runtime.Loader.AssemblyLoadContext]::All | Where-Object Name -EQ 'ModelCompression').Count | Should -Be 1
    }
}
