# Invoke-Distillation as a user meets it: output, history and report, progress per epoch, errors, Ctrl+C.
BeforeAll {
    . $PSScriptRoot/Common.ps1
    $WineTest = Join-Path $RepoRoot 'data/wine_test.npz'

    # A CSV of 20 rows: $Columns random features and a label column.
    function New-Csv([string] $Path, [int] $Columns, [scriptblock] $Label) {
        $random = [Random]::new(1)
        $lines = @((@(0..($Columns - 1) | ForEach-Object { "f$_" }) + 'label') -join ',')
        $lines += foreach ($r in 0..19) {
            ((@(1..$Columns | ForEach-Object { ($random.NextDouble() - 0.5).ToString('F3', [cultureinfo]::InvariantCulture) })) + (& $Label $r)) -join ','
        }
        Set-Content -LiteralPath $Path -Value $lines
    }
}

Describe 'Invoke-Distillation' {
    It 'distils the wine teacher into a small student, with progress per epoch, and the export keeps its history' {
        $run = Invoke-WithStream -ArgumentList $WineModel, $WineData, $WineTest {
            param($teacher, $train, $test)
            Invoke-Distillation -Teacher $teacher -HiddenLayers 256 -TrainingData $train -ValidationData $test `
                -Epochs 60 -BatchSize 16 -LearningRate 0.01 -Schedule Cosine -Seed 2
        }
        $run.Error | Should -BeNullOrEmpty
        $run.Output.Count | Should -Be 1
        $student = $run.Output[0]
        $student.GetType().FullName | Should -Be 'ModelCompression.Model'
        $student.Parameters | Should -Be 4355
        $student.Stages | Should -Be 'Distillation'
        $student.Report.Metrics['TeacherValidationAccuracy'] | Should -Be 1
        $student.Report.Metrics['Epoch60.ValidationAccuracy'] | Should -BeGreaterOrEqual 0.985
        $student.Report.Entries.Count | Should -Be 60
        $epochs = @($run.Progress | Where-Object StatusDescription -Like 'epoch *')
        $epochs.Count | Should -Be 60
        $epochs[-1].StatusDescription | Should -BeLike '*validation accuracy*'
        $epochs[-1].PercentComplete | Should -Be 100
        $run.Progress | Where-Object RecordType -EQ Completed | Should -Not -BeNullOrEmpty

        $path = Join-Path $TestDrive 'student.onnx'
        $student | Export-Model $path
        "$((Get-Model $path).History[-1].Parameters['Temperature'])" | Should -Be '4'
    }

    # The issue's pipeline on breast cancer: structured pruning to a quarter of the width costs the model accuracy
    # (92.4 % against the teacher's 96.5 %); distillation from the original brings it back within 1.5 points.
    It 'recovers the accuracy of a pruned model' {
        Skip-WithoutShared
        $teacher = Get-Model (Join-Path $SharedRoot 'models/breast_cancer_mlp.onnx')
        $train = Join-Path $SharedRoot 'data/breast_cancer_train.npz'
        $test = Join-Path $SharedRoot 'data/breast_cancer_test.npz'
        $pruned = $teacher | Invoke-ModelPruning -Structured -Rate 0.75 -WarningAction SilentlyContinue
        $before = (Compare-Model $teacher $pruned -InputData $test).Outputs[0]
        $student = $pruned | Invoke-Distillation -Teacher $teacher -TrainingData $train -ValidationData $test -Epochs 40 -BatchSize 16 -LearningRate 0.003 -Schedule Cosine
        $after = (Compare-Model $teacher $student -InputData $test).Outputs[0]
        $student | Export-Model (Join-Path $TestDrive 'recovered.onnx')

        $student.Parameters | Should -Be $pruned.Parameters
        $student.Parameters * 4 | Should -BeLessOrEqual 74242
        $student.Stages | Should -Be 'Pruning > Distillation'
        $before.DifferenceAccuracy | Should -BeLessThan ($after.ReferenceAccuracy - 0.015) -Because 'pruning alone must lose accuracy, or there is nothing to recover'
        $after.DifferenceAccuracy | Should -BeGreaterOrEqual ($after.ReferenceAccuracy - 0.015)
        Join-Path $TestDrive 'recovered.onnx' | Should -Exist
    }

    It 'trains a student from the pipeline and leaves it unchanged' {
        $draft = Invoke-Distillation -Teacher $WineModel -HiddenLayers 16 -TrainingData $WineData -Epochs 1
        $next = $draft | Invoke-Distillation -Teacher $WineModel -TrainingData $WineData -Epochs 2 -Optimizer SGD -LearningRate 0.05
        $draft.Stages | Should -Be 'Distillation'
        $next.Stages | Should -Be 'Distillation > Distillation'
    }

    It 'refuses bad input with a stable id before training' {
        New-Csv (Join-Path $TestDrive 'narrow.csv') 7 { param($r) $r % 3 }
        New-Csv (Join-Path $TestDrive 'labels.csv') 13 { param($r) $r % 5 }
        $run = Invoke-WithStream -ArgumentList $WineModel, (Join-Path $TestDrive 'narrow.csv') {
            param($teacher, $data)
            Invoke-Distillation -Teacher $teacher -HiddenLayers 8 -TrainingData $data -Epochs 1
        }
        $run.Error | Get-ErrorId | Should -Be DataShapeMismatch
        $run.Progress | Where-Object StatusDescription -Like 'epoch*' | Should -BeNullOrEmpty
        $cases = @(
            @{ TrainingData = (Join-Path $TestDrive 'labels.csv'); Epochs = 1; Id = 'LabelOutOfRange' }
            @{ TrainingData = $WineData; Alpha = 2; Id = 'AlphaOutOfRange' }
            @{ TrainingData = (Join-Path $RepoRoot 'data/missing.npz'); Id = 'DataFileNotFound' }
            @{ TrainingData = $WineData; Epochs = 1; Freeze = 'nothing'; Id = 'FreezeTensorNotFound' }
        )
        foreach ($case in $cases) {
            $id = $case.Id; $case.Remove('Id')
            $caught = try { Invoke-Distillation -Teacher $WineModel -HiddenLayers 8 @case -ErrorAction Stop; $null } catch { $_ }
            $caught | Get-ErrorId | Should -Be $id
        }
    }

    It 'refuses a teacher and a student that disagree' {
        Skip-WithoutShared
        $caught = try { Get-Model (Join-Path $SharedRoot 'models/breast_cancer_mlp.onnx') | Invoke-Distillation -Teacher $WineModel -TrainingData $WineData -Epochs 1 -ErrorAction Stop } catch { $_ }
        $caught | Get-ErrorId | Should -Be DistillationInputMismatch
        $caught = try { Get-Model (Join-Path $SharedRoot 'models/tiny_bert.onnx') | Invoke-Distillation -Teacher $WineModel -TrainingData $WineData -Epochs 1 -ErrorAction Stop } catch { $_ }
        $caught | Should -Not -BeNullOrEmpty
    }

    It 'warns about options that do not apply' {
        $null = Invoke-Distillation -Teacher $WineModel -HiddenLayers 8 -TrainingData $WineData -Epochs 1 -Loss MSE -Temperature 2 -Momentum 0.5 -WarningVariable warnings -WarningAction SilentlyContinue
        $warnings.Count | Should -Be 2
    }

    It 'stops on Ctrl+C and keeps the best student only with -Partial (<partial>)' -ForEach @(@{ partial = $false }, @{ partial = $true }) {
        $ps = New-PowerShell
        try {
            $null = $ps.AddScript("Invoke-Distillation -Teacher '$WineModel' -HiddenLayers 64 -TrainingData '$WineData' -ValidationData '$WineTest' -Epochs 100000 -BatchSize 4 -Partial:`$$partial")
            $async = $ps.BeginInvoke()
            while (@($ps.Streams.Progress | Where-Object StatusDescription -Like 'epoch *').Count -lt 3 -and -not $async.IsCompleted) { Start-Sleep -Milliseconds 20 }
            $ps.Stop()
            $stopped = try { $ps.EndInvoke($async); $null } catch { $_.Exception.InnerException }
            $stopped | Should -BeOfType System.Management.Automation.PipelineStoppedException
            $ps.Commands.Clear()
            $kept = $ps.AddScript('$DistillationPartial').Invoke()
            if ($partial) {
                $kept[0].GetType().FullName | Should -Be 'ModelCompression.Model'
                "$($kept[0].History[-1].Parameters['Partial'])" | Should -Be 'true'
            }
            else { $kept | Should -BeNullOrEmpty }
        }
        finally { $ps.Dispose() }
    }
}

# Language models: tiny_lm ([batch, seq] token ids in, [batch, seq, 256] logits out) distilled on windows of a token stream.
Describe 'Invoke-Distillation on a language model' {
    BeforeAll {
        $TinyLm = Join-Path $SharedRoot 'models/tiny_lm.onnx'
        $Tokens = Join-Path $SharedRoot 'data/tiny_lm_train.npy'

        # A version-1 .npy of int64 values with the given shape.
        function ConvertTo-Npy([long[]] $Values, [long[]] $Shape) {
            $header = "{'descr': '<i8', 'fortran_order': False, 'shape': ($($Shape -join ', ')$(if ($Shape.Count -eq 1) { ',' })), }"
            $header += ' ' * ((16 - (10 + $header.Length + 1) % 16) % 16) + "`n"
            $bytes = [Collections.Generic.List[byte]]::new()
            $bytes.AddRange([byte[]](0x93, 78, 85, 77, 80, 89, 1, 0, ($header.Length -band 0xff), ($header.Length -shr 8)))
            $bytes.AddRange([Text.Encoding]::ASCII.GetBytes($header))
            foreach ($v in $Values) { $bytes.AddRange([BitConverter]::GetBytes([long]$v)) }
            $bytes.ToArray()
        }

        # Validation windows: x = $Rows windows of 128 tokens from the start of the training corpus (int32 after its
        # 128-byte header), y = the next token at each position, or one label per row with -LabelPerRow.
        function New-Windows([string] $Path, [int] $Rows, [switch] $LabelPerRow) {
            $stream = [IO.File]::OpenRead($Tokens)
            try {
                $raw = [byte[]]::new(4 * ($Rows * 128 + 1))
                $null = $stream.Seek(128, 'Begin'); $stream.ReadExactly($raw)
            }
            finally { $stream.Dispose() }
            $ids = [long[]]::new($raw.Length / 4)
            for ($i = 0; $i -lt $ids.Length; $i++) { $ids[$i] = [BitConverter]::ToInt32($raw, 4 * $i) }
            $zip = [IO.Compression.ZipFile]::Open($Path, 'Create')
            try {
                $entries = [ordered]@{ x = (ConvertTo-Npy $ids[0..($Rows * 128 - 1)] @($Rows, 128)) }
                $entries.y = if ($LabelPerRow) { ConvertTo-Npy $ids[0..($Rows - 1)] @($Rows) } else { ConvertTo-Npy $ids[1..($Rows * 128)] @($Rows, 128) }
                foreach ($name in $entries.Keys) {
                    $s = $zip.CreateEntry("$name.npy").Open()
                    try { $s.Write($entries[$name], 0, $entries[$name].Length) } finally { $s.Dispose() }
                }
            }
            finally { $zip.Dispose() }
        }
    }

    It 'distils a pruned tiny_lm on token windows, with progress per step and perplexity in the report' {
        Skip-WithoutShared
        New-Windows (Join-Path $TestDrive 'valid.npz') 8
        $run = Invoke-WithStream -ArgumentList $TinyLm, $Tokens, (Join-Path $TestDrive 'valid.npz') {
            param($model, $train, $valid)
            $t = Get-Model $model
            $t | Invoke-ModelPruning -Structured -Rate 0.5 -WarningAction SilentlyContinue |
                Invoke-Distillation -Teacher $t -TrainingData $train -SequenceLength 32 -BatchSize 4 -MaxSteps 4 -ValidationInterval 2 `
                    -ValidationData $valid -LearningRate 0.0002 -Temperature 1 -Alpha 1
        }
        $run.Error | Should -BeNullOrEmpty
        $s = $run.Output[0]
        $s.Stages | Should -Be 'Pruning > Distillation'
        "$($s.History[-1].Parameters['MaxSteps'])/$($s.History[-1].Parameters['SequenceLength'])" | Should -Be '4/32'
        $s.Report.Metrics['Steps'] | Should -Be 4
        $teacher = $s.Report.Metrics['TeacherValidationPerplexity']
        $teacher | Should -BeGreaterThan 1.5
        $teacher | Should -BeLessThan 10
        foreach ($step in 2, 4) { $s.Report.Metrics["Step$step.ValidationPerplexity"] | Should -BeGreaterThan $teacher }
        $records = @($run.Progress | Where-Object { $_.StatusDescription -like 'step *' -and $_.StatusDescription -like '*validation perplexity*' })
        @($records | ForEach-Object { ($_.StatusDescription -split ':')[0] }) | Should -Be 'step 2/4', 'step 4/4'
        @($records.PercentComplete) | Should -Be 50, 100
    }

    It 'distils a pruned Llama student in the KV-cache layout on windows of 128 tokens' {
        Skip-WithoutShared
        $valid = Join-Path $TestDrive 'llama-valid.npz'
        New-Windows $valid 4
        $teacher = Get-Model (Join-Path $SharedRoot 'models/tiny_llama.onnx')
        $pruned = Get-Model (Join-Path $SharedRoot 'models/tiny_llama_kv.onnx') | Invoke-ModelPruning -Structured -Rate 0.5 -WarningAction SilentlyContinue
        # the plain teacher and the cache student each derive what windows do not hold (mask, positions, an empty cache)
        $s = $pruned | Invoke-Distillation -Teacher $teacher -TrainingData $Tokens -SequenceLength 128 -BatchSize 4 -MaxSteps 3 -ValidationData $valid
        $inputs = @(($s | Get-ModelInfo).Inputs.Name)
        $inputs | Should -Be @(($pruned | Get-ModelInfo).Inputs.Name)
        $inputs | Should -Contain 'past_key_values.3.value'
        $s.History[-1].Parameters['SequenceLength'] | Should -Be '128'
        $before = (Compare-Model $teacher $pruned -InputData $valid).PerplexityIncrease
        $after = (Compare-Model $teacher $s -InputData $valid).PerplexityIncrease
        $after | Should -BeLessThan (0.8 * $before)
    }

    It 'checks language-model parameters and data with stable ids' {
        Skip-WithoutShared
        New-Windows (Join-Path $TestDrive 'per-row.npz') 4 -LabelPerRow
        $far = Join-Path $TestDrive 'far.npy'
        [IO.File]::WriteAllBytes($far, (ConvertTo-Npy @(0..399 | ForEach-Object { if ($_ -eq 200) { 300 } else { $_ % 256 } }) @(400)))
        $t = Get-Model $TinyLm
        $test = Join-Path $SharedRoot 'data/tiny_lm_test.npz'
        $perRow = Join-Path $TestDrive 'per-row.npz'
        $cases = @(
            @{ TrainingData = $test; SequenceLength = 32; Id = 'SequenceLengthNeedsTokenData' }
            @{ TrainingData = $Tokens; Id = 'TokenDataNeedsSequenceLength' }
            @{ TrainingData = $Tokens; SequenceLength = 500; Id = 'SequenceLengthUnsupported' }
            @{ TrainingData = $far; SequenceLength = 32; Id = 'TokenIdOutOfRange' }
            @{ TrainingData = $perRow; Id = 'LabelShapeMismatch' }
            @{ TrainingData = $Tokens; SequenceLength = 32; ValidationData = $perRow; Id = 'LabelShapeMismatch' }
        )
        foreach ($case in $cases) {
            $id = $case.Id; $case.Remove('Id')
            $caught = try { $t | Invoke-Distillation -Teacher $t -BatchSize 2 -MaxSteps 1 @case -ErrorAction Stop; $null } catch { $_ }
            $caught | Get-ErrorId | Should -Be $id -Because ($case.Keys -join ', ')
        }
        foreach ($bad in @{ MaxSteps = 0 }, @{ SequenceLength = 0 }, @{ ValidationInterval = 0 }) {
            $caught = try { $t | Invoke-Distillation -Teacher $t -TrainingData $Tokens @bad -ErrorAction Stop; $null } catch { $_ }
            $caught | Get-ErrorId | Should -Be 'ParameterArgumentValidationError'
        }
    }
}
