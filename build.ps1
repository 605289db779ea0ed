#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Builds, tests, documents and packages ModelCompression. Every task is a plain dotnet command, so machines
    without pwsh run the same steps directly (see README.md).
.PARAMETER Task
    Build: the module in out/ModelCompression. Test: all tests. Help: the MAML help only. Package: a .nupkg of the
    module for a PowerShell repository (needs pwsh's Publish-PSResource or Publish-Module).
#>
[CmdletBinding()]
param(
    [ValidateSet('Build', 'Test', 'Help', 'Package')]
    [string[]] $Task = @('Build', 'Test'),
    [ValidateSet('Debug', 'Release')]
    [string] $Configuration = 'Release'
)
$ErrorActionPreference = 'Stop'
Set-Location $PSScriptRoot

function Invoke-Dotnet {
    & dotnet @args
    if ($LASTEXITCODE -ne 0) { throw "dotnet $args failed with exit code $LASTEXITCODE" }
}

foreach ($t in $Task) {
    switch ($t) {
        'Build' { Invoke-Dotnet build ModelCompression.slnx -c $Configuration }
        'Test' { Invoke-Dotnet test ModelCompression.slnx -c $Configuration }
        'Help' {
            Invoke-Dotnet build build/HelpCompiler -c $Configuration
            Invoke-Dotnet "build/HelpCompiler/bin/$Configuration/net8.0/HelpCompiler.dll" docs/en-US out/ModelCompression/en-US
        }
        'Package' {
            Invoke-Dotnet build src/ModelCompression -c $Configuration
            $repo = Join-Path $PSScriptRoot 'out/repository'
            New-Item -ItemType Directory -Force $repo | Out-Null
            if (-not (Get-PSResourceRepository -Name ModelCompressionLocal -ErrorAction Ignore)) {
                Register-PSResourceRepository -Name ModelCompressionLocal -Uri $repo -Trusted
            }
            Publish-PSResource -Path (Join-Path $PSScriptRoot 'out/ModelCompression') -Repository ModelCompressionLocal
            Write-Output "Package written to $repo"
        }
    }
}
