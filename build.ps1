#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Builds, tests, documents and packages ModelCompression. Every task is a plain dotnet or PSResourceGet command, so
    machines without this script run the same steps directly (see README.md).
.PARAMETER Task
    Build: the module in out/ModelCompression. Test: all tests. Help: the MAML help only. Package: a .nupkg of the
    module as built in out/ModelCompression (run Build first), made by PSResourceGet's Compress-PSResource, which
    registers no repository: publish or install it from wherever you put it.
.PARAMETER PackagePath
    The folder the .nupkg is written to (default out/package).
#>
[CmdletBinding()]
param(
    [ValidateSet('Build', 'Test', 'Help', 'Package')]
    [string[]] $Task = @('Build', 'Test'),
    [ValidateSet('Debug', 'Release')]
    [string] $Configuration = 'Release',
    [string] $PackagePath = (Join-Path $PSScriptRoot 'out/package')
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
            $module = Join-Path $PSScriptRoot 'out/ModelCompression'
            if (-not (Test-Path (Join-Path $module 'ModelCompression.psd1'))) { throw "The module is not built in $module; run -Task Build first." }
            New-Item -ItemType Directory -Force $PackagePath | Out-Null
            Compress-PSResource -Path $module -DestinationPath $PackagePath
            Get-ChildItem (Join-Path $PackagePath 'ModelCompression.*.nupkg')
        }
    }
}
