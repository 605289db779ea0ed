# The quick variant of the project's fuzzer (bench/Fuzz): a few hundred mutated models through every cmdlet in real
# pwsh workers. Every failure must be an error record with a project error id; no case may pass its time limit, add
# more than 4x its files' size + 256 MB of memory, change an input or leave a partial export. The long run (10,000
# cases) is `dotnet run -c Release --project bench/Fuzz -- --cases 10000`.
BeforeAll { . $PSScriptRoot/Common.ps1 }

Describe 'Hostile model files' {
    It 'never crash, hang, give an unspecific error, overspend memory, change an input or leave a partial file (300 cases)' {
        $fuzz = $env:MC_FUZZ
        if (-not $fuzz -or -not (Test-Path $fuzz)) { $fuzz = @(Get-ChildItem (Join-Path $RepoRoot 'bench/Fuzz/bin/*/*/ModelCompression.Fuzz.dll') | Sort-Object LastWriteTime)[-1].FullName }
        $fuzz | Should -Exist -Because 'dotnet test builds bench/Fuzz'
        $summary = Join-Path $TestDrive 'fuzz.json'
        $out = & dotnet $fuzz --cases 300 --seed 11 --quick --workers 2 --timeout 30 --module $ModulePath --json $summary 2>&1 | ForEach-Object { "$_" }
        $result = Get-Content $summary -Raw | ConvertFrom-Json
        $because = $out -join "`n"
        $result.cases | Should -Be 300 -Because $because
        $result.crashes | Should -Be 0 -Because $because
        $result.hangs | Should -Be 0 -Because $because
        $result.unspecific | Should -Be 0 -Because $because
        $result.memory | Should -Be 0 -Because $because
        $result.changed | Should -Be 0 -Because $because
        $result.partial | Should -Be 0 -Because $because
        $LASTEXITCODE | Should -Be 0 -Because $because
    }
}
