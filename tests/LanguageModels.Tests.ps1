# Language models as users have them: a KV cache in the model's contract, ONNX Runtime GenAI folders, and the figures
# generation is judged by (time to first token, tokens per second, whether the greedy tokens stay the same).
BeforeAll {
    . $PSScriptRoot/Common.ps1
    $Kv = Join-Path $SharedRoot 'models/tiny_llama_kv.onnx'
    $Plain = Join-Path $SharedRoot 'models/tiny_llama.onnx'
    $GenAi = Join-Path $SharedRoot 'models/tiny_llama_genai'
    $Test = Join-Path $SharedRoot 'data/tiny_lm_test.npz'
    $Calib = Join-Path $SharedRoot 'data/tiny_lm_calib.npz'
    # A GenAI folder the tests may change: the shared one plus a tokenizer file that must travel with the model.
    function Copy-GenAiFolder([string] $To) {
        Copy-Item -Recurse $GenAi $To
        Get-ChildItem $To | ForEach-Object { $_.IsReadOnly = $false }
        Set-Content (Join-Path $To 'tokenizer.json') '{"bytes": true}'
        $To
    }
}

Describe 'A model with a KV cache' {
    It 'runs every stage on token data alone and compares with the model without a cache' {
        Skip-WithoutShared
        $kv = Get-Model $Kv
        $c = Compare-Model (Get-Model $Plain) $kv -InputData $Test -BatchSize 64 -MaxPerplexityRise 0.00001
        $c.Outputs.Output | Should -Be 'logits'
        $c.Outputs[0].MaxAbsError | Should -BeLessThan 1e-4
        $q = $kv | Invoke-ModelQuantization -Mode WeightOnly -Algorithm GPTQ -BlockSize 32 -CalibrationData $Calib
        $r = Compare-Model $kv $q -InputData $Test -BatchSize 64
        $r.PerplexityRise | Should -BeLessThan 0.03
        $p = $kv | Invoke-ModelPruning -Rate 0.3
        (Compare-Model $kv $p -InputData $Test -BatchSize 64).Outputs[0].Cosine | Should -BeGreaterThan 0.9
        $l = Measure-ModelLatency $kv -InputShape @{ sequence_length = 16 } -Iterations 3 -Warmup 0
        $l.Inputs | Should -BeLike 'input_ids`[1,16`]; attention_mask`[1,16`]*past_key_values.0.key`[1,2,0,32`]*'
    }
}

Describe 'Measure-ModelLatency -Generate' {
    It 'reports time to first token, per-token latency, tokens per second and memory against a baseline' {
        Skip-WithoutShared
        $run = Invoke-WithStream -ArgumentList $Kv, $Test {
            param($kv, $test)
            $float = Get-Model $kv
            $q = $float | Invoke-ModelQuantization -Mode Dynamic
            $q | Measure-ModelLatency -Baseline $float -Generate -PromptLength 24 -NewTokens 16 -Iterations 2 -InputData $test
        }
        $run.Error | Should -BeNullOrEmpty
        $run.Output.Count | Should -Be 2
        $run.Output.Role | Should -Be Baseline, Model
        foreach ($r in $run.Output) {
            $r.GetType().FullName | Should -Be 'ModelCompression.GenerationReport'
            $r.Engine | Should -Be 'OnnxRuntime'
            ($r.PromptLength, $r.NewTokens, $r.Runs) | Should -Be 24, 16, 2
            $r.TimeToFirstTokenMs | Should -BeGreaterThan 0
            $r.DecodeP50Ms | Should -BeGreaterThan 0
            $r.DecodeP99Ms | Should -BeGreaterOrEqual $r.DecodeP50Ms
            $r.TokensPerSecond | Should -BeGreaterThan 0
            $r.ModelMemoryBytes | Should -BeGreaterThan 3MB
            $r.PeakWorkingSetBytes | Should -BeGreaterThan $r.ModelMemoryBytes
            $r.CacheBytesPerToken | Should -Be 2048
            $r.PromptSource | Should -Be 'tiny_lm_test.npz'
        }
        $run.Output[1].ModelMemoryBytes | Should -BeLessThan ($run.Output[0].ModelMemoryBytes / 2)
        $run.Output[1].MemoryRatio | Should -BeLessThan 0.5
        $run.Output[1].Speedup | Should -BeGreaterThan 0
        $run.Output[1].SpeedupText | Should -Match '^\d+\.\d\dx \['
        $run.Progress | Where-Object RecordType -EQ Completed | Should -Not -BeNullOrEmpty
        ($run.Output | Format-Table | Out-String) | Should -Match 'Tokens/s'
    }

    It 'refuses <name> with <id>' -ForEach @(
        @{ name = 'a model without a cache'; model = 'tiny_llama.onnx'; arguments = @{}; id = 'GenerationCacheMissing' }
        @{ name = 'a prompt and new tokens beyond the context'; model = 'tiny_llama_kv.onnx'; arguments = @{ PromptLength = 2000 }; id = 'GenerationContextExceeded' }
        @{ name = 'GenAI for a model from a file'; model = 'tiny_llama_kv.onnx'; arguments = @{ GenerationEngine = 'GenAI' }; id = 'GenerationEngineNotApplicable' }
    ) {
        Skip-WithoutShared
        $all = @{ NewTokens = 64; Iterations = 1 } + $arguments
        if (-not $all.PromptLength) { $all.PromptLength = 8 }
        { Measure-ModelLatency (Join-Path $SharedRoot "models/$model") -Generate @all } | Should -Throw -ErrorId "$id,*"
    }

    It 'keeps single-run shapes out of the generation parameter set' {
        Skip-WithoutShared
        { Measure-ModelLatency $Kv -Generate -BatchSize 4 } | Should -Throw -ErrorId 'AmbiguousParameterSet,*'
    }
}

Describe 'Compare-Model -Generate' {
    It 'compares greedy continuations token by token and gates on their agreement' {
        Skip-WithoutShared
        $float = Get-Model $Kv
        $same = Compare-Model $float $float -InputData $Test -Generate -Prompts 2 -PromptLength 16 -NewTokens 12 -MinGenerationAgreement 1
        $same.Passed | Should -BeTrue
        $same.Generation.TokenAgreement | Should -Be 1
        $same.Generation.MeanFirstDivergence | Should -Be 12
        $same.Generation.IdenticalContinuations | Should -Be 2
        $q = $float | Invoke-ModelQuantization -Mode WeightOnly -BlockSize 128
        $r = Compare-Model $float $q -InputData $Test -Generate -Prompts 4 -NewTokens 48 -MinGenerationAgreement 1 -ErrorVariable gate -ErrorAction SilentlyContinue
        $r.Generation.TokenAgreement | Should -BeLessThan 1
        $r.Generation.MeanFirstDivergence | Should -BeLessThan 48
        $gate | Get-ErrorId | Should -Be 'GenerationAgreementBelowMinimum'
        $r | ConvertTo-Json -Depth 4 | ConvertFrom-Json | ForEach-Object { $_.Generation.Prompts } | Should -Be 4
    }

    It 'refuses generation options without -Generate' {
        Skip-WithoutShared
        { Compare-Model $Kv $Kv -PromptLength 8 } | Should -Throw -ErrorId 'GenerationParameterNotApplicable,*'
        { Compare-Model $Kv $Kv -MinGenerationAgreement 0.5 } | Should -Throw -ErrorId 'GenerationGateRequiresGenerate,*'
    }
}

Describe 'ONNX Runtime GenAI folders' {
    It 'loads a folder, and a compressed model goes back as a whole folder that GenAI generates from' {
        Skip-WithoutShared
        $source = Copy-GenAiFolder (Join-Path $TestDrive 'src')
        $m = Get-Model $source
        $m.Path | Should -Be $source
        $m.Name | Should -Be 'src'
        $q = $m | Invoke-ModelQuantization -Mode WeightOnly
        $out = Join-Path $TestDrive 'int4'
        $q | Export-Model -Directory $out -WhatIf
        Test-Path $out | Should -BeFalse
        $item = $q | Export-Model -Directory $out -PassThru
        $item | Should -BeOfType System.IO.DirectoryInfo
        @(Get-ChildItem $out -Name | Sort-Object) | Should -Be 'genai_config.json', 'model.onnx', 'tokenizer.json'
        @(Get-ChildItem $TestDrive -Force -Name) | Should -Not -Contain '*.tmp'
        (Get-Item (Join-Path $out 'model.onnx')).Length | Should -BeLessThan ((Get-Item (Join-Path $source 'model.onnx')).Length / 2)
        $config = Get-Content -Raw (Join-Path $out 'genai_config.json') | ConvertFrom-Json
        $config.model.decoder.num_key_value_heads | Should -Be 2
        $config.model.decoder.num_attention_heads | Should -Be 8
        $config.search.max_length | Should -Be 160
        # The exported folder loads and generates in ONNX Runtime GenAI the tokens the in-memory model generates.
        $back = Get-Model $out
        $g = $back | Measure-ModelLatency -Generate -PromptLength 8 -NewTokens 8 -Iterations 1 -Warmup 0
        $g.Engine | Should -Be 'GenAI'
        (Compare-Model $q $back -InputShape @{ sequence_length = 16 } -Generate -Prompts 2 -PromptLength 12 -NewTokens 16).Generation.TokenAgreement | Should -Be 1
        { $q | Export-Model -Directory $out -ErrorAction Stop } | Should -Throw -ErrorId 'ExportFileExists,*'
    }

    It 'writes a folder whose model had external data without the old data file' {
        Skip-WithoutShared
        $external = Join-Path $TestDrive 'external'
        Get-Model (Copy-GenAiFolder (Join-Path $TestDrive 'src2')) | Export-Model -Directory $external -ExternalData
        @(Get-ChildItem $external -Name | Sort-Object) | Should -Be 'genai_config.json', 'model.onnx', 'model.onnx.data', 'tokenizer.json'
        $small = Join-Path $TestDrive 'small'
        Get-Model $external | Invoke-ModelQuantization -Mode WeightOnly | Export-Model -Directory $small -ExternalData:$false
        @(Get-ChildItem $small -Name | Sort-Object) | Should -Be 'genai_config.json', 'model.onnx', 'tokenizer.json'
    }

    It 'refuses a folder whose configuration <name>' -ForEach @(
        @{ name = 'names a missing file'; edit = { param($c) $c.model.decoder.filename = 'nope.onnx' }; id = 'GenAiModelFileMissing' }
        @{ name = 'disagrees with the model'; edit = { param($c) $c.model.decoder.num_hidden_layers = 5 }; id = 'GenAiConfigMismatch' }
        @{ name = 'is not JSON'; edit = $null; id = 'GenAiConfigInvalid' }
    ) {
        Skip-WithoutShared
        $folder = Copy-GenAiFolder (Join-Path $TestDrive ([guid]::NewGuid()))
        $path = Join-Path $folder 'genai_config.json'
        if ($edit) { $c = Get-Content -Raw $path | ConvertFrom-Json; & $edit $c; $c | ConvertTo-Json -Depth 8 | Set-Content $path }
        else { Set-Content $path '{ not json' }
        { Get-Model $folder -ErrorAction Stop } | Should -Throw -ErrorId "$id,*"
    }

    It 'says a plain folder is not a model' {
        { Get-Model $TestDrive -ErrorAction Stop } | Should -Throw -ErrorId 'ModelPathIsDirectory,*'
    }
}

Describe 'The README''s language-model example' {
    It 'runs as written (the output folder in the test drive) and shows the figures it promises' {
        Skip-WithoutShared
        $readme = Get-Content -Raw (Join-Path $RepoRoot 'README.md')
        $code = [regex]::Match($readme, '(?s)## Language models.*?```powershell\r?\n(.*?)```').Groups[1].Value
        $code | Should -Match 'Export-Model -Directory ./tiny_llama_int4'
        $out = Join-Path $TestDrive 'tiny_llama_int4'
        Push-Location $RepoRoot
        try { $results = @(& ([scriptblock]::Create($code.Replace('./tiny_llama_int4', $out))) -WarningAction SilentlyContinue) }
        finally { Pop-Location }
        $comparison = $results | Where-Object { $_ -is [ModelCompression.ModelComparisonReport] }
        $comparison.Generation.TokenAgreement | Should -BeGreaterThan 0.5
        $latency = @($results | Where-Object { $_ -is [ModelCompression.GenerationReport] })
        ($latency | Where-Object Role -EQ 'Model').TokensPerSecond | Should -BeGreaterThan 0
        Test-Path (Join-Path $out 'genai_config.json') | Should -BeTrue
        @((Get-Model $out | Get-ModelInfo).Operators.Keys) -like '*MatMulNBits' | Should -Not -BeNullOrEmpty
    }
}
