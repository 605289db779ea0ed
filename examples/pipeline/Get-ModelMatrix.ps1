<#
.SYNOPSIS
    Fans a folder of models out over agents: sets the output variable 'matrix' of Azure DevOps to one matrix entry
    per .onnx file ({ "wine_mlp": { "modelPath": "models/wine_mlp.onnx", "modelName": "wine_mlp" }, ... }).
#>
[CmdletBinding()]
param([Parameter(Mandatory)] [string] $Path)
$ErrorActionPreference = 'Stop'
$matrix = [ordered]@{}
foreach ($file in Get-ChildItem -Path $Path -Filter *.onnx -File | Sort-Object Name) {
    $relative = [IO.Path]::GetRelativePath($PWD.ProviderPath, $file.FullName) -replace '\\', '/'
    # Matrix keys become job names: letters, digits and underscores only.
    $matrix[($file.BaseName -replace '[^A-Za-z0-9_]', '_')] = [ordered]@{ modelPath = $relative; modelName = $file.BaseName }
}
if ($matrix.Count -eq 0) { throw "No .onnx files in '$Path'." }
Write-Host "##vso[task.setvariable variable=matrix;isOutput=true]$($matrix | ConvertTo-Json -Compress)"
