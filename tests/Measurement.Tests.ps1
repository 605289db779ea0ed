# Measure-ModelLatency and Compare-Model as a user meets them: pipeline input, reports, JSON, gates, errors, Ctrl+C.
BeforeAll {
    . $PSScriptRoot/Common.ps1
    $WineTest = Join-Path $RepoRoot 'data/wine_test.npz'
    $Bert = Join-Path $SharedRoot 'models/tiny_bert.onnx'
}

Describe 'Measure-ModelLatency' {
    It 'takes models and paths from the pipeline and a baseline, with progress' {
        $run = Invoke-WithStream -ArgumentList $WineModel {
            param($wine)
            $m = Get-Model $wine
            $m, $wine | Measure-ModelLatency -Baseline $wine -Iterations 40 -Warmup 2 -BatchSize 4 -IntraOpThreads 1
        }
        $run.Error | Should -BeNullOrEmpty
        $reports = $run.Output
        $reports.Count | Should -Be 3
        foreach ($r in $reports) {
            $r.GetType().FullName | Should -Be 'ModelCompression.LatencyReport'
            $r.Iterations | Should -Be 40
            $r.BatchSize | Should -Be 4
            $r.Inputs | Should -Be 'features[4,13]'
            $r.IntraOpThreads | Should -Be 1
            $r.P50Ms | Should -BeGreaterThan 0
        }
        $reports.Role | Should -Be Baseline, Model, Model
        $reports[0].RatioToBaseline | Should -BeNullOrEmpty
        foreach ($r in $reports[1..2]) {
            $r.Baseline | Should -Be 'wine_mlp'
            $r.RatioToBaseline | Should -BeGreaterThan 0.5
            $r.RatioToBaseline | Should -BeLessThan 2
            $r.RatioLower | Should -BeLessOrEqual $r.RatioToBaseline
            $r.Significant | Should -Not -BeNullOrEmpty
        }
        $run.Progress | Where-Object StatusDescription -Like 'Measuring*' | Should -Not -BeNullOrEmpty
        $run.Progress | Where-Object RecordType -EQ Completed | Should -Not -BeNullOrEmpty
    }

    It 'measures for -Duration seconds on a data file' {
        $watch = [Diagnostics.Stopwatch]::StartNew()
        $r = Measure-ModelLatency $WineModel -InputData $WineTest -BatchSize 8 -Duration 0.5 -Warmup 0 -GraphOptimization Basic -InterOpThreads 1
        $watch.Elapsed.TotalSeconds | Should -BeGreaterOrEqual 0.5
        $r.Iterations | Should -BeGreaterThan 5
        $r.InputSource | Should -BeLike 'wine_test.npz (*'
        $r.GraphOptimization | Should -Be 'Basic'
    }

    It 'serializes to JSON with ConvertTo-Json' {
        $json = Get-Model $WineModel | Measure-ModelLatency -Iterations 5 -Warmup 0 | ConvertTo-Json | ConvertFrom-Json
        $json.Model | Should -Be 'wine_mlp'
        $json.P99Ms | Should -BeGreaterThan 0
    }

    It 'refuses <name> with <id>' -ForEach @(
        @{ name = 'an unknown provider'; arguments = @{ Provider = 'NoSuchProvider' }; id = 'ExecutionProviderUnavailable' }
        @{ name = 'a shape for no input'; arguments = @{ InputShape = @{ nosuchinput = 1, 13 } }; id = 'InputShapeKeyUnknown' }
        @{ name = 'a shape of the wrong rank'; arguments = @{ InputShape = @{ features = 1, 2, 3 } }; id = 'InputShapeRankMismatch' }
        @{ name = 'a missing data file'; arguments = @{ InputData = 'no-such-folder/missing.npz' }; id = 'DataFileNotFound' }
    ) {
        { Measure-ModelLatency $WineModel -Iterations 2 @arguments } | Should -Throw -ErrorId "$id,*"
    }

    It 'refuses options that would be ignored: <name>' -ForEach @(
        @{ name = '-InputShape with -InputData'; arguments = @{ InputData = 'data/wine_test.npz'; InputShape = @{ batch = 4 } }; id = 'InputParameterNotApplicable' }
        @{ name = '-IntegerRange with -InputData'; arguments = @{ InputData = 'data/wine_test.npz'; IntegerRange = 0, 5 }; id = 'InputParameterNotApplicable' }
        @{ name = '-ConfidenceLevel without -Baseline'; arguments = @{ ConfidenceLevel = 0.9 }; id = 'LatencyParameterNotApplicable' }
    ) {
        Push-Location $RepoRoot
        try { { Measure-ModelLatency $WineModel -Iterations 2 @arguments } | Should -Throw -ErrorId "$id,*" }
        finally { Pop-Location }
        # Beside a baseline -ConfidenceLevel applies.
        if ($arguments.ContainsKey('ConfidenceLevel')) { (Measure-ModelLatency $WineModel -Baseline $WineModel -Iterations 3 -Warmup 0 @arguments)[1].ConfidenceLevel | Should -Be 0.9 }
    }

    It 'names a missing symbolic dimension, and -InputShape resolves it' {
        Skip-WithoutShared
        $dim = (Get-ModelInfo $Bert).Inputs[0].Shape[1]
        { Measure-ModelLatency $Bert -Iterations 2 } | Should -Throw -ErrorId 'InputDimensionUnresolved,*' -ExpectedMessage "*'$dim'*"
        $r = Measure-ModelLatency $Bert -Iterations 2 -Warmup 0 -InputShape @{ $dim = 16 } -IntegerRange 0, 50
        $r.Inputs | Should -Be 'input_ids[1,16]'
    }

    It 'completes -Provider with the available providers' {
        $line = "Measure-ModelLatency $WineModel -Provider "
        $completion = [System.Management.Automation.CommandCompletion]::CompleteInput($line, $line.Length, $null)
        $completion.CompletionMatches.CompletionText | Should -Contain 'CPU'
    }

    It 'stops when the pipeline is stopped (Ctrl+C)' {
        $ps = New-PowerShell
        try {
            $null = $ps.AddScript("Measure-ModelLatency '$WineModel' -Duration 600 -Warmup 0")
            $async = $ps.BeginInvoke()
            while ($ps.Streams.Progress.Count -eq 0 -and -not $async.IsCompleted) { Start-Sleep -Milliseconds 50 }
            $ps.Stop()
            # A guard against a hang, not a speed limit: a measurement that ignored the stop would run for 600 s.
            $async.AsyncWaitHandle.WaitOne([TimeSpan]::FromSeconds(300)) | Should -BeTrue
            $ps.InvocationStateInfo.State | Should -Be Stopped
        }
        finally { $ps.Dispose() }
    }
}

Describe 'Compare-Model' {
    BeforeAll {
        # A copy of the wine model with 40 KB of its 256x256 weight zeroed: valid ONNX, different outputs.
        $bytes = [IO.File]::ReadAllBytes($WineModel)
        [Array]::Clear($bytes, 100000, 40000)
        $Damaged = Join-Path $TestDrive 'damaged.onnx'
        [IO.File]::WriteAllBytes($Damaged, $bytes)
    }

    It 'compares a model with itself on labelled data and passes its gates' {
        $r = Get-Model $WineModel | Compare-Model -Reference $WineModel -InputData $WineTest -MinCosine 0.9999 -MaxAccuracyDrop 0 -MinTop1Agreement 1
        $r.GetType().FullName | Should -Be 'ModelCompression.ModelComparisonReport'
        $r.Passed | Should -BeTrue
        $r.SizeRatio | Should -Be 1
        $r.Cosine | Should -BeGreaterThan 0.999999999
        $r.AccuracyDrop | Should -Be 0
        @($r.Outputs).Count | Should -Be 1
        $r.InputSource | Should -BeLike '*labelled*'
    }

    It 'writes an error with a stable id for each missed gate, after the report' {
        $r = Compare-Model $WineModel $Damaged -InputData $WineTest -MinCosine 0.99999 -MaxAccuracyDrop 0.5 -ErrorVariable errs -ErrorAction SilentlyContinue
        $r.Passed | Should -BeFalse
        $r.Cosine | Should -BeLessThan 0.99999
        $errs | Get-ErrorId | Should -Be CosineBelowMinimum
        $errs[0].CategoryInfo.Category | Should -Be InvalidResult
        $errs[0].Exception.GetType().FullName | Should -Be 'ModelCompression.ModelGateException'
        # With Stop the step fails, and -OutVariable still holds the report.
        $caught = try { Compare-Model $WineModel $Damaged -MinCosine 0.99999 -OutVariable rep -ErrorAction Stop | Out-Null } catch { $_ }
        $caught | Get-ErrorId | Should -Be CosineBelowMinimum
        $rep[0].Passed | Should -BeFalse
    }

    It 'refuses -InputShape and -IntegerRange beside -InputData (they would be ignored)' {
        $caught = try { Compare-Model $WineModel $WineModel -InputData $WineTest -InputShape @{ batch = 4 } -IntegerRange 0, 5 -ErrorAction Stop } catch { $_ }
        $caught | Get-ErrorId | Should -Be InputParameterNotApplicable
        $caught.Exception.Message | Should -BeLike '*-InputShape and -IntegerRange*'
    }

    It 'refuses an accuracy gate without labels' {
        $r = Compare-Model $WineModel $WineModel -MaxAccuracyDrop 0.01 -ErrorVariable errs -ErrorAction SilentlyContinue
        $r | Should -BeNullOrEmpty
        $errs | Get-ErrorId | Should -Be AccuracyGateRequiresLabels
        Compare-Model $WineModel $WineModel -MaxPerplexityRise 0.01 -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be PerplexityGateRequiresLabels
        Compare-Model $WineModel $WineModel -InputData $WineTest -MaxPerplexityRise 0.01 -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be PerplexityNotMeasurable
    }

    It 'reports token accuracy and perplexity of a language model and gates its increase' {
        Skip-WithoutShared
        $lm = Join-Path $SharedRoot 'models/tiny_lm.onnx'
        $q = Get-Model $lm | Invoke-ModelQuantization -Mode WeightOnly -BlockSize 128 -WarningAction SilentlyContinue
        $r = Compare-Model $lm $q -InputData (Join-Path $SharedRoot 'data/tiny_lm_test.npz') -BatchSize 64 -MaxPerplexityRise 0.0001 -ErrorVariable errs -ErrorAction SilentlyContinue
        $o = $r.Outputs[0]
        [Math]::Round($o.ReferencePerplexity, 2) | Should -Be 3.90
        $o.DifferencePerplexity | Should -BeGreaterThan $o.ReferencePerplexity
        $o.ReferenceAccuracy | Should -BeGreaterThan 0.6
        $r.PerplexityRise | Should -Be $o.PerplexityRise
        $r.ParameterRatio | Should -Be 1
        $r.SizeRatio | Should -BeLessThan 0.2
        $errs | Get-ErrorId | Should -Be PerplexityRiseAboveMaximum
        $r.FailedGates[0].Actual | Should -Be $o.PerplexityRise
    }

    It 'synthesizes inputs with -InputShape and -IntegerRange' {
        Skip-WithoutShared
        $dim = (Get-ModelInfo $Bert).Inputs[0].Shape[1]
        Compare-Model $Bert $Bert -BatchSize 2 -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be InputDimensionUnresolved
        $r = Compare-Model $Bert $Bert -BatchSize 2 -InputShape @{ $dim = 16 } -IntegerRange 0, 50 -MinCosine 0.9999
        $r.InputSource | Should -Be 'Synthesized (4 batches of 2)'
        $r.Rows | Should -Be 8
        $r.Cosine | Should -BeGreaterThan 0.999999
        Compare-Model $Bert $Bert -IntegerRange 5, 5 -InputShape @{ input_ids = 1, 8 } -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be IntegerRangeInvalid
    }
}
