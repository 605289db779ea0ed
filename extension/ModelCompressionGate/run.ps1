<#
.SYNOPSIS
    The PowerShell half of the ModelCompressionGate task: takes the request index.js wrote (models, pipeline, data,
    gates, reports folder), checks the pipeline's stages, gates every model with the example scripts the task carries
    (Test-CompressionGate.ps1 into <reports>/<model>/, then Join-CompressionReport.ps1 into summary.json). Problems with
    the pipeline go to problems.json instead, one line each, and nothing is gated. Issues and the task result are
    index.js's to write.
#>
[CmdletBinding()]
param([Parameter(Mandatory)] [string] $Request)
$ErrorActionPreference = 'Stop'
$r = Get-Content -Raw -LiteralPath $Request | ConvertFrom-Json
Import-Module (Join-Path $PSScriptRoot 'ModelCompression/ModelCompression.psd1')
$scripts = Join-Path $PSScriptRoot 'scripts'

$stages = @($r.pipeline -split "`r?`n")
$plan = @(& (Join-Path $scripts 'Resolve-CompressionStage.ps1') -Stages $stages -ErrorVariable problems -ErrorAction SilentlyContinue)
$problems = @($problems | ForEach-Object { "Input pipeline: $($_.Exception.Message)" })
if ($problems.Count -eq 0 -and $plan.Count -eq 0) { $problems = @('Input pipeline: no stage given; name one a line, e.g. Invoke-ModelQuantization -Mode Dynamic.') }
if ($problems.Count -gt 0) {
    @{ Problems = $problems } | ConvertTo-Json | Set-Content (Join-Path $r.reports 'problems.json')
    exit 2
}

# Every gate goes to the gate script, an empty one as $null (not checked); the measurement time only when given.
$gates = @{}
foreach ($g in $r.gates.PSObject.Properties) { if ($null -ne $g.Value -or $g.Name -ne 'LatencySeconds') { $gates[$g.Name] = $g.Value } }
$names = [System.Collections.Generic.List[string]]::new()
foreach ($model in $r.models) {
    # One folder per model, named after it (a second model of the same name gets a number).
    $name = [IO.Path]::GetFileNameWithoutExtension($model)
    $folder = $name
    for ($n = 2; $names.Contains($folder); $n++) { $folder = "$name-$n" }
    $names.Add($folder)
    Write-Host "== $model"
    $verdict = & (Join-Path $scripts 'Test-CompressionGate.ps1') -Model $model -Reports (Join-Path $r.reports $folder) -Data $r.data -Stages $stages @gates
    Write-Host "   $($verdict.Status)$(if ($verdict.Error) { ": $($verdict.Error)" })"
}
& (Join-Path $scripts 'Join-CompressionReport.ps1') -Path $r.reports -Model ($r.models | ForEach-Object { [IO.Path]::GetFileNameWithoutExtension($_) })
