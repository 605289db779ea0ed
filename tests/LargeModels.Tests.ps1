# Models with their weights in external data, as large models are shipped: read when needed, checked against the
# file they came from, exported by streaming. (The 1.1B-parameter figures come from `bench large`, not from tests.)
BeforeAll {
    . $PSScriptRoot/Common.ps1
    # The repository's model with every weight in an external data file beside it.
    function New-ExternalModel([string] $Name = 'ext.onnx') {
        Get-Model $WineModel | Export-Model (Join-Path $TestDrive $Name) -ExternalData -Force
        Join-Path $TestDrive $Name
    }
}

Describe 'Models with external data' {
    It 'runs the whole pipeline on them, and the result loads and matches in ONNX Runtime' {
        $path = New-ExternalModel
        $m = Get-Model $path
        $m.SizeBytes | Should -BeGreaterThan 200KB
        $q = $m | Invoke-ModelQuantization -Mode WeightOnly
        $q | Export-Model (Join-Path $TestDrive 'q.onnx')
        $report = Compare-Model $m (Get-Model (Join-Path $TestDrive 'q.onnx')) -InputData $WineData
        $report.Outputs[0].Cosine | Should -BeGreaterThan 0.99
    }

    It 'refuses to export when the data file changed after Get-Model, and writes nothing' {
        $path = New-ExternalModel
        $m = Get-Model $path
        $bytes = [IO.File]::ReadAllBytes("$path.data"); [Array]::Reverse($bytes)
        [IO.File]::WriteAllBytes("$path.data", $bytes)
        (Get-Item "$path.data").LastWriteTimeUtc = [DateTime]::UtcNow.AddMinutes(1)
        $m | Export-Model (Join-Path $TestDrive 'out.onnx') -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be ExternalDataChanged
        $errs[0].CategoryInfo.Category | Should -Be InvalidData
        Get-ChildItem $TestDrive -Name | Should -Not -Contain 'out.onnx'
        @(Get-ChildItem $TestDrive -Force -Name | Where-Object { $_ -like '*out.onnx*' }) | Should -BeNullOrEmpty
    }

    It 'refuses a data file shorter than the graph says' {
        $path = New-ExternalModel 'short.onnx'
        $stream = [IO.File]::Open("$path.data", 'Open')
        try { $stream.SetLength($stream.Length - 4) } finally { $stream.Dispose() }
        Get-Model $path -ErrorVariable errs -ErrorAction SilentlyContinue | Should -BeNullOrEmpty
        $errs | Get-ErrorId | Should -Be ExternalDataOutOfRange
    }

    It 'measures sparsity of external weights up to 1 GB, and of any size with -ScanWeights' {
        $path = New-ExternalModel
        $pruned = Get-Model $path | Invoke-ModelPruning -Rate 0.5
        $pruned | Export-Model (Join-Path $TestDrive 'p.onnx') -ExternalData
        (Get-ModelInfo (Join-Path $TestDrive 'p.onnx')).Sparsity | Should -BeGreaterThan 0.45
        (Get-ModelInfo (Join-Path $TestDrive 'p.onnx') -ScanWeights).Sparsity | Should -BeGreaterThan 0.45
    }
}

Describe 'Damaged metadata' {
    It 'loads a model whose stored history is damaged, drops the history and says so' {
        $path = Join-Path $TestDrive 'h.onnx'
        Get-Model $WineModel | Invoke-ModelPruning -Rate 0.1 | Export-Model $path
        # Rewrite the history entry's JSON value in place with a damaged one of the same length.
        $bytes = [IO.File]::ReadAllBytes($path)
        $text = [Text.Encoding]::Latin1.GetString($bytes)
        $text.IndexOf('[{"Name"') | Should -Not -Be -1 -Because 'the export wrote a history'
        $damaged = $text.Replace('[{"Name"', '[null,  ')
        [IO.File]::WriteAllBytes($path, [Text.Encoding]::Latin1.GetBytes($damaged))
        $m = Get-Model $path -WarningVariable warnings -WarningAction SilentlyContinue
        $m.History | Should -BeNullOrEmpty
        $warnings | Should -HaveCount 1
        "$($warnings[0])" | Should -BeLike '*history*damaged*'
    }
}
