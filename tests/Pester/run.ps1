<#
.SYNOPSIS
    Runs the Pester files tests/*.Tests.ps1 in this pwsh process and prints one summary line in dotnet test's format.
    Called by `dotnet test` (ModelCompression.Pester.csproj); runs alone too:
    dotnet pwsh tests/Pester/run.ps1 -PesterModule ~/.nuget/packages/pester/5.7.1/tools/Pester.psd1 [-Filter Name]
.PARAMETER Filter
    dotnet test's --filter: 'Text', 'Name~Text', 'FullyQualifiedName~Text' or 'DisplayName=Text', joined by '|',
    each becoming a *Text* pattern on Pester's full test names. Other expressions are refused.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)] [string] $PesterModule,
    [string] $ResultsDirectory = (Join-Path $PSScriptRoot 'TestResults'),
    [string] $Filter = '',
    [string[]] $Path = @(Get-ChildItem (Join-Path $PSScriptRoot '..') -Filter *.Tests.ps1 | ForEach-Object FullName)
)
$ErrorActionPreference = 'Stop'
$PSStyle.OutputRendering = 'PlainText'
Import-Module $PesterModule -MinimumVersion 5.7.1

$config = New-PesterConfiguration
$config.Run.Path = $Path
$config.Run.PassThru = $true
$config.Output.Verbosity = 'Normal'
$config.TestResult.Enabled = $true
$config.TestResult.OutputFormat = 'NUnitXml'
$config.TestResult.OutputPath = Join-Path $ResultsDirectory 'pester.xml'
if ($Filter) {
    $config.Filter.FullName = @(foreach ($term in $Filter -split '\|') {
        if ($term -notmatch '^\s*(?:(?:FullyQualifiedName|Name|DisplayName)\s*[~=]\s*)?([^&!=~()]+?)\s*$') {
            Write-Error "The filter '$Filter' is not supported here: use Text or Name~Text, joined by '|'." -ErrorAction Continue
            exit 2
        }
        "*$($Matches[1])*"
    })
}

$started = [DateTime]::UtcNow
$result = Invoke-Pester -Configuration $config
$failed = $result.FailedCount + $result.FailedBlocksCount + $result.FailedContainersCount
# What failed, once more at the end, by name (Pester printed the details above).
foreach ($t in $result.Failed) { "Failed test: $($t.ExpandedPath)" }
foreach ($b in $result.FailedBlocks) { "Failed block: $($b.Path -join '.')" }
foreach ($c in $result.FailedContainers) { "Failed file: $($c.Item)" }
# dotnet test's summary format, which .ci/run adds up with the other test projects.
$seconds = ([DateTime]::UtcNow - $started).TotalSeconds
'{0}!  - Failed: {1,5}, Passed: {2,5}, Skipped: {3,5}, Total: {4,5}, Duration: {5:0} s - Pester (tests/*.Tests.ps1)' -f `
    $(if ($failed) { 'Failed' } else { 'Passed' }), $failed, $result.PassedCount, $result.SkippedCount,
    ($failed + $result.PassedCount + $result.SkippedCount), $seconds
exit $(if ($failed) { 1 } else { 0 })
