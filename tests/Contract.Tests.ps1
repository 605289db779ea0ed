# The cmdlet contract (issue 18, item 7): PowerShell sees the engine's records through one mapping per record that
# cannot drift (every engine property reaches the PowerShell type or is named as left out), cmdlets read reports
# through the engine's constants, and "was this parameter given" is told one way: nullable parameters.
BeforeDiscovery {
    . $PSScriptRoot/Common.ps1
    $Mirrors = foreach ($type in (Get-Module ModelCompression).ImplementingAssembly.GetExportedTypes()) {
        $mark = $type.GetCustomAttributes($false) | Where-Object { $_.GetType().Name -eq 'EngineRecordAttribute' }
        if ($mark) { @{ name = $type.Name; type = $type; mark = $mark } }
    }
}

BeforeAll { . $PSScriptRoot/Common.ps1 }

Describe 'Mirrors of engine records' {
    It 'cover every engine record a cmdlet writes' {
        $marks = (Get-Module ModelCompression).ImplementingAssembly.GetExportedTypes() | ForEach-Object { $_.GetCustomAttributes($false) } |
            Where-Object { $_.GetType().Name -eq 'EngineRecordAttribute' }
        $engine = @($marks.EngineType.Name | Sort-Object)
        $engine | Should -Be @('GateFailure', 'GenerationAgreement', 'GenerationResult', 'LatencyResult', 'ModelComparison', 'ModelReport', 'ModelStage', 'ModelSummary', 'OutputFidelity', 'ReportEntry', 'ValueSignature')
    }

    It '<name> shows every property of <mark.EngineType.Name>, or names it as left out' -ForEach $Mirrors {
        $renamed = @{}
        foreach ($r in $mark.Renamed) { $from, $to = $r -split '=', 2; $renamed[$from] = $to }
        $engineProperties = @($mark.EngineType.GetProperties([Reflection.BindingFlags]'Public, Instance') | Where-Object { $_.GetIndexParameters().Count -eq 0 })
        foreach ($p in $engineProperties | Where-Object Name -NotIn $mark.Omitted) {
            $mirror = $type.GetProperty($renamed[$p.Name] ?? $p.Name)
            $mirror | Should -Not -BeNullOrEmpty -Because "$($mark.EngineType.Name).$($p.Name) must reach PowerShell (or be named in Omitted)"
            $mirror.SetMethod | Should -Not -BeNullOrEmpty -Because "the mapping sets $($type.Name).$($mirror.Name)"
        }
        # Nothing stale: what the mark names exists on the engine record.
        foreach ($name in @($mark.Omitted) + @($renamed.Keys)) { $engineProperties.Name | Should -Contain $name }
    }

    It 'copies collections, so a script that changes a mirror does not change the engine''s record' {
        $q = Get-Model $WineModel | Invoke-ModelQuantization
        $first = $q | Get-ModelInfo
        $first.History[0].Parameters['Mode'] = 'Changed'
        $first.BytesByElementType.Clear()
        $second = $q | Get-ModelInfo
        $second.History[0].Parameters['Mode'] | Should -Be 'Dynamic'
        $second.BytesByElementType.Count | Should -BeGreaterThan 0
    }
}

Describe 'The cmdlets' {
    BeforeAll { $Sources = Get-ChildItem (Join-Path $RepoRoot 'src/ModelCompression') -Filter *.cs }

    It 'tell a parameter that was given by its value (nullable), never by BoundParameters' {
        $Sources | Select-String -Pattern 'MyInvocation\.BoundParameters' | Should -BeNullOrEmpty
    }

    It 'read reports through the engine''s constants, not literal actions or metric names' {
        $Sources | Select-String -Pattern 'Action\s*==\s*"|Metrics\["|"Quantized\.' | Should -BeNullOrEmpty
    }
}
