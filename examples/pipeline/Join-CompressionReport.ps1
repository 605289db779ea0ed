<#
.SYNOPSIS
    Gathers the reports the gate jobs published (one folder per model, each with comparison.json and latency.json)
    into one table and summary.json.
#>
[CmdletBinding()]
param([Parameter(Mandatory)] [string] $Path)
$ErrorActionPreference = 'Stop'
$rows = foreach ($comparisonFile in Get-ChildItem -Path $Path -Filter comparison.json -Recurse -File | Sort-Object FullName) {
    $comparison = Get-Content -Raw $comparisonFile.FullName | ConvertFrom-Json
    $latencyFile = Join-Path $comparisonFile.DirectoryName 'latency.json'
    $candidate = if (Test-Path $latencyFile) { Get-Content -Raw $latencyFile | ConvertFrom-Json | Where-Object Role -EQ 'Model' }
    [pscustomobject]@{
        Model        = $comparison.Reference
        Passed       = $comparison.Passed
        Cosine       = $comparison.Cosine
        AccuracyDrop = $comparison.AccuracyDrop
        SizeRatio    = $comparison.SizeRatio
        LatencyRatio = $candidate.RatioToBaseline
        FailedGates  = @($comparison.FailedGates.ErrorId) -join ', '
    }
}
$rows | ConvertTo-Json -AsArray | Set-Content (Join-Path $Path 'summary.json')
$rows | Format-Table -AutoSize | Out-String -Width 120
