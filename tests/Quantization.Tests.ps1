# Invoke-ModelQuantization and Optimize-Model from PowerShell: new models with history, refusals with stable ids.
BeforeAll {
    . $PSScriptRoot/Common.ps1
    $WineTest = Join-Path $RepoRoot 'data/wine_test.npz'
}

Describe 'Invoke-ModelQuantization' {
    It 'Dynamic returns a new, smaller model with history and a report, and leaves its input alone' {
        $m = Get-Model $WineModel
        $q = $m | Invoke-ModelQuantization -Mode Dynamic -PerChannel
        $q.GetType().FullName | Should -Be 'ModelCompression.Model'
        $q.SizeBytes | Should -BeLessThan (0.3 * $m.SizeBytes)
        $q.Stages | Should -Be 'Quantize'
        $m.Stages | Should -Be ''
        $q.Report.Metrics['Quantized.Gemm'] | Should -Be 3
        "$($q.History[0].Parameters['PerChannel'])" | Should -Be 'True'
    }

    It 'refuses parameters that do not apply to the mode' {
        $m = Get-Model $WineModel
        $m | Invoke-ModelQuantization -Mode Dynamic -Bits 4 -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be QuantizationParameterNotApplicable
        $errs[0].CategoryInfo.Category | Should -Be InvalidArgument
        $errs[0].Exception.Message | Should -BeLike '*-Bits*'
        $m | Invoke-ModelQuantization -Mode Float16 -CalibrationData $WineData -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be QuantizationParameterNotApplicable
        $m | Invoke-ModelQuantization -Mode Static -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be QuantizationCalibrationDataMissing
    }

    It 'refuses float16 options that -StorageOnly would ignore: <option>' -ForEach @(
        @{ option = 'KeepIOTypes'; arguments = @{ KeepIOTypes = $true } }
        @{ option = 'Float16BlockList'; arguments = @{ Float16BlockList = 'Softmax' } }
    ) {
        Get-Model $WineModel | Invoke-ModelQuantization -Mode Float16 -StorageOnly @arguments -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be QuantizationParameterNotApplicable
        $errs[0].Exception.Message | Should -BeLike "*-$option*"
    }

    It 'refuses an already quantized model unless -Force' {
        $q = Get-Model $WineModel | Invoke-ModelQuantization -ExcludeNode '/fc3/*'
        $q | Invoke-ModelQuantization -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be ModelAlreadyQuantized
        ($q | Invoke-ModelQuantization -Force).Stages | Should -Be 'Quantize > Quantize'
    }

    It 'Static calibrates from a file with progress, and the export has QDQ nodes' {
        $path = Join-Path $TestDrive 'wine_static.onnx'
        $run = Invoke-WithStream -ArgumentList $WineModel, $WineData, $path {
            param($model, $data, $path)
            Get-Model $model | Invoke-ModelQuantization -Mode Static -CalibrationData $data -CalibrationBatchSize 16 | Export-Model $path
        }
        $run.Error | Should -BeNullOrEmpty
        $run.Progress.StatusDescription | Where-Object { $_ -like 'Calibrating*' } | Should -Not -BeNullOrEmpty
        $ops = (Get-ModelInfo $path).Operators
        $ops.Keys | Should -Contain 'QuantizeLinear'
        $ops.Keys | Should -Contain 'DequantizeLinear'
    }

    It 'Static with an accuracy budget is measured on validation data, reported, and refused elsewhere' {
        $q = Get-Model $WineModel | Invoke-ModelQuantization -Mode Static -CalibrationData $WineData -TargetCosine 0.999 -ValidationData $WineTest -WarningAction SilentlyContinue
        $q.Report.Metrics['ValidationFigure'] | Should -BeGreaterOrEqual 0.999
        $q.Report.Metrics['BudgetLimit'] | Should -Be 0.999
        "$($q.History[-1].Parameters['MinCosine'])" | Should -Be '0.999'
        @($q.Report.Entries | Where-Object Action -eq 'Candidate').Count | Should -BeGreaterThan 0
        Get-Model $WineModel | Invoke-ModelQuantization -Mode Dynamic -MinCosine 0.99 -ValidationData $WineTest -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be QuantizationParameterNotApplicable
        Get-Model $WineModel | Invoke-ModelQuantization -Mode Static -CalibrationData $WineData -MinCosine 1 -ValidationData $WineTest -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be QuantizationBudgetUnreachable
        $errs[0].CategoryInfo.Category | Should -Be InvalidOperation
    }

    It 'WeightOnly under an accuracy budget returns a smaller model that keeps it, with the candidates it tried' {
        $m = Get-Model $WineModel
        $q = $m | Invoke-ModelQuantization -Mode WeightOnly -MaxAccuracyDrop 0.01 -ValidationData $WineData -Verbose 4>&1 -WarningAction SilentlyContinue
        $verbose = @($q | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] })
        $q = $q | Where-Object { $_ -is [ModelCompression.Model] }
        $q.SizeBytes | Should -BeLessThan $m.SizeBytes
        $q.Report.Metrics['ValidationFigure'] | Should -BeLessOrEqual 0.01
        @($q.Report.Entries | Where-Object Action -eq 'Candidate' | Where-Object Detail -Like '*chosen*').Count | Should -Be 1
        @($q.Report.Entries | Where-Object { $_.Action -in 'Quantized', 'Kept' -and $_.Bytes -gt 0 }).Count | Should -Be 3
        $verbose.Message | Where-Object { $_ -like 'candidate*' } | Should -Not -BeNullOrEmpty
        $q.Report.Notes | Where-Object { $_ -like '*optimistic*Compare-Model*' } | Should -Not -BeNullOrEmpty
        (Compare-Model $m $q -InputData $WineTest -MaxAccuracyDrop 0.01).Passed | Should -BeTrue
    }

    It 'takes a precision per layer, the mixed preset, 8 bits and AWQ' {
        $q = Get-Model $WineModel | Invoke-ModelQuantization -Mode WeightOnly -Bits 8 -MixedPrecision -LayerPrecision @{ '*fc1*' = '4/16' } -Algorithm AWQ -CalibrationData $WineData
        $rows = @($q.Report.Entries | Where-Object Action -eq 'Quantized')
        $rows.Count | Should -Be 3
        @($rows | Where-Object Detail -Like '4-bit blocks of 16*-LayerPrecision*').Count | Should -Be 1
        $rows | ForEach-Object { $_.Bytes | Should -BeGreaterThan 0; $_.Error | Should -Not -BeNullOrEmpty }
        $q.History[-1].Parameters['Algorithm'] | Should -Be 'AWQ'
        $q.History[-1].Parameters['MixedPrecision'] | Should -Be 'True'
    }

    It 'completes and validates -Algorithm from the engine''s table' {
        $line = 'Invoke-ModelQuantization -Algorithm '
        $names = (TabExpansion2 $line $line.Length).CompletionMatches.CompletionText
        $names | Should -Be @('RTN', 'HQQ', 'GPTQ', 'AWQ')
        { Get-Model $WineModel | Invoke-ModelQuantization -Mode WeightOnly -Algorithm SmoothQuant } | Should -Throw -ErrorId 'ParameterArgumentValidationError,ModelCompression.InvokeModelQuantizationCommand'
    }

    It 'Dynamic on a Conv-only model explains why nothing was quantized' {
        Skip-WithoutShared
        Get-Model (Join-Path $SharedRoot 'models/ch_PP-OCRv4_det_infer.onnx') |
            Invoke-ModelQuantization -Mode Dynamic -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be QuantizationNothingToQuantize
        $errs[0].Exception.Message | Should -BeLike '*Conv*'
    }

    It 'WeightOnly and Float16 shrink the model' {
        $m = Get-Model $WineModel
        ($m | Invoke-ModelQuantization -Mode WeightOnly -Bits 4 -BlockSize 16).SizeBytes | Should -BeLessThan (0.2 * $m.SizeBytes)
        ($m | Invoke-ModelQuantization -Mode Float16 -StorageOnly).SizeBytes | Should -BeLessThan (0.52 * $m.SizeBytes)
    }
}

Describe 'Invoke-ModelQuantization -Mode WeightOnly algorithms' {
    It 'GPTQ calibrates, reports each layer''s output error, and keeps the parameter count' {
        $m = Get-Model $WineModel
        $run = Invoke-WithStream -ArgumentList $WineModel, $WineData {
            param($model, $data)
            Get-Model $model | Invoke-ModelQuantization -Mode WeightOnly -Algorithm GPTQ -CalibrationData $data -Damping 2 -ActOrder -BlockSize 16 -Verbose
        }
        $run.Error | Should -BeNullOrEmpty
        $q = $run.Output | Select-Object -Last 1
        $q.Parameters | Should -Be $m.Parameters
        $rows = @($q.Report.Entries | Where-Object Action -EQ Quantized)
        $rows.Count | Should -Be 3
        foreach ($row in $rows) { $row.Error | Should -BeGreaterThan 0; $row.Detail | Should -BeLike '*GPTQ*output error*' }
        $q.Report.Metrics['ReconstructionErrorMean'] | Should -BeGreaterThan 0
        $q.History[-1].Parameters['Algorithm'] | Should -Be 'GPTQ'
        $q.History[-1].Parameters['Damping'] | Should -Be '2'
        $q.History[-1].Parameters['ActOrder'] | Should -Be 'True'
        $run.Verbose.Message | Where-Object { $_ -like 'Output error of the quantized layers*' } | Should -Not -BeNullOrEmpty
        $run.Progress.StatusDescription | Where-Object { $_ -like 'Collecting activation statistics*' } | Should -Not -BeNullOrEmpty
    }

    It 'HQQ needs no data and -HeadBits keeps the output head at 8 bits' {
        $q = Get-Model $WineModel | Invoke-ModelQuantization -Mode WeightOnly -Algorithm HQQ -HeadBits 8
        $head = @($q.Report.Entries | Where-Object Detail -Like '*(output head)*')
        $head.Count | Should -Be 1
        $head[0].Detail | Should -BeLike '8-bit*HQQ*'
        $q.History[-1].Parameters['HeadBits'] | Should -Be '8'
    }

    It 'refuses <case>' -ForEach @(
        @{ case = 'GPTQ without calibration data'; arguments = @{ Mode = 'WeightOnly'; Algorithm = 'GPTQ' }; id = 'QuantizationCalibrationDataMissing'; text = '*-CalibrationData*' }
        @{ case = '-Damping with another algorithm'; arguments = @{ Mode = 'WeightOnly'; Algorithm = 'HQQ'; Damping = 2 }; id = 'QuantizationParameterNotApplicable'; text = '*-Damping*GPTQ*' }
        @{ case = '-ActOrder without an algorithm'; arguments = @{ Mode = 'WeightOnly'; ActOrder = $true }; id = 'QuantizationParameterNotApplicable'; text = '*-ActOrder*' }
        @{ case = '-Algorithm in another mode'; arguments = @{ Mode = 'Dynamic'; Algorithm = 'HQQ' }; id = 'QuantizationParameterNotApplicable'; text = '*-Algorithm*' }
        @{ case = '-HeadBits in another mode'; arguments = @{ Mode = 'Dynamic'; HeadBits = 8 }; id = 'QuantizationParameterNotApplicable'; text = '*-HeadBits*' }
        @{ case = 'a budget without validation data'; arguments = @{ Mode = 'WeightOnly'; MaxPerplexityRise = 0.005 }; id = 'QuantizationValidationDataMissing'; text = '*-ValidationData*' }
        @{ case = 'two budgets'; arguments = @{ Mode = 'WeightOnly'; MinCosine = 0.9; MaxAccuracyDrop = 0.01 }; id = 'QuantizationBudgetAmbiguous'; text = '*-MinCosine and -MaxAccuracyDrop*' }
        @{ case = 'a layer map naming no node'; arguments = @{ Mode = 'WeightOnly'; LayerPrecision = @{ 'attention*' = 8 } }; id = 'QuantizationLayerPatternUnmatched'; text = "*'attention*'*" }
        @{ case = 'a precision that is not one'; arguments = @{ Mode = 'WeightOnly'; LayerPrecision = @{ '*' = '5' } }; id = 'QuantizationLayerPrecisionInvalid'; text = "*'5'*" }
        @{ case = 'AWQ without calibration data'; arguments = @{ Mode = 'WeightOnly'; Algorithm = 'AWQ' }; id = 'QuantizationCalibrationDataMissing'; text = '*AWQ*-CalibrationData*' }
        @{ case = 'two algorithms that both choose codes'; arguments = @{ Mode = 'WeightOnly'; Algorithm = 'GPTQ', 'HQQ' }; id = 'QuantizationAlgorithmCombinationInvalid'; text = '*GPTQ, HQQ*' }
    ) {
        Get-Model $WineModel | Invoke-ModelQuantization @arguments -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be $id
        $errs[0].CategoryInfo.Category | Should -Be InvalidArgument
        $errs[0].Exception.Message | Should -BeLike $text
    }

    It 'refuses calibration data that does not fit the model before running it' {
        Skip-WithoutShared
        Get-Model $WineModel | Invoke-ModelQuantization -Mode WeightOnly -Algorithm GPTQ -CalibrationData (Join-Path $SharedRoot 'data/tiny_lm_calib.npz') -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be DataShapeMismatch
    }

    It 'quantizes a float16 model, and tells -Verbose (not a warning) of the attention products it leaves alone' {
        Skip-WithoutShared
        $q = Get-Model (Join-Path $SharedRoot 'models/tiny_bert.onnx') | Invoke-ModelQuantization -Mode Float16 |
            Invoke-ModelQuantization -Mode WeightOnly -WarningVariable warnings -Verbose 4>&1
        $verbose = @($q | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] })
        $q = $q | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] }
        ($q | Get-ModelInfo).Operators['com.microsoft.MatMulNBits'] | Should -Be 17
        $warnings | Should -BeNullOrEmpty
        $verbose | Where-Object { "$_" -like '*computed values*' } | Should -Not -BeNullOrEmpty
        Get-Model (Join-Path $SharedRoot 'models/tiny_bert.onnx') | Invoke-ModelQuantization -Mode Float16 |
            Invoke-ModelQuantization -Mode Dynamic -ErrorVariable errs -ErrorAction SilentlyContinue -WarningAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be QuantizationNothingToQuantize
        $errs[0].Exception.Message | Should -BeLike '*float16*'
    }
}

Describe 'Optimize-Model' {
    It 'returns a new model, and warns when a level is provider-specific' {
        (Get-Model $WineModel | Optimize-Model -WarningVariable warnings).Stages | Should -Be 'Optimize'
        $warnings | Should -BeNullOrEmpty
        $null = Get-Model $WineModel | Optimize-Model -Level All -WarningVariable warnings -WarningAction SilentlyContinue
        $warnings | Should -BeLike '*CPU*'
        Get-Model $WineModel | Optimize-Model -ExecutionProvider NoSuchProvider -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be ExecutionProviderUnavailable
    }
}
