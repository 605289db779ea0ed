# Quickstart: load the model that ships with the repository, inspect it, save a copy and read it back.
# Run it with `dotnet run --project src/ModelCompression.Host` (no pwsh needed) or, in pwsh:
#   Import-Module ./out/ModelCompression; ./examples/quickstart.ps1

$model = Get-Model ./models/wine_mlp.onnx
$model | Get-ModelInfo

$out = Join-Path ([System.IO.Path]::GetTempPath()) 'wine_mlp.copy.onnx'
$file = $model | Export-Model $out -Force -PassThru
"Exported $($file.Name): $($file.Length) bytes; it loads back as:"
Get-Model $file.FullName
Remove-Item $file.FullName
