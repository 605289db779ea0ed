#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Builds, tests, documents and packages ModelCompression. Every task is a plain dotnet or PSResourceGet command, so
    machines without this script run the same steps directly (see README.md).
.PARAMETER Task
    Build: the module in out/ModelCompression. Test: all tests. Help: the MAML help only. Package: a .nupkg of the
    module as built in out/ModelCompression (run Build first), made by PSResourceGet's Compress-PSResource, which
    registers no repository: publish or install it from wherever you put it.
    Extension: the Azure DevOps extension (.vsix) in -ExtensionPath, with the ModelCompressionGate task of extension/
    and the module as built in out/ModelCompression inside it (run Build first). Needs Node.js 20+ and npm: the npm
    packages (azure-pipelines-task-lib for the task, tfx-cli to package) are installed as extension/**/package-lock.json
    pins them, with npm ci, once per lock file.
.PARAMETER PackagePath
    The folder the .nupkg is written to (default out/package).
.PARAMETER ExtensionPath
    The folder the extension is staged and packaged in (default out/extension): the .vsix, and the task as the agent
    runs it in ModelCompressionGate/.
#>
[CmdletBinding()]
param(
    [ValidateSet('Build', 'Test', 'Help', 'Package', 'Extension')]
    [string[]] $Task = @('Build', 'Test'),
    [ValidateSet('Debug', 'Release')]
    [string] $Configuration = 'Release',
    [string] $PackagePath = (Join-Path $PSScriptRoot 'out/package'),
    [string] $ExtensionPath = (Join-Path $PSScriptRoot 'out/extension')
)
$ErrorActionPreference = 'Stop'
Set-Location $PSScriptRoot

function Invoke-Dotnet {
    & dotnet @args
    if ($LASTEXITCODE -ne 0) { throw "dotnet $args failed with exit code $LASTEXITCODE" }
}

# npm ci for the lock file in $Folder, skipped when node_modules was installed from this very lock file.
function Install-NpmPackages([string] $Folder, [switch] $Production) {
    $stamp = Join-Path $Folder 'node_modules/.installed-lock'
    $lock = (Get-FileHash (Join-Path $Folder 'package-lock.json')).Hash
    if ((Test-Path $stamp) -and (Get-Content -Raw $stamp).Trim() -eq $lock) { return }
    Push-Location $Folder
    try {
        & npm ci --no-audit --no-fund --ignore-scripts @(if ($Production) { '--omit=dev' })
        if ($LASTEXITCODE -ne 0) { throw "npm ci in $Folder failed with exit code $LASTEXITCODE" }
    }
    finally { Pop-Location }
    Set-Content $stamp $lock
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
        'Extension' {
            $module = Join-Path $PSScriptRoot 'out/ModelCompression'
            if (-not (Test-Path (Join-Path $module 'ModelCompression.psd1'))) { throw "The module is not built in $module; run -Task Build first." }
            if (-not (Get-Command npm -ErrorAction SilentlyContinue)) { throw 'The extension needs Node.js 20 or later and npm on PATH.' }
            $source = Join-Path $PSScriptRoot 'extension'
            Install-NpmPackages $source
            # The staged task: sources, its production packages, the example scripts it runs, and the module.
            $taskFolder = Join-Path $ExtensionPath 'ModelCompressionGate'
            # Anew but for its installed packages, which Install-NpmPackages keeps while the lock file is the same.
            if (Test-Path $taskFolder) { Get-ChildItem $taskFolder -Exclude node_modules | Remove-Item -Recurse -Force }
            New-Item -ItemType Directory -Force (Join-Path $taskFolder 'scripts') | Out-Null
            Copy-Item (Join-Path $source 'ModelCompressionGate/*') $taskFolder -Exclude node_modules
            Copy-Item (Join-Path $source '*.json'), (Join-Path $source '*.md') $ExtensionPath -Exclude package*.json
            Copy-Item (Join-Path $PSScriptRoot 'examples/pipeline/*.ps1') (Join-Path $taskFolder 'scripts')
            Copy-Item -Recurse $module (Join-Path $taskFolder 'ModelCompression')
            Install-NpmPackages $taskFolder -Production
            # One version: the module's, in the extension and the task.
            $version = (Import-PowerShellDataFile (Join-Path $PSScriptRoot 'ModelCompression.psd1')).ModuleVersion
            $manifest = Get-Content -Raw (Join-Path $ExtensionPath 'vss-extension.json') | ConvertFrom-Json
            $manifest.version = $version
            $manifest | ConvertTo-Json -Depth 10 | Set-Content (Join-Path $ExtensionPath 'vss-extension.json')
            $taskManifest = Get-Content -Raw (Join-Path $taskFolder 'task.json') | ConvertFrom-Json
            $parts = ([version]$version)
            $taskManifest.version = [ordered]@{ Major = $parts.Major; Minor = $parts.Minor; Patch = [Math]::Max(0, $parts.Build) }
            $taskManifest | ConvertTo-Json -Depth 10 | Set-Content (Join-Path $taskFolder 'task.json')
            Get-ChildItem $ExtensionPath -Filter *.vsix | Remove-Item
            & node (Join-Path $source 'node_modules/tfx-cli/_build/tfx-cli.js') extension create --root $ExtensionPath `
                --manifest-globs vss-extension.json --output-path $ExtensionPath --no-prompt
            if ($LASTEXITCODE -ne 0) { throw "tfx extension create failed with exit code $LASTEXITCODE" }
            Get-ChildItem $ExtensionPath -Filter *.vsix
        }
    }
}
