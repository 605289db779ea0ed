# Quickstart: the whole job on the model that ships with the repository (models/wine_mlp.onnx, data/wine_*.npz).
# From the repository root: dotnet tool restore && dotnet build src/ModelCompression && dotnet pwsh examples/quickstart.ps1
# Each result goes to Out-Host, so every object shows in its own view (one output stream of mixed types would
# fall back to property lists after the first type).
$ErrorActionPreference = 'Stop'
if (-not (Get-Module ModelCompression)) { Import-Module (Join-Path $PSScriptRoot '../out/ModelCompression/ModelCompression.psd1') }
$root = Join-Path $PSScriptRoot '..'

# 1. Load and inspect.
$model = Get-Model (Join-Path $root 'models/wine_mlp.onnx')
$model | Get-ModelInfo | Out-Host

# 2. Prune half of the hidden neurons away (the file really shrinks), recover accuracy by distilling from the
#    original, then quantize the weights to int8.
$small = $model |
    Invoke-ModelPruning -Structured -Rate 0.5 |
    Invoke-Distillation -Teacher $model -TrainingData (Join-Path $root 'data/wine_train.npz') -Epochs 30 -Seed 1 |
    Invoke-ModelQuantization -Mode Dynamic
$small | Out-Host

# 3. Judge it with ONNX Runtime against the original on the test split, then measure both, interleaved.
Compare-Model -Reference $model -Difference $small -InputData (Join-Path $root 'data/wine_test.npz') -MaxAccuracyDrop 0.02 | Out-Host
Measure-ModelLatency $small -Baseline $model -BatchSize 32 -Iterations 200 | Out-Host

# 4. Save it: the file is a twelfth of the original, and the history of stages travels in it.
$out = Join-Path ([System.IO.Path]::GetTempPath()) 'wine_mlp.small.onnx'
$small | Export-Model $out -Force
Get-Item $model.Path, $out | Format-Table Name, @{ Label = 'Bytes'; Expression = { '{0:N0}' -f $_.Length }; Align = 'Right' } | Out-Host
(Get-Model $out).History | Out-Host
Remove-Item $out
