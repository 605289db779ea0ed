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
    BeforeAll {
        $Pipeline = Join-Path $Examples 'pipeline'
        # Runs a pipeline script as a PowerShell@2 step would: its own pwsh, the repository's models and data.
        function Invoke-Step([string] $Script, [string] $Arguments, [string] $Directory = $RepoRoot) {
            Invoke-Pwsh -WorkingDirectory $Directory -Command "& '$Pipeline/$Script' $Arguments"
        }
    }

    It 'shows both ways: the task, and PowerShell@2 steps calling the scripts the tests run' {
        $yml = Get-Content -Raw (Join-Path $Examples 'azure-pipelines.yml')
        $yml | Should -Match '(?m)^\s+- task: ModelCompressionGate@0'
        $yml | Should -Match '(?m)^\s+- task: PowerShell@2'
        foreach ($script in 'Get-ModelMatrix.ps1', 'Test-CompressionGate.ps1', 'Join-CompressionReport.ps1') {
            $yml | Should -BeLike "*examples/pipeline/$script*"
            Join-Path $Pipeline $script | Should -Exist
        }
        $yml | Should -Match "matrix: \$\[ dependencies\.list\.outputs\['models\.matrix'\] \]"
        # The data mapping it names is in the repository and names the repository's model.
        (Get-Content -Raw (Join-Path $RepoRoot 'data/gate-data.json') | ConvertFrom-Json).wine_mlp | Should -Be 'wine_test.npz'
    }

    It 'fans a folder of models out as a matrix' {
        New-Item -ItemType Directory (Join-Path $TestDrive 'models') | Out-Null
        foreach ($name in 'wine_mlp', 'wine-copy') { Copy-Item $WineModel (Join-Path $TestDrive "models/$name.onnx") }
        $out = @(Invoke-Step 'Get-ModelMatrix.ps1' '-Path models' $TestDrive)
        $LASTEXITCODE | Should -Be 0 -Because ($out -join "`n")
        $out.Count | Should -Be 1
        $out[0] | Should -Match '^##vso\[task\.setvariable variable=matrix;isOutput=true\]'
        $matrix = ($out[0] -replace '^##vso\[[^\]]*\]') | ConvertFrom-Json -AsHashtable
        @($matrix.Keys | Sort-Object) | Should -Be 'wine_copy', 'wine_mlp'
        $matrix['wine_copy'].modelPath | Should -Be 'models/wine-copy.onnx'
        $matrix['wine_copy'].modelName | Should -Be 'wine-copy'
    }

    It 'gates a folder of different models, each on its own data, and lists every model in summary.json' {
        Skip-WithoutShared
        $folder = New-Item -ItemType Directory (Join-Path $TestDrive 'mixed')
        foreach ($name in 'wine_mlp', 'breast_cancer_mlp') { Copy-Item (Join-Path $SharedRoot "models/$name.onnx") $folder }
        Set-Content (Join-Path $folder 'broken.onnx') 'not a model'
        foreach ($name in 'wine_test', 'breast_cancer_test') { Copy-Item (Join-Path $SharedRoot "data/$name.npz") $folder }
        '{ "wine_mlp": "wine_test.npz", "breast_cancer_mlp": "breast_cancer_test.npz" }' | Set-Content (Join-Path $folder 'data.json')
        $reports = Join-Path $TestDrive 'mixed-reports'
        $codes = @{}
        foreach ($name in 'wine_mlp', 'breast_cancer_mlp', 'broken') {
            $out = Invoke-Step 'Test-CompressionGate.ps1' ("-Model '$folder/$name.onnx' -Data '$folder/data.json' -Reports '$reports/$name' " +
                "-Stages 'Invoke-ModelPruning -Structured -Rate 0.25', 'Invoke-ModelQuantization' -MinCosine 0.99 -MaxAccuracyDrop 0.05 -MinTop1Agreement 0.9 -MaxLatencyRatio 100 -LatencySeconds 0.5 -LogIssues")
            $codes[$name] = $LASTEXITCODE
            if ($name -ne 'broken') { @($out -like '##vso*') | Should -BeNullOrEmpty -Because ($out -join "`n") }
        }
        $codes['wine_mlp'], $codes['breast_cancer_mlp'], $codes['broken'] | Should -Be 0, 0, 1
        (Get-Content -Raw "$reports/breast_cancer_mlp/gate.json" | ConvertFrom-Json).Data | Should -Be (Join-Path $folder 'breast_cancer_test.npz')

        # The gather step, with the matrix's names: a model whose job left nothing ('lost') is listed as failed too.
        $table = Invoke-Step 'Join-CompressionReport.ps1' "-Path '$reports' -Model wine_mlp, breast_cancer_mlp, broken, lost"
        $LASTEXITCODE | Should -Be 0 -Because ($table -join "`n")
        ($table -join "`n") | Should -Match 'wine_mlp\s+Passed'
        $summary = Get-Content -Raw "$reports/summary.json" | ConvertFrom-Json
        $summary.Passed | Should -BeFalse
        @($summary.Models.Model | Sort-Object) | Should -Be 'breast_cancer_mlp', 'broken', 'lost', 'wine_mlp'
        $byName = @{}; foreach ($m in $summary.Models) { $byName[$m.Model] = $m }
        $byName['wine_mlp'].Passed | Should -BeTrue
        $byName['wine_mlp'].LatencyRatio | Should -BeGreaterThan 0
        $byName['broken'].Status | Should -Be 'Error'
        $byName['broken'].Error | Should -BeLike '*broken.onnx*'
        $byName['lost'].Status | Should -Be 'Error'
        # The YAML hands over the matrix itself (Get-ModelMatrix.ps1's JSON); its model names count the same.
        $matrix = '{"wine_mlp":{"modelPath":"m/wine_mlp.onnx","modelName":"wine_mlp"},"gone":{"modelPath":"m/gone.onnx","modelName":"gone"}}'
        $null = Invoke-Step 'Join-CompressionReport.ps1' "-Path '$reports' -Model '$matrix'"
        (Get-Content -Raw "$reports/summary.json" | ConvertFrom-Json).Models.Model | Should -Contain 'gone'
    }

    It 'fails a model that misses gates: one error line per missed gate, the latency gate among them, digits that tell the miss' {
        $reports = Join-Path $TestDrive 'failing'
        $out = Invoke-Step 'Test-CompressionGate.ps1' ("-Model models/wine_mlp.onnx -Data data/gate-data.json -Reports '$reports' " +
            '-MinCosine 1 -MaxLatencyRatio 0.01 -LatencySeconds 0.5 -LogIssues')
        $LASTEXITCODE | Should -Be 1
        $gate = Get-Content -Raw (Join-Path $reports 'gate.json') | ConvertFrom-Json
        @($gate.FailedGates.ErrorId) | Should -Be 'CosineBelowMinimum', 'LatencyRatioAboveMaximum'
        $errors = @($out | Where-Object { $_ -like '##vso*' })
        $errors | Should -Be @($gate.FailedGates | ForEach-Object { "##vso[task.logissue type=error]wine_mlp: $($_.ErrorId): $($_.Message)" })
        # A cosine just below 1 never reads as 1 beside the gate it missed.
        $gate.CosineText | Should -Not -Match '^1(\.0*)?$'
        $gate.FailedGates[0].Message | Should -Not -Match 'similarity 1 is below'
        $table = Invoke-Step 'Join-CompressionReport.ps1' "-Path '$reports'"
        ($table -join "`n") | Should -Match "wine_mlp\s+Failed\s+$([regex]::Escape($gate.CosineText))\s"
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
