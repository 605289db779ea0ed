<#
.SYNOPSIS
    Gathers the verdicts the gate jobs published (one folder per model, each with gate.json beside the reports) into
    one table and summary.json: { Passed, Models: [ one row per model ] }. A model named in -Model whose job left no
    gate.json (it failed before writing one, or never ran) is listed as failed too, so summary.json never passes by
    leaving a model out; with no model at all it does not pass either.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $Path,
    # The models the pipeline meant to gate (the matrix's names, or its JSON as Get-ModelMatrix.ps1 wrote it).
    [string[]] $Model = @()
)
$ErrorActionPreference = 'Stop'
if ($Model.Count -eq 1 -and $Model[0].TrimStart().StartsWith('{')) {
    $Model = @(($Model[0] | ConvertFrom-Json -AsHashtable).Values | ForEach-Object { $_.modelName })
}
$rows = [System.Collections.Generic.List[object]]::new()
foreach ($file in Get-ChildItem -Path $Path -Filter gate.json -Recurse -File | Sort-Object FullName) {
    $rows.Add((Get-Content -Raw $file.FullName | ConvertFrom-Json))
}
foreach ($name in $Model | Where-Object { $_ -notin $rows.Model }) {
    $rows.Add([pscustomobject]@{ Model = $name; Status = 'Error'; Passed = $false; FailedGates = @(); SkippedGates = @()
        Error = 'No gate.json: the gate job for this model did not finish.' })
}
$summary = [ordered]@{ Passed = $rows.Count -gt 0 -and -not ($rows | Where-Object { -not $_.Passed }); Models = $rows.ToArray() }
$summary | ConvertTo-Json -Depth 6 | Set-Content (Join-Path $Path 'summary.json')
# The cosine as the view shows it: as many digits as tell a miss from 1 (never "1.00" beside CosineBelowMinimum).
$rows | Sort-Object Model | Format-Table -AutoSize Model, Status, @{ Label = 'Cosine'; Expression = { $_.CosineText } },
    @{ Label = 'AccDrop'; Expression = { if ($null -ne $_.AccuracyDrop) { '{0:P1}' -f $_.AccuracyDrop } } },
    @{ Label = 'Size'; Expression = { if ($null -ne $_.SizeRatio) { '{0:P0}' -f $_.SizeRatio } } },
    @{ Label = 'Latency'; Expression = { if ($null -ne $_.LatencyRatio) { '{0:F3}' -f $_.LatencyRatio } } },
    @{ Label = 'Failed'; Expression = { (@($_.FailedGates.ErrorId) + @($_.Error | Where-Object { $_ })) -join ', ' } } | Out-String -Width 160
