# Quickstart: the whole job on the model that ships with the repository (models/wine_mlp.onnx, data/wine_*.npz).
# Run it with `dotnet run --project src/ModelCompression.Host` (no pwsh needed) or, in pwsh:
#   Import-Module ./out/ModelCompression; ./examples/quickstart.ps1

# 1. Load and inspect.
$model = Get-Model ./models/wine_mlp.onnx
$model | Get-ModelInfo

# 2. Prune half of the hidden neurons away (the file really shrinks), recover accuracy by distilling from the
#    original, then quantize the weights to int8.
$small = $model |
    Invoke-ModelPruning -Structured -Rate 0.5 |
    Invoke-Distillation -Teacher $model -TrainingData ./data/wine_train.npz -Epochs 30 -Seed 1 |
    Invoke-ModelQuantization -Mode Dynamic

# 3. Judge it with ONNX Runtime against the original on the test split, then measure both, interleaved.
Compare-Model -Reference $model -Difference $small -InputData ./data/wine_test.npz -MaxAccuracyDrop 0.02
Measure-ModelLatency $small -Baseline $model -BatchSize 32 -Iterations 200

# 4. Save it; the history of stages travels in the file.
$out = Join-Path ([System.IO.Path]::GetTempPath()) 'wine_mlp.small.onnx'
$file = $small | Export-Model $out -Force -PassThru
"Exported $($file.Name): $($file.Length) bytes; history:"
(Get-Model $file.FullName).History
Remove-Item $file.FullName
