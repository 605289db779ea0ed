<#
.SYNOPSIS
    The compression gate of azure-pipelines.yml for one model: compress it with the pipeline of stages, compare it with
    the original on its data, measure the speed-up against it, and write the reports: comparison.json, latency.json and
    gate.json (the verdict: Passed, FailedGates with the latency gate among them, SkippedGates, or the Error that stopped
    the model). gate.json is written whatever happens, so the gather step lists a model that failed as failed.
.DESCRIPTION
    The cmdlets only write objects and error records; turning them into Azure DevOps issues is the job of whoever runs
    this script: -LogIssues writes one ##vso[task.logissue] line per failed gate (a PowerShell@2 step), the
    ModelCompressionGate task logs them through its task library. Exit code 1 when the model failed.
.PARAMETER Data
    What the model runs on: a data file (every model gets it), a folder (the model gets <folder>/<model>.npz, .npy or
    .csv when there is one), or a .json mapping of model names to data files ({ "wine_mlp": "wine_test.npz" }, paths
    relative to the mapping). A model without data is compared on synthesized inputs; gates that need labels are then
    skipped, and so is a gate no output of the model can be judged on (perplexity of a classifier): SkippedGates says so.
.PARAMETER Stages
    The compression pipeline, one cmdlet per line with constant arguments ("Invoke-ModelPruning -Structured -Rate 0.5").
    Only the module's stage cmdlets are taken, and only parameters they have (Resolve-CompressionStage.ps1 checks).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $Model,
    [Parameter(Mandatory)] [string] $Reports,
    [string] $Data,
    [string[]] $Stages = @('Invoke-ModelQuantization -Mode Dynamic'),
    # The gates; $null leaves one unchecked. Relative gates are fractions, as Compare-Model takes them.
    [Nullable[double]] $MinCosine = 0.999,
    [Nullable[double]] $MaxAccuracyDrop = 0.01,
    [Nullable[double]] $MinTop1Agreement = 0.98,
    [Nullable[double]] $MaxPerplexityRise,
    # The compressed model's median latency may be at most this ratio of the original's.
    [Nullable[double]] $MaxLatencyRatio = 1.05,
    [double] $LatencySeconds = 20,
    [switch] $LogIssues
)
$ErrorActionPreference = 'Stop'
if (-not (Get-Module ModelCompression)) {
    $module = @(Join-Path $PSScriptRoot '../../out/ModelCompression/ModelCompression.psd1'; Join-Path $PSScriptRoot '../ModelCompression/ModelCompression.psd1') |
        Where-Object { Test-Path $_ } | Select-Object -First 1
    Import-Module ($module ?? 'ModelCompression')
}
New-Item -ItemType Directory -Force $Reports | Out-Null
$name = [IO.Path]::GetFileNameWithoutExtension($Model)
$gate = [ordered]@{ Model = $name; Path = $Model; Status = 'Error'; Passed = $false; Data = $null; Stages = $Stages
    Cosine = $null; CosineText = $null; AccuracyDrop = $null; PerplexityRise = $null; SizeRatio = $null; LatencyRatio = $null
    FailedGates = @(); SkippedGates = @(); Error = $null }

function Find-GateData([string] $Data, [string] $Name) {
    if (-not $Data) { return $null }
    if (Test-Path -LiteralPath $Data -PathType Container) {
        return Get-ChildItem -LiteralPath $Data -File | Where-Object { $_.BaseName -eq $Name -and $_.Extension -in '.npz', '.npy', '.csv' } |
            Select-Object -First 1 -ExpandProperty FullName
    }
    if ([IO.Path]::GetExtension($Data) -eq '.json') {
        $map = Get-Content -Raw -LiteralPath $Data | ConvertFrom-Json -AsHashtable
        if (-not $map.ContainsKey($Name)) { return $null }
        return [IO.Path]::GetFullPath($map[$Name], (Split-Path -Parent ([IO.Path]::GetFullPath($Data))))
    }
    return $Data
}

try {
    $stagePlan = & (Join-Path $PSScriptRoot 'Resolve-CompressionStage.ps1') -Stages $Stages
    $original = Get-Model $Model
    $compressed = $original
    foreach ($stage in $stagePlan) {
        $parameters = $stage.Parameters
        $compressed = $compressed | & $stage.Command @parameters
    }
    $compressed | Export-Model (Join-Path $Reports "$name.compressed.onnx") -Force

    # Fidelity: the gates the data supports. Labels decide accuracy and perplexity; a gate no output of this model can
    # be judged on (NotMeasurable) is skipped, not failed: the folder holds classifiers and language models alike.
    $gate.Data = Find-GateData $Data $name
    $compare = @{}
    foreach ($g in 'MinCosine', 'MinTop1Agreement', 'MaxAccuracyDrop', 'MaxPerplexityRise') {
        $threshold = Get-Variable $g -ValueOnly
        if ($null -eq $threshold) { continue }
        if ($gate.Data -or $g -notin 'MaxAccuracyDrop', 'MaxPerplexityRise') { $compare[$g] = $threshold }
        else { $gate.SkippedGates += @([ordered]@{ Gate = $g; Message = 'no labelled data for this model' }) }
    }
    if ($gate.Data) { $compare.InputData = $gate.Data }
    $report = Compare-Model -Reference $original -Difference $compressed @compare -ErrorVariable missed -ErrorAction SilentlyContinue
    if (-not $report) { throw $missed[0] }   # no report: a real failure (bad file, shapes), not a missed gate
    $report | ConvertTo-Json -Depth 5 | Set-Content (Join-Path $Reports 'comparison.json')
    foreach ($g in $report.FailedGates) {
        $entry = [ordered]@{ Gate = $g.Gate; ErrorId = $g.ErrorId; Message = $g.Message }
        if ($g.ErrorId -like '*NotMeasurable') { $gate.SkippedGates += @($entry) } else { $gate.FailedGates += @($entry) }
    }
    $gate.Cosine = $report.Cosine; $gate.CosineText = $report.CosineText; $gate.AccuracyDrop = $report.AccuracyDrop
    $gate.PerplexityRise = $report.PerplexityRise; $gate.SizeRatio = $report.SizeRatio

    # Latency: both models interleaved in one run, one thread for steadier numbers on a shared agent. The gate fails
    # when the whole confidence interval of the ratio lies above -MaxLatencyRatio (a regression, not noise).
    $latencyData = if ($gate.Data) { @{ InputData = $gate.Data; BatchSize = 16 } } else { @{} }
    $latency = $compressed | Measure-ModelLatency -Baseline $original @latencyData -IntraOpThreads 1 -Warmup 20 -Duration $LatencySeconds
    $latency | ConvertTo-Json | Set-Content (Join-Path $Reports 'latency.json')
    $candidate = $latency | Where-Object Role -EQ 'Model'
    $gate.LatencyRatio = $candidate.RatioToBaseline
    if ($null -ne $MaxLatencyRatio -and $candidate.RatioLower -gt $MaxLatencyRatio) {
        $gate.FailedGates += @([ordered]@{ Gate = 'MaxLatencyRatio'; ErrorId = 'LatencyRatioAboveMaximum'
            Message = "Median latency ratio $($candidate.RatioText) is above the maximum $MaxLatencyRatio." })
    }
    $gate.Passed = $gate.FailedGates.Count -eq 0
    $gate.Status = if ($gate.Passed) { 'Passed' } else { 'Failed' }
}
catch {
    $gate.Error = "$_"
}
finally {
    [pscustomobject]$gate | ConvertTo-Json -Depth 5 | Set-Content (Join-Path $Reports 'gate.json')
}
[pscustomobject]$gate
if ($LogIssues) {
    foreach ($f in $gate.FailedGates) { Write-Host "##vso[task.logissue type=error]$name`: $($f.ErrorId): $($f.Message)" }
    if ($gate.Error) { Write-Host "##vso[task.logissue type=error]$name`: $($gate.Error)" }
}
if (-not $gate.Passed) { exit 1 }
