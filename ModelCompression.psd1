@{
    RootModule           = 'ModelCompression.dll'
    ModuleVersion        = '0.1.0'
    CompatiblePSEditions = @('Core')
    PowerShellVersion    = '7.4'
    GUID                 = '5c0f3c1e-7d3a-4d8e-9a51-3f1f2b6f0c4e'
    Author               = 'ModelCompression contributors'
    CompanyName          = 'ModelCompression'
    Copyright            = '(c) ModelCompression contributors. MIT License.'
    Description          = 'Makes ONNX models smaller and faster from PowerShell: quantization, pruning, distillation, honest latency and fidelity measurement. No Python.'
    FormatsToProcess     = @('ModelCompression.format.ps1xml')
    CmdletsToExport      = @(
        'Get-Model'
        'Get-ModelInfo'
        'Export-Model'
        'Invoke-ModelQuantization'
        'Optimize-Model'
        'Measure-ModelLatency'
        'Compare-Model'
        'Invoke-ModelPruning'
        'Invoke-Distillation'
    )
    FunctionsToExport    = @()
    VariablesToExport    = @()
    AliasesToExport      = @()
    PrivateData          = @{
        PSData = @{
            Tags         = @('ONNX', 'Quantization', 'Pruning', 'Distillation', 'MachineLearning', 'MLOps', 'OnnxRuntime')
            LicenseUri   = 'https://opensource.org/licenses/MIT'
            ReleaseNotes = @'
0.1.0: Get-Model, Get-ModelInfo and Export-Model load, inspect and atomically save ONNX models of any size: weights in
external data stay on disk until a stage needs them (read by position, the file's identity checked), export streams
them, a model over 2 GB is always written with external data. Invoke-ModelQuantization: dynamic int8, static QDQ with
calibration (and an accuracy target), float16, weight-only 4/8-bit with RTN, HQQ or GPTQ (float16/bfloat16 weights,
embeddings through GatherBlockQuantized, -HeadBits, per-layer reconstruction error). Optimize-Model: ONNX Runtime's
offline graph optimizations. Invoke-ModelPruning: unstructured, N:M and structured pruning, including attention
heads, the hidden size and whole blocks of transformers. Invoke-Distillation: training a student from a teacher,
language models on token windows included. Compare-Model: fidelity in ONNX Runtime (accuracy, perplexity) with CI
gates. Measure-ModelLatency: A/B latency with a confidence interval. Hostile files get stable error ids.
'@
        }
    }
}
