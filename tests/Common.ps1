# Shared by the Pester files (tests/*.Tests.ps1): dot-source it in BeforeAll. Imports the module as built.
$RepoRoot = [IO.Path]::GetFullPath((Join-Path $PSScriptRoot '..'))
$ModulePath = Join-Path $RepoRoot 'out/ModelCompression/ModelCompression.psd1'
$SharedRoot = [IO.Path]::GetFullPath((Join-Path $RepoRoot '../shared'))
$SharedAvailable = Test-Path (Join-Path $SharedRoot 'models')
$WineModel = Join-Path $RepoRoot 'models/wine_mlp.onnx'
$WineData = Join-Path $RepoRoot 'data/wine_train.npz'
if (-not (Test-Path $ModulePath)) { throw "The module is not built: $ModulePath is missing. Run 'dotnet build' first." }
Import-Module $ModulePath
# An error a test does not expect fails it (tests that expect one say -ErrorAction SilentlyContinue or catch it).
$ErrorActionPreference = 'Stop'

# A real skip (with its reason in the report) for tests that need ../shared; call it first thing in an It.
function Skip-WithoutShared {
    if (-not $SharedAvailable) { Set-ItResult -Skipped -Because '../shared (models and data sets) is not beside the repository' }
}

# The stable part of error records' ids ('ModelFileNotFound' of 'ModelFileNotFound,ModelCompression.GetModelCommand').
function Get-ErrorId {
    param([Parameter(ValueFromPipeline)] $ErrorRecord)
    process { if ($ErrorRecord) { ($ErrorRecord.FullyQualifiedErrorId -split ',')[0] } }
}

# Runs a command in a fresh pwsh process (the same pwsh as this one); returns its output lines. $LASTEXITCODE is its exit code.
function Invoke-Pwsh {
    param([Parameter(Mandatory)] [string] $Command, [string] $WorkingDirectory = $PWD.ProviderPath)
    $exe = [Environment]::ProcessPath
    # Under `dotnet pwsh` the process is dotnet itself, running pwsh.dll.
    $first = @(if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet') { Join-Path $PSHOME 'pwsh.dll' })
    Push-Location $WorkingDirectory
    # Lines as plain text: pwsh colours table headers even when its output is redirected.
    try { & $exe @first -NoProfile -NonInteractive -Command $Command 2>&1 | ForEach-Object { "$_" -replace '\e\[[0-9;]*m' } }
    finally { Pop-Location }
}

# A PowerShell of this process (own runspace) with the module imported and the repository as location: for what a
# script cannot do to itself (read its progress records, be stopped midway).
function New-PowerShell {
    $ps = [powershell]::Create()
    $null = $ps.AddScript("Import-Module '$ModulePath'; Set-Location '$RepoRoot'").Invoke()
    $ps.Commands.Clear()
    $ps
}

# Runs a script block in a new PowerShell (see New-PowerShell); returns its output and streams, progress included,
# which PowerShell cannot redirect.
function Invoke-WithStream {
    param([Parameter(Mandatory)] [scriptblock] $Script, [object[]] $ArgumentList = @())
    $ps = New-PowerShell
    try {
        $null = $ps.AddScript($Script.ToString())
        foreach ($a in $ArgumentList) { $null = $ps.AddArgument($a) }
        $output = $ps.Invoke()
        [pscustomobject]@{
            Output = @($output); Progress = @($ps.Streams.Progress); Error = @($ps.Streams.Error); Warning = @($ps.Streams.Warning); Verbose = @($ps.Streams.Verbose)
        }
    }
    finally { $ps.Dispose() }
}
