<#
.SYNOPSIS
    The compression gate of azure-pipelines.yml: compress a model, compare it with the original on labelled data,
    measure the speed-up against it, write both JSON reports, and fail (exit 1) when a threshold is missed, with one
    Azure DevOps error line per missed gate. The cmdlets only write objects and error records; turning them into
    ##vso commands is this script's job.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $Model,
    [Parameter(Mandatory)] [string] $Data,
    [Parameter(Mandatory)] [string] $Reports,
    [double] $MinCosine = 0.999,
    [double] $MaxAccuracyDrop = 0.01,
    [double] $MinTop1Agreement = 0.98,
    # The compressed model's median latency may be at most this ratio of the original's.
    [double] $MaxLatencyRatio = 1.05,
    [double] $LatencySeconds = 20
)
$ErrorActionPreference = 'Stop'
if (-not (Get-Module ModelCompression)) { Import-Module (Join-Path $PSScriptRoot '../../out/ModelCompression/ModelCompression.psd1') }
New-Item -ItemType Directory -Force $Reports | Out-Null

$original = Get-Model $Model
$compressed = $original | Invoke-ModelQuantization -Mode Dynamic   # or any other compression stage
$compressed | Export-Model (Join-Path $Reports "$($original.Name).int8.onnx") -Force

# Fidelity gates. A missed gate is an error record (CosineBelowMinimum, AccuracyDropAboveMaximum,
# Top1AgreementBelowMinimum, ...) written after the report; -OutVariable keeps the report for the artifact.
try {
    $compressed | Compare-Model -Reference $original -InputData $Data -MinCosine $MinCosine -MaxAccuracyDrop $MaxAccuracyDrop `
        -MinTop1Agreement $MinTop1Agreement -OutVariable comparison -ErrorAction Stop | Out-Null
}
catch {
    if (-not $comparison) { throw }   # no report: a real failure (bad file, shapes), not a missed gate
}
$report = $comparison[0]   # -OutVariable collects into a list; the report is its one item
$report | ConvertTo-Json -Depth 5 | Set-Content (Join-Path $Reports 'comparison.json')
# foreach, not ForEach-Object: an empty list must give no line at all.
$failed = @(foreach ($gate in $report.FailedGates) { "$($gate.ErrorId): $($gate.Message)" })

# Latency: both models interleaved in one run, one thread for steadier numbers on a shared agent.
$latency = $compressed | Measure-ModelLatency -Baseline $original -InputData $Data -BatchSize 16 -IntraOpThreads 1 -Warmup 20 -Duration $LatencySeconds
$latency | ConvertTo-Json | Set-Content (Join-Path $Reports 'latency.json')
$candidate = $latency | Where-Object Role -EQ 'Model'
'Median {0:N3} ms vs {1:N3} ms: ratio {2}' -f $candidate.P50Ms, ($latency | Where-Object Role -EQ 'Baseline').P50Ms, $candidate.RatioText
if ($candidate.Significant -and $candidate.RatioLower -gt $MaxLatencyRatio) {
    $failed += "LatencyRegression: median latency ratio $($candidate.RatioText) is above $MaxLatencyRatio."
}

foreach ($f in $failed) { Write-Host "##vso[task.logissue type=error]$f" }
if ($failed.Count -gt 0) { exit 1 }
