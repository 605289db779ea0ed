# The module as a user imports it: manifest, loading models, errors with stable ids, export, dependency isolation.
BeforeAll { . $PSScriptRoot/Common.ps1 }

Describe 'The module' {
    It 'has a valid manifest that exports exactly the cmdlets, each with an output type' {
        $manifest = Test-ModuleManifest $ModulePath
        $manifest.CompatiblePSEditions | Should -Be 'Core'
        $module = Get-Module ModelCompression
        @($module.ExportedCmdlets.Keys | Sort-Object) | Should -Be @($manifest.ExportedCmdlets.Keys | Sort-Object)
        $module.ExportedCmdlets.Keys | Should -Contain 'Get-Model'
        # The manifest's version and the assemblies' (Directory.Build.props) are one version; the history records it.
        $module.ImplementingAssembly.GetName().Version.ToString(3) | Should -Be $manifest.Version.ToString()
        foreach ($name in $module.ExportedCmdlets.Keys) {
            (Get-Command $name).OutputType | Should -Not -BeNullOrEmpty -Because "$name declares [OutputType]"
        }
    }

    It 'loads the engine and its dependencies in its own load context, beside another Google.Protobuf' {
        # A different Google.Protobuf (3.25.1) is loaded into a fresh pwsh first; the engine must use its own (3.36.2).
        $foreign = $env:MC_FOREIGN_PROTOBUF
        if (-not $foreign -or -not (Test-Path $foreign)) {
            $foreign = Join-Path ([Environment]::GetFolderPath('UserProfile')) '.nuget/packages/google.protobuf/3.25.1/lib/net5.0/Google.Protobuf.dll'
        }
        $foreign | Should -Exist -Because 'dotnet restore of tests/Pester downloads Google.Protobuf 3.25.1'
        $out = Invoke-Pwsh -WorkingDirectory $TestDrive -Command @"
`$ErrorActionPreference = 'Stop'
Add-Type -Path '$foreign'
[Google.Protobuf.ByteString].Assembly.GetName().Version.ToString()
Import-Module '$ModulePath'
Get-Model '$WineModel' | Export-Model ./copy.onnx
`$null = Get-Model ./copy.onnx | Get-ModelInfo
`$context = [System.Runtime.Loader.AssemblyLoadContext]::All | Where-Object Name -eq ModelCompression
`$context.Assemblies | ForEach-Object { `$n = `$_.GetName(); "private `$(`$n.Name) `$(`$n.Version)" }
[System.Runtime.Loader.AssemblyLoadContext]::Default.Assemblies | ForEach-Object { "default `$(`$_.GetName().Name)" }
"@
        $LASTEXITCODE | Should -Be 0 -Because ($out -join "`n")
        $out[0] | Should -Be '3.25.1.0'
        $out | Should -Contain 'private ModelCompression.Native 0.1.0.0' -Because ($out -join "`n")
        @($out -like 'private Google.Protobuf 3.36.*').Count | Should -Be 1
        $out | Should -Not -Contain 'default ModelCompression.Native'
    }
}

Describe 'The package' {
    It 'is made by build.ps1 -Task Package without touching PSResource repositories, installs by name and imports' {
        $before = @(Get-PSResourceRepository | ForEach-Object { "$($_.Name)=$($_.Uri)" })
        $out = Invoke-Pwsh -WorkingDirectory $TestDrive -Command "& '$RepoRoot/build.ps1' -Task Package -PackagePath '$TestDrive/package' | ForEach-Object Name"
        $LASTEXITCODE | Should -Be 0 -Because ($out -join "`n")
        $out | Should -Be 'ModelCompression.0.1.0.nupkg'
        @(Get-PSResourceRepository | ForEach-Object { "$($_.Name)=$($_.Uri)" }) | Should -Be $before

        # Installing needs a repository: register one in a throw-away user profile (XDG folders in the test drive).
        $out = Invoke-Pwsh -WorkingDirectory $TestDrive -Command @"
`$ErrorActionPreference = 'Stop'
`$env:XDG_DATA_HOME = '$TestDrive/data'; `$env:XDG_CONFIG_HOME = '$TestDrive/config'
Register-PSResourceRepository -Name ModelCompressionTest -Uri '$TestDrive/package' -Trusted
New-Item -ItemType Directory '$TestDrive/modules' | Out-Null
Save-PSResource -Name ModelCompression -Repository ModelCompressionTest -Path '$TestDrive/modules' -TrustRepository
`$env:PSModulePath = '$TestDrive/modules' + [IO.Path]::PathSeparator + `$env:PSModulePath
Import-Module ModelCompression
(Get-Module ModelCompression).ModuleBase
(Get-Model '$WineModel' | Get-ModelInfo).Parameters
"@
        $LASTEXITCODE | Should -Be 0 -Because ($out -join "`n")
        $out[0] | Should -BeLike "$TestDrive/modules/ModelCompression*"
        $out[1] | Should -Be '70147'
        @(Get-PSResourceRepository | ForEach-Object { "$($_.Name)=$($_.Uri)" }) | Should -Be $before
    }
}

Describe 'Get-Model' {
    It 'returns a Model per file' {
        $models = @(Get-Model (Join-Path $RepoRoot 'models/*.onnx'))
        $models.Count | Should -Be 1
        $models[0].GetType().FullName | Should -Be 'ModelCompression.Model'
        $models[0].Name | Should -Be 'wine_mlp'
        $models[0].Parameters | Should -Be 70147
    }

    It 'binds -LiteralPath from the PSPath property (Get-ChildItem | Get-Model)' {
        @([pscustomobject]@{ PSPath = "Microsoft.PowerShell.Core\FileSystem::$WineModel" } | Get-Model).Count | Should -Be 1
        @(Get-ChildItem (Join-Path $RepoRoot 'models/*.onnx') | Get-Model | Get-ModelInfo).Count | Should -Be 1
    }

    It 'writes an error with a stable id for each bad file and still loads the others' {
        Push-Location $TestDrive
        try {
            Set-Content empty.onnx -Value $null -NoNewline
            [IO.File]::WriteAllBytes("$TestDrive/image.onnx", [byte[]](0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52))
            $bytes = [IO.File]::ReadAllBytes($WineModel)
            [IO.File]::WriteAllBytes("$TestDrive/cut.onnx", $bytes[0..($bytes.Length / 3 - 1)])
            New-Item -ItemType Directory folder.onnx | Out-Null
            $models = @('missing.onnx', 'folder.onnx', 'empty.onnx', 'image.onnx', 'cut.onnx', $WineModel, 'nothing*.onnx' |
                Get-Model -ErrorVariable errs -ErrorAction SilentlyContinue)
        }
        finally { Pop-Location }
        $models.Count | Should -Be 1
        $errs | Get-ErrorId | Should -Be PathNotFound, ModelPathIsDirectory, ModelFileEmpty, ModelFileNotOnnx, ModelFileTruncated, PathNotFound
        $errs.CategoryInfo.Category | Should -Be ObjectNotFound, InvalidArgument, InvalidData, InvalidData, InvalidData, ObjectNotFound
        foreach ($e in $errs[0..4]) { $e.Exception.Message | Should -BeLike "*$TestDrive*" }
    }
}

Describe 'A derived model' {
    It 'is not its source: its own name, no file until exported, and reports tell the two apart' {
        $m = Get-Model $WineModel
        $q = $m | Invoke-ModelPruning -Rate 0.5 -WarningAction SilentlyContinue | Invoke-ModelQuantization
        $q.Name | Should -Be 'wine_mlp.pruning.quantize'
        $q.Path | Should -BeNullOrEmpty
        (Get-ModelInfo -InputObject $q).Path | Should -BeNullOrEmpty
        (Get-ModelInfo -InputObject $q).FileSize | Should -BeNullOrEmpty
        $json = Compare-Model $m $q | ConvertTo-Json -Depth 4 | ConvertFrom-Json
        $json.Reference, $json.Difference | Should -Be 'wine_mlp', 'wine_mlp.pruning.quantize'
        $json.ReferencePath | Should -Be $WineModel
        $json.DifferencePath | Should -BeNullOrEmpty
        $latency = Measure-ModelLatency $q -Baseline $m -Iterations 3 -Warmup 0
        $latency.Model | Should -Be 'wine_mlp', 'wine_mlp.pruning.quantize'
        $latency.Path | Should -Be $WineModel, $null
        $latency[1].Baseline | Should -Be 'wine_mlp'
        # Export-Model -Directory still names the file after the model's origin.
        $q | Export-Model -Directory $TestDrive
        Join-Path $TestDrive 'wine_mlp.onnx' | Should -Exist
        (Get-Model (Join-Path $TestDrive 'wine_mlp.onnx')).Name | Should -Be 'wine_mlp'
    }
}

Describe 'Get-ModelInfo' {
    It 'describes the model, from a Model or a path' {
        $info = Get-Model $WineModel | Get-ModelInfo
        $info.Parameters | Should -Be 70147
        $info.FileSize | Should -Be 281293
        $info.IrVersion | Should -Be 8
        $info.Producer | Should -Be 'pytorch 1.13.0'
        $info.Operators['Gemm'] | Should -Be 3
        $info.Operators['Relu'] | Should -Be 2
        $info.InputText | Should -Be 'features: float32[batch,13]'
        $info.Sparsity | Should -Be 0
        (Get-ModelInfo $WineModel).GetType().FullName | Should -Be 'ModelCompression.ModelInfo'
    }
}

Describe 'Export-Model' {
    BeforeEach { Push-Location $TestDrive }
    AfterEach { Pop-Location }

    It 'is atomic and honours -WhatIf, -Force, -PassThru and -Directory' {
        Get-Model $WineModel | Export-Model ./a.onnx -WhatIf
        './a.onnx' | Should -Not -Exist

        $file = Get-Model $WineModel | Export-Model ./a.onnx -PassThru
        $file | Should -BeOfType System.IO.FileInfo
        # As Get-Item returns it: provider properties, so the FileSystem view shows Mode and Length.
        $file.PSPath | Should -Be (Get-Item ./a.onnx).PSPath
        $file.PSProvider.Name | Should -Be 'FileSystem'
        ($file | Out-String) | Should -Match ([regex]::Escape($file.Length.ToString()))
        (Get-Item ./a.onnx).Length | Should -Be (Get-Item $WineModel).Length

        Set-Content ./b.onnx 'keep me'
        Get-Model $WineModel | Export-Model ./b.onnx -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be ExportFileExists
        $errs[0].CategoryInfo.Category | Should -Be ResourceExists
        Get-Content ./b.onnx | Should -Be 'keep me'
        Get-Model $WineModel | Export-Model ./b.onnx -Force
        (Get-Item ./b.onnx).Length | Should -Be (Get-Item $WineModel).Length

        New-Item -ItemType Directory dir | Out-Null
        Get-Model $WineModel, ./a.onnx | Export-Model -Directory ./dir -ExternalData
        './dir/wine_mlp.onnx.data' | Should -Exist
        './dir/a.onnx' | Should -Exist

        Get-Model $WineModel | Export-Model ./missing-folder/x.onnx -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be ExportDirectoryNotFound
        # Nothing half-written anywhere, and the source is never touched.
        Get-ChildItem -Recurse -Filter *.tmp | Should -BeNullOrEmpty
        (Get-Item $WineModel).Length | Should -Be 281293
    }

    It 'round-trips models with external data, writing them as they came unless told' {
        Get-Model $WineModel | Export-Model ./ext.onnx -ExternalData
        Get-Model ./ext.onnx | Export-Model ./kept.onnx
        Get-Model ./ext.onnx | Export-Model ./back.onnx -ExternalData:$false
        (Get-Item ./ext.onnx).Length | Should -BeLessThan 10000
        (Get-Item ./kept.onnx).Length | Should -BeLessThan 10000
        './kept.onnx.data' | Should -Exist
        (Get-Item ./back.onnx).Length | Should -Be (Get-Item $WineModel).Length
        './back.onnx.data' | Should -Not -Exist
    }
}
