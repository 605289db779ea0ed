# Invoke-ModelPruning from PowerShell: new sparse or smaller models, the input untouched, refusals with stable ids.
BeforeAll { . $PSScriptRoot/Common.ps1 }

Describe 'Invoke-ModelPruning' {
    It 'global magnitude pruning returns a new sparse model, with progress, and leaves the input alone' {
        $run = Invoke-WithStream -ArgumentList $WineModel {
            param($wine)
            $m = Get-Model $wine
            $p = $m | Invoke-ModelPruning -Rate 0.5 -Scope Global
            $p, $m, ($p | Get-ModelInfo).Sparsity, ($m | Get-ModelInfo).Sparsity
        }
        $run.Error | Should -BeNullOrEmpty
        $pruned, $original, $sparsity, $originalSparsity = $run.Output
        $pruned.GetType().FullName | Should -Be 'ModelCompression.Model'
        $pruned.Stages | Should -Be 'Pruning'
        $original.Stages | Should -Be ''
        $pruned.Report.Metrics['Sparsity'] | Should -BeGreaterThan 0.495
        $pruned.Report.Metrics['Sparsity'] | Should -BeLessThan 0.505
        $sparsity | Should -BeGreaterThan 0.45
        $originalSparsity | Should -BeLessThan 0.01
        $run.Progress | Should -Not -BeNullOrEmpty
        $run.Warning.Message | Where-Object { $_ -like '*left unpruned*' } | Should -Not -BeNullOrEmpty
    }

    It 'structured pruning shrinks the model, and the exported file loads back' {
        $path = Join-Path $TestDrive 'small.onnx'
        $s = Invoke-ModelPruning $WineModel -Rate 0.75 -Structured -WarningAction SilentlyContinue
        $s | Export-Model $path
        $s.SizeBytes | Should -BeLessThan (281293 / 3)
        # 13→64→64→3: 13*64+64 + 64*64+64 + 64*3+3
        (Get-Model $path).Parameters | Should -Be (13 * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3)
        (Get-Model $path).History[-1].Parameters['Method'] | Should -Be 'Structured'
    }

    It 'reproduces a -Seed in another process (the seed in the history means something)' {
        # Two processes prune with one seed; their models compute the same outputs (the files differ in timings).
        foreach ($n in 1, 2) {
            $null = Invoke-Pwsh -WorkingDirectory $TestDrive -Command ("Import-Module '$ModulePath'; Get-Model '$WineModel' | " +
                "Invoke-ModelPruning -Rate 0.5 -Criterion Random -Seed 7 -WarningAction Ignore | Export-Model ./seed7-$n.onnx")
            $LASTEXITCODE | Should -Be 0
        }
        $r = Compare-Model (Join-Path $TestDrive 'seed7-1.onnx') (Join-Path $TestDrive 'seed7-2.onnx') -InputData (Join-Path $RepoRoot 'data/wine_test.npz')
        $r.MaxAbsError | Should -Be 0
    }

    It 'refuses <arguments> with <id>' -ForEach @(
        @{ arguments = '-Rate 1'; id = 'PruningRateOutOfRange' }
        @{ arguments = '-Rate -0.2'; id = 'PruningRateOutOfRange' }
        @{ arguments = '-Pattern 4:4'; id = 'PruningPatternInvalid' }
        @{ arguments = '-Pattern 2-4'; id = 'PruningPatternInvalid' }
        @{ arguments = '-Rate 0.5 -Seed 3'; id = 'PruningOptionConflict' }
        @{ arguments = '-Rate 0.5 -Structured -Seed 2'; id = 'PruningOptionConflict' }
        @{ arguments = '-Rate 0.5 -CalibrationData ./data/wine_train.npz'; id = 'PruningOptionConflict' }
        @{ arguments = '-Rate 0.5 -Criterion Activation'; id = 'PruningCalibrationDataRequired' }
        @{ arguments = '-Rate 0.5 -Criterion Activation -CalibrationData ./data/missing.npz'; id = 'DataFileNotFound' }
        @{ arguments = '-Rate 0.5 -Pattern 2:4'; id = 'AmbiguousParameterSet' }
        @{ arguments = '-Pattern 2:4 -Structured'; id = 'AmbiguousParameterSet' }
        @{ arguments = '-Pattern 2:4 -Scope Global'; id = 'AmbiguousParameterSet' }
        @{ arguments = '-Rate 0.999 -Structured -MinElements 0'; id = 'PruningWouldEmptyLayer' }
        @{ arguments = '-Rate 0.5 -Target Heads'; id = 'PruningOptionConflict' }
        @{ arguments = '-Rate 0.5 -HiddenRate 0.5'; id = 'PruningOptionConflict' }
        @{ arguments = '-Structured -Target Ffn -HeadRate 0.5'; id = 'PruningOptionConflict' }
        @{ arguments = '-Structured -FfnRate 1.5'; id = 'PruningRateOutOfRange' }
        @{ arguments = '-Structured -KeyValueHeadRate 1'; id = 'PruningRateOutOfRange' }
        @{ arguments = '-Rate 0.5 -KeyValueHeadRate 0.5'; id = 'PruningOptionConflict' }
        @{ arguments = '-Structured -Target Heads -KeyValueHeadRate 0.5'; id = 'PruningOptionConflict' }
        @{ arguments = '-Structured -KeyValueHeadRate 0.5'; id = 'PruningNoPrunableChannels' }
        @{ arguments = '-Structured'; id = 'PruningRateRequired' }
        @{ arguments = '-Structured -Rate 0.5 -Target Depth'; id = 'ParameterArgumentValidationError' }
        @{ arguments = '-Structured -Rate 0.5 -Target Heads'; id = 'PruningNoPrunableChannels' }
        @{ arguments = '-RemoveBlocks 0 -CalibrationData ./data/wine_train.npz'; id = 'PruningRemoveBlocksInvalid' }
        @{ arguments = '-RemoveBlocks 1'; id = 'PruningCalibrationDataRequired' }
        @{ arguments = '-RemoveBlocks 1 -RemoveBlockName x -CalibrationData ./data/wine_train.npz'; id = 'PruningOptionConflict' }
        @{ arguments = '-Rate 0.5 -RemoveBlockName x'; id = 'PruningOptionConflict' }
        @{ arguments = '-Pattern 2:4 -RemoveBlockName x'; id = 'AmbiguousParameterSet' }
        @{ arguments = '-RemoveBlockName x'; id = 'PruningNoBlocks' }
    ) {
        Push-Location $RepoRoot
        try {
            $caught = try { Invoke-Expression "Get-Model ./models/wine_mlp.onnx | Invoke-ModelPruning $arguments -WarningAction SilentlyContinue"; $null } catch { $_ }
        }
        finally { Pop-Location }
        $caught | Get-ErrorId | Should -Be $id
    }

    It 'prunes a transformer''s parts by -Target and per-part rates, and removes residual blocks by name' {
        Skip-WithoutShared
        $lm = Get-Model (Join-Path $SharedRoot 'models/tiny_lm.onnx')
        $a = $lm | Invoke-ModelPruning -Structured -Target Heads, Ffn -Rate 0.5 -WarningAction SilentlyContinue
        $a.Report.Metrics['HeadsAfter'] | Should -Be 8
        $a.Report.Metrics['HiddenAfter'] | Should -Be 256
        $a.Report.Metrics['FfnAfter'] | Should -Be 2048
        $a.History[-1].Parameters['Target'] | Should -Be 'Heads,Ffn'
        $b = $lm | Invoke-ModelPruning -RemoveBlockName 'blocks.3' -Structured -HiddenRate 0.25 -Verbose -WarningAction SilentlyContinue 4>&1
        $verbose = $b | Where-Object { $_ -is [System.Management.Automation.VerboseRecord] }
        $b = $b | Where-Object { $_ -isnot [System.Management.Automation.VerboseRecord] }
        $b.Report.Metrics['BlocksRemoved'] | Should -Be 1
        $b.Report.Metrics['HiddenAfter'] | Should -Be 192
        $b.Report.Metrics['FfnAfter'] | Should -Be 3072
        $b.History[-1].Parameters['RemoveBlockName'] | Should -Be 'blocks.3'
        ($b.Report.Entries | Where-Object { $_.OpType -eq 'Block' -and $_.Action -eq 'Removed' }).Target | Should -Be 'blocks.3'
        $b.SizeBytes | Should -BeLessThan $lm.SizeBytes
        $verbose.Message | Where-Object { $_ -like 'Not exact for the kept channels*' } | Should -Not -BeNullOrEmpty
    }

    It 'prunes grouped-query attention by query heads or by key/value groups, and reports the cache it leaves' {
        Skip-WithoutShared
        $llama = Get-Model (Join-Path $SharedRoot 'models/tiny_llama_kv.onnx')
        $a = $llama | Invoke-ModelPruning -Structured -HeadRate 0.5 -FfnRate 0.5 -WarningAction SilentlyContinue
        $a.Report.Metrics['HeadsAfter'] | Should -Be 16
        $a.Report.Metrics['KeyValueHeadsAfter'] | Should -Be 8
        $a.Report.Metrics['FfnAfter'] | Should -Be 1376
        $a.Report.Notes | Where-Object { $_ -like 'Key/value cache: 2,048 -> 2,048 bytes per token*unchanged*' } | Should -Not -BeNullOrEmpty
        $b = $llama | Invoke-ModelPruning -Structured -Target KeyValueHeads -Rate 0.5 -WarningAction SilentlyContinue
        $b.Report.Metrics['KeyValueHeadsAfter'] | Should -Be 4
        $b.Report.Metrics['HeadsAfter'] | Should -Be 16
        $b.Report.Metrics['CacheBytesPerTokenAfter'] | Should -Be 1024
        $b.Report.Notes | Where-Object { $_ -like 'Key/value cache: 2,048 -> 1,024 bytes per token*' } | Should -Not -BeNullOrEmpty
        $b.History[-1].Parameters['Target'] | Should -Be 'KeyValueHeads'
        $path = Join-Path $TestDrive 'llama_kv_half.onnx'
        $llama | Invoke-ModelPruning -Structured -KeyValueHeadRate 0.5 -WarningAction SilentlyContinue | Export-Model $path
        $info = Get-Model $path | Get-ModelInfo
        (($info.Inputs | Where-Object Name -eq 'past_key_values.0.key').Shape -join ',') | Should -Be 'batch_size,1,past_sequence_length,32'
        (Get-Model $path).History[-1].Parameters['KeyValueHeadRate'] | Should -Be '0.5'
    }
}
