# What a new user meets first: paths as PowerShell takes them, gates that claim nothing they did not check, sizes
# and sparsity of compressed files, warnings only for what needs acting on, help that reflows, progress with time left.
BeforeAll {
    . $PSScriptRoot/Common.ps1
    $WineTest = Join-Path $RepoRoot 'data/wine_test.npz'
    $LmPath = Join-Path $SharedRoot 'models/tiny_lm.onnx'
    $LmTest = Join-Path $SharedRoot 'data/tiny_lm_test.npz'
    $LmCalib = Join-Path $SharedRoot 'data/tiny_lm_calib.npz'
    $Bert = Join-Path $SharedRoot 'models/tiny_bert.onnx'
    # Formats objects as pwsh shows them in an 80-column console.
    function Show([Parameter(ValueFromPipeline)] $InputObject) { end { $input | Out-String -Width 80 } }
}

Describe 'Paths' {
    It 'a missing file is PathNotFound, ObjectNotFound, with PowerShell''s own message, by -Path, -LiteralPath and Get-ModelInfo' {
        $missing = Join-Path $TestDrive 'nope.onnx'
        Push-Location $TestDrive
        try {
            Get-Model ./nope.onnx -ErrorVariable e1 -ErrorAction SilentlyContinue
            Get-Model -LiteralPath ./nope.onnx -ErrorVariable e2 -ErrorAction SilentlyContinue
            Get-ModelInfo ./nope.onnx -ErrorVariable e3 -ErrorAction SilentlyContinue
        }
        finally { Pop-Location }
        foreach ($e in $e1, $e2, $e3) {
            $e | Get-ErrorId | Should -Be PathNotFound
            $e[0].CategoryInfo.Category | Should -Be ObjectNotFound
            $e[0].Exception.Message | Should -Be "Cannot find path '$missing' because it does not exist."
        }
    }

    It 'takes an escaped wildcard path by -Path and the same path unescaped by -LiteralPath' {
        $folder = [IO.Directory]::CreateDirectory((Join-Path $TestDrive '[v1]'))
        Copy-Item -LiteralPath $WineModel -Destination (Join-Path $folder.FullName 'a [b].onnx')
        Push-Location $TestDrive
        try {
            (Get-Model -Path '`[v1`]/a `[b`].onnx').Name | Should -Be 'a [b]'
            (Get-Model -LiteralPath '[v1]/a [b].onnx').Name | Should -Be 'a [b]'
            (Get-ModelInfo -Path '`[v1`]/a `[b`].onnx').Parameters | Should -Be 70147
        }
        finally { Pop-Location }
    }

    It 'a folder without a GenAI config gets a hint that names its ONNX files' {
        $folder = New-Item -ItemType Directory (Join-Path $TestDrive 'models')
        Get-Model $folder.FullName -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be ModelPathIsDirectory
        $errs[0].Exception.Message | Should -BeLike "*$(Join-Path $folder.FullName '*.onnx')*"
    }
}

Describe 'Compare-Model' {
    BeforeAll {
        $Wine = Get-Model $WineModel
        $Pruned = $Wine | Invoke-ModelPruning -Rate 0.95
    }

    It 'claims no pass without a gate: Passed is null and the view says "no gate"' {
        $r = Compare-Model $Wine $Pruned -InputData $WineTest
        $r.Passed | Should -BeNullOrEmpty
        $r.Gates.Count | Should -Be 0
        ($r | Show) | Should -Match 'no gate'
        $gated = Compare-Model $Wine $Wine -InputData $WineTest -MinCosine 0.99
        $gated.Passed | Should -BeTrue
        $gated.Gates['MinCosine'] | Should -Be 0.99
        ($gated | Show) | Should -Not -Match 'no gate'
        ((ConvertTo-Json $r -Depth 4 | ConvertFrom-Json).Passed) | Should -BeNullOrEmpty
    }

    It 'takes every relative gate as a fraction; the old percent parameter is refused by name' {
        { Compare-Model $Wine $Wine -MaxPerplexityIncrease 5 } | Should -Throw -ErrorId 'NamedParameterNotFound,*'
        { Compare-Model $Wine $Wine -MaxPerplexityRise 1.5 } | Should -Throw -ErrorId 'ParameterArgumentValidationError,*'
        { Compare-Model $Wine $Wine -MaxAccuracyDrop 2 } | Should -Throw -ErrorId 'ParameterArgumentValidationError,*'
        foreach ($name in 'MaxAccuracyDrop', 'MaxPerplexityRise', 'MinTop1Agreement') {
            (Get-Help Compare-Model -Parameter $name).description.Text -join ' ' | Should -Match 'fraction'
        }
    }

    It 'shows both perplexities and their rise (a fraction) for a language model' {
        Skip-WithoutShared
        $lm = Get-Model $LmPath
        $q = $lm | Invoke-ModelQuantization -Mode WeightOnly -BlockSize 128
        $r = Compare-Model $lm $q -InputData $LmTest -BatchSize 64 -MaxPerplexityRise 0.5
        $o = $r.Outputs[0]
        $r.PerplexityRise | Should -Be ($o.DifferencePerplexity / $o.ReferencePerplexity - 1)
        $r.PerplexityRise | Should -BeLessThan 0.5
        $r.Passed | Should -BeTrue
        $text = $r | Show
        $header = ($text -split "`n" | Where-Object { $_ -match '\S' })[0]
        $header | Should -Match '^Reference\s+Difference\s+Cosine\s+RefPPL\s+PPL\s+PPL\+%\s+Size\s+Passed\s*$'
        $text | Should -Match ([regex]::Escape($o.ReferencePerplexity.ToString('G4')))
        $text | Should -Match ([regex]::Escape($o.DifferencePerplexity.ToString('G4')))
        foreach ($line in $text -split "`n") { $line.TrimEnd().Length | Should -BeLessOrEqual 80 }
        Compare-Model $lm $q -InputData $LmTest -BatchSize 64 -MaxPerplexityRise 0.0001 -ErrorVariable errs -ErrorAction SilentlyContinue | Out-Null
        $errs | Get-ErrorId | Should -Be PerplexityRiseAboveMaximum
    }

    It 'names the real input in the -InputShape hint' {
        Skip-WithoutShared
        { Compare-Model $LmPath $LmPath } | Should -Throw -ErrorId 'InputDimensionUnresolved,*' -ExpectedMessage '*@{ input_ids = 32,128 }*'
    }

    It 'takes the batch from -InputShape, and refuses a -BatchSize that contradicts it' {
        Skip-WithoutShared
        $r = Compare-Model $LmPath $LmPath -InputShape @{ input_ids = 2, 16 } -IntegerRange 0, 256
        $r.Rows | Should -Be 8
        $r.InputSource | Should -Be 'Synthesized (4 batches of 2)'
        { Compare-Model $LmPath $LmPath -InputShape @{ input_ids = 2, 16 } -BatchSize 8 } | Should -Throw -ErrorId 'BatchSizeConflict,*' -ExpectedMessage '*input_ids*2*-BatchSize 8*'
        (Measure-ModelLatency $LmPath -InputShape @{ input_ids = 3, 16 } -Iterations 2 -Warmup 0).BatchSize | Should -Be 3
        { Measure-ModelLatency $LmPath -InputShape @{ input_ids = 3, 16 } -BatchSize 1 -Iterations 2 } | Should -Throw -ErrorId 'BatchSizeConflict,*'
    }
}

Describe 'Get-ModelInfo of compressed models' {
    BeforeAll {
        $Wine = Get-Model $WineModel
        $Sparse = $Wine | Invoke-ModelPruning -Rate 0.5
        $SparseSparsity = ($Sparse | Get-ModelInfo).Sparsity
    }

    It 'gives the file size of a model read from a file, with or without a history' {
        $path = Join-Path $TestDrive 'wine.int8.onnx'
        $Wine | Invoke-ModelQuantization | Export-Model $path
        (Get-ModelInfo $path).FileSize | Should -Be (Get-Item $path).Length
        (Get-Model $path | Get-ModelInfo).FileSize | Should -Be (Get-Item $path).Length
        ($Wine | Invoke-ModelQuantization | Get-ModelInfo).FileSize | Should -BeNullOrEmpty
    }

    It 'counts quantized weights at their zero point: <name>' -ForEach @(
        @{ name = 'dynamic int8'; quantize = { $input | Invoke-ModelQuantization -Mode Dynamic } }
        @{ name = 'static QDQ'; quantize = { $input | Invoke-ModelQuantization -Mode Static -CalibrationData $WineData } }
        @{ name = '4-bit MatMulNBits'; quantize = { $input | Invoke-ModelQuantization -Mode WeightOnly -BlockSize 32 } }
        @{ name = '4-bit MatMulNBits with zero points'; quantize = { $input | Invoke-ModelQuantization -Mode WeightOnly -BlockSize 32 -Symmetric:$false } }
        @{ name = '4-bit DequantizeLinear'; quantize = { $input | Invoke-ModelQuantization -Mode WeightOnly -Format Standard -BlockSize 32 } }
    ) {
        $dense = ($Wine | & $quantize | Get-ModelInfo).Sparsity
        $sparse = ($Sparse | & $quantize | Get-ModelInfo).Sparsity
        # Zeros stay zeros; a few small weights round to zero too (more at 4 bits), never many at 8 bits.
        $sparse | Should -BeGreaterOrEqual ($SparseSparsity - 0.01)
        $sparse | Should -BeLessThan ($SparseSparsity + 0.1)
        $dense | Should -BeLessThan 0.1
        if ($name -notlike '4-bit*') { $dense | Should -BeLessThan 0.03 }
    }
}

Describe 'Warnings only for what needs acting on' {
    It 'prunes the quickstart model without a warning; the skipped layer is in -Verbose' {
        $run = Invoke-WithStream -ArgumentList $WineModel {
            param($wine)
            $m = Get-Model $wine
            $null = $m | Invoke-ModelPruning -Rate 0.5 -Verbose
            $null = $m | Invoke-ModelPruning -Rate 0.5 -Structured -Verbose
        }
        $run.Error | Should -BeNullOrEmpty
        $run.Warning | Should -BeNullOrEmpty
        @($run.Verbose.Message -like '*fc3*MinElements*').Count | Should -Be 2
    }

    It 'still warns about what the user can act on: dynamic quantization leaves Conv layers in float32' {
        Skip-WithoutShared
        $run = Invoke-WithStream -ArgumentList (Join-Path $SharedRoot 'models/ch_ppocr_mobile_v2.0_cls_infer.onnx') {
            param($cls) $null = Get-Model $cls | Invoke-ModelQuantization -Mode Dynamic
        }
        @($run.Warning.Message -like "Model 'ch_ppocr_mobile_v2.0_cls_infer': Conv layers were left in float32*-Mode Static*").Count | Should -Be 1
    }

    It 'quantizes a transformer weight-only without a warning; the attention MatMuls are in -Verbose' {
        Skip-WithoutShared
        $run = Invoke-WithStream -ArgumentList $Bert { param($bert) $null = Get-Model $bert | Invoke-ModelQuantization -Mode WeightOnly -Verbose }
        $run.Error | Should -BeNullOrEmpty
        $run.Warning | Should -BeNullOrEmpty
        $run.Verbose.Message | Where-Object { $_ -like '*attention*' } | Should -Not -BeNullOrEmpty
    }

    It 'keeps ONNX Runtime''s own log lines out of the output: Optimize-Model -Level All in a fresh pwsh' {
        Skip-WithoutShared
        $out = Invoke-Pwsh -WorkingDirectory $TestDrive -Command "Import-Module '$ModulePath'; `$null = Get-Model '$Bert' | Optimize-Model -Level All -WarningAction SilentlyContinue; 'done'"
        $LASTEXITCODE | Should -Be 0
        $out | Should -Be 'done'
    }
}

Describe 'Help text' {
    It 'reflows the paragraphs of about_ModelCompression to 80 columns, keeping code and lists' {
        $text = Get-Content -Raw (Join-Path (Split-Path $ModulePath) 'en-US/about_ModelCompression.help.txt')
        $lines = $text -split "`r?`n"
        foreach ($line in $lines) { $line.Length | Should -BeLessOrEqual 80 -Because $line }
        # A paragraph of the markdown that spans several source lines (the one under "### Large models") comes out
        # filled: its words in the same order, its lines (but the last) longer than 60 characters.
        $source = @(Get-Content (Join-Path $RepoRoot 'docs/en-US/about_ModelCompression.md'))
        $first = [array]::IndexOf($source, '### Large models') + 1
        $paragraph = @($source[$first..($source.Count - 1)] | ForEach-Object { $_ } | Select-Object -First 20)
        $paragraph = $paragraph[0..([array]::IndexOf($paragraph, '') - 1)]
        $paragraph.Count | Should -BeGreaterThan 2
        $words = @(($paragraph -join ' ') -replace '`', '' -split '\s+' | Where-Object { $_ })
        $start = @(for ($i = 0; $i -lt $lines.Count; $i++) { if ($lines[$i].Trim().StartsWith("$($words[0]) $($words[1]) ")) { $i } })[0]
        $filled = @(for ($i = $start; $lines[$i].Trim() -ne ''; $i++) { $lines[$i] })
        (($filled | ForEach-Object Trim) -join ' ') | Should -Be ($words -join ' ')
        foreach ($l in $filled[0..($filled.Count - 2)]) { $l.Length | Should -BeGreaterThan 60 }
    }

    It 'joins a list item''s lines in the MAML, so Get-Help wraps it at any width' {
        $maml = [xml](Get-Content -Raw (Join-Path (Split-Path $ModulePath) 'en-US/ModelCompression.dll-Help.xml'))
        $paras = $maml.GetElementsByTagName('maml:para') | ForEach-Object InnerText
        @($paras | Where-Object { $_ -match "\n" -and $_ -notmatch '^\s*\|' }) | Should -BeNullOrEmpty
    }
}

Describe 'Progress' {
    It 'reports SecondsRemaining from measured throughput: <name>' -ForEach @(
        @{ name = 'latency'; script = { param($wine, $lm, $test, $calib) Measure-ModelLatency $wine -Duration 1.5 -Warmup 0 } }
        @{ name = 'comparison'; script = { param($wine, $lm, $test, $calib) Compare-Model $lm $lm -InputData $calib -BatchSize 8 } }
        @{ name = 'pruning'; script = { param($wine, $lm, $test, $calib) Get-Model $lm | Invoke-ModelPruning -Rate 0.5 -Structured } }
        @{ name = 'quantization (GPTQ)'; script = { param($wine, $lm, $test, $calib) Get-Model $lm | Invoke-ModelQuantization -Mode WeightOnly -Algorithm GPTQ -CalibrationData $calib -CalibrationBatchSize 8 } }
        @{ name = 'distillation'; script = { param($wine, $lm, $test, $calib) Invoke-Distillation -Teacher $wine -HiddenLayers 64 -TrainingData data/wine_train.npz -Epochs 5000 -BatchSize 8 } }
    ) {
        Skip-WithoutShared
        $run = Invoke-WithStream -Script $script -ArgumentList $WineModel, $LmPath, $LmTest, (Join-Path $SharedRoot 'data/tiny_lm_calib.npz')
        $run.Error | Should -BeNullOrEmpty
        $timed = @($run.Progress | Where-Object { $_.RecordType -ne 'Completed' -and $_.SecondsRemaining -ge 0 })
        $timed.Count | Should -BeGreaterThan 0 -Because "$name reports the time left ($(@($run.Progress).Count) records)"
    }

    It 'shows distillation metrics and structured-pruning counts readably and consistently' {
        Skip-WithoutShared
        $s = Get-Model $Bert | Invoke-ModelPruning -Structured -Rate 0.5
        $text = $s.Report | Show
        $text | Should -Not -Match '\dE[+-]\d'
        $groups = @($s.Report.Entries | Where-Object Action -EQ Pruned).Count
        $s.Report.Notes[0] | Should -Match "\b$groups group\(s\) of layers pruned \($($s.Report.Metrics['PrunedLayers']) layers\)"
        $d = Invoke-Distillation -Teacher $WineModel -HiddenLayers 4096 -TrainingData $WineData -Epochs 1
        ($d.Report | Show) | Should -Not -Match '\dE[+-]\d'
    }
}

Describe 'The README' {
    It 'opens with pruning that shrinks the file, and the example does' {
        $readme = (Get-Content -Raw (Join-Path $RepoRoot 'README.md')) -replace "`r`n", "`n"
        $code = [regex]::Match($readme, '(?s)```powershell\n(.*?)```').Groups[1].Value
        $code | Should -Match 'Invoke-ModelPruning[^|\n]*-Structured'
        Copy-Item $WineModel (Join-Path $TestDrive 'model.onnx')
        Push-Location $TestDrive
        try { $out = & ([scriptblock]::Create(($code -replace '(?m)^Import-Module.*$', ''))) 3>&1 | Out-String }
        finally { Pop-Location }
        $out | Should -Not -Match 'WARNING'
        (Get-Item (Join-Path $TestDrive 'small.onnx')).Length | Should -BeLessThan ((Get-Item $WineModel).Length / 5)
    }
}
