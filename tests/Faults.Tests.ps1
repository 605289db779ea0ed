# What long work meets, in real pwsh processes on small models: a process killed mid-export or mid-stage, a process id
# below 1000 (a PID namespace, as in containers), a full disk, two exports racing for one path, a data file replaced
# during a stage, Ctrl+C. The large-model variants: `dotnet run -c Release --project bench/ModelCompression.Bench -- faults`.
BeforeAll {
    . $PSScriptRoot/Common.ps1

    # Protobuf by hand, enough of ONNX for a chain of MatMuls whose weights are in one external data file.
    function ConvertTo-Varint([uint64] $Value) {
        $bytes = [Collections.Generic.List[byte]]::new()
        do { $b = [byte]($Value -band 0x7F); $Value = $Value -shr 7; if ($Value) { $b = $b -bor 0x80 }; $bytes.Add($b) } while ($Value)
        , $bytes.ToArray()
    }
    function Pb([int] $Field, $Value) {
        if ($Value -is [string]) { $Value = [Text.Encoding]::UTF8.GetBytes($Value) }
        if ($Value -is [array]) { , [byte[]]((ConvertTo-Varint ($Field * 8 + 2)) + (ConvertTo-Varint $Value.Length) + [byte[]]$Value) }
        else { , [byte[]]((ConvertTo-Varint ($Field * 8)) + (ConvertTo-Varint $Value)) }
    }
    function New-TensorInfo([string] $Name, [int] $Width) {
        $shape = (Pb 1 (Pb 2 'batch')) + (Pb 1 (Pb 1 $Width))
        , [byte[]]((Pb 1 $Name) + (Pb 2 (Pb 1 ((Pb 1 1) + (Pb 2 $shape)))))
    }
    # x [batch, Width] -> MatMul by $Layers float32 weights of [Width, Width] -> y, the weights in "<file>.data" filled with
    # $Value, or with -Sparse a sparse file of zeros (no disk used until it is copied).
    function New-ChainModel([string] $Path, [int] $Width, [int] $Layers = 1, [float] $Value = 0.01, [switch] $Sparse) {
        $name = Split-Path $Path -Leaf
        $graph = [Collections.Generic.List[byte]]::new()
        $length = [long]$Width * $Width * 4
        $stream = [IO.File]::Create("$Path.data")
        try {
            for ($l = 0; $l -lt $Layers; $l++) {
                $x = if ($l -eq 0) { 'x' } else { "h$($l - 1)" }
                $y = if ($l -eq $Layers - 1) { 'y' } else { "h$l" }
                $graph.AddRange([byte[]](Pb 1 ((Pb 1 $x) + (Pb 1 "w$l") + (Pb 2 $y) + (Pb 3 "matmul$l") + (Pb 4 'MatMul'))))
                $external = foreach ($kv in @{ location = "$name.data"; offset = $l * $length; length = $length }.GetEnumerator()) { Pb 13 ((Pb 1 $kv.Key) + (Pb 2 "$($kv.Value)")) }
                $graph.AddRange([byte[]](Pb 5 ((Pb 1 $Width) + (Pb 1 $Width) + (Pb 2 1) + (Pb 8 "w$l") + ($external | ForEach-Object { $_ }) + (Pb 14 1))))
            }
            if ($Sparse) { $stream.SetLength($Layers * $length) }
            else {
                $floats = [float[]]::new($Width * $Width); [Array]::Fill($floats, $Value)
                $bytes = [byte[]]::new($length); [Buffer]::BlockCopy($floats, 0, $bytes, 0, $length)
                for ($l = 0; $l -lt $Layers; $l++) { $stream.Write($bytes, 0, $bytes.Length) }
            }
        }
        finally { $stream.Dispose() }
        $graph.AddRange([byte[]]((Pb 2 'chain') + (Pb 11 (New-TensorInfo x $Width)) + (Pb 12 (New-TensorInfo y $Width))))
        [IO.File]::WriteAllBytes($Path, [byte[]]((Pb 1 8) + (Pb 8 ((Pb 1 '') + (Pb 2 17))) + (Pb 7 $graph.ToArray())))
    }

    # Starts a pwsh of this kind on $Script in the background, the module imported, $ErrorActionPreference Stop;
    # $Environment adds variables, $Prefix runs it under another command (unshare). Returns the process.
    function Start-Pwsh {
        param([Parameter(Mandatory)] [string] $Script, [hashtable] $Environment = @{}, [string[]] $Prefix = @())
        $exe = [Environment]::ProcessPath
        $command = @($Prefix) + @($exe) + @(if ([IO.Path]::GetFileNameWithoutExtension($exe) -eq 'dotnet') { Join-Path $PSHOME 'pwsh.dll' })
        $psi = [Diagnostics.ProcessStartInfo]::new($command[0])
        foreach ($a in @($command | Select-Object -Skip 1) + @('-NoProfile', '-NonInteractive', '-Command',
                "`$ErrorActionPreference = 'Stop'; `$ProgressPreference = 'SilentlyContinue'; Import-Module '$ModulePath'; $Script")) { $psi.ArgumentList.Add($a) }
        $psi.RedirectStandardOutput = $true
        $psi.RedirectStandardError = $true
        $psi.WorkingDirectory = $RepoRoot
        foreach ($k in $Environment.Keys) { $psi.Environment[$k] = $Environment[$k] }
        [Diagnostics.Process]::Start($psi)
    }

    # Waits for a process started by Start-Pwsh; returns its output (standard error after standard output) as lines.
    function Wait-Pwsh([Diagnostics.Process] $Process, [int] $Seconds = 300) {
        $out = $Process.StandardOutput.ReadToEndAsync(); $err = $Process.StandardError.ReadToEndAsync()
        if (-not $Process.WaitForExit($Seconds * 1000)) { $Process.Kill($true); throw "pwsh did not finish in $Seconds s" }
        @("$($out.Result)" -split "`n") + @("$($err.Result)" -split "`n") | Where-Object { $_ } | ForEach-Object { $_ -replace '\e\[[0-9;]*m' }
    }

    # Waits until $Condition is true (polling every few milliseconds); false after $Seconds.
    function Wait-Until([scriptblock] $Condition, [double] $Seconds = 30) {
        $clock = [Diagnostics.Stopwatch]::StartNew()
        while (-not (& $Condition)) { if ($clock.Elapsed.TotalSeconds -gt $Seconds) { return $false }; Start-Sleep -Milliseconds 5 }
        $true
    }

    # Everything in a folder, hidden files included, by name.
    function Get-Entry([string] $Folder) { @(Get-ChildItem -LiteralPath $Folder -Force -Recurse -Name | Sort-Object) }

    # In a child script: stages of any model spill their large new tensors to scratch files (as a 512 MB model's do).
    $SpillAll = "`$null = Get-Model '$WineModel'; ([AppDomain]::CurrentDomain.GetAssemblies() | Where-Object { `$_.GetName().Name -eq 'ModelCompression.Native' }).GetType('ModelCompression.Native.Onnx.OnnxModel').GetProperty('SpillThreshold').SetValue(`$null, [long]0); "

    # 64 MatMuls of 512 x 512 (64 MB in external data): stages of it take a second or more, weight after weight.
    $Chain = Join-Path $TestDrive 'chain/chain.onnx'
    $null = New-Item -ItemType Directory (Split-Path $Chain)
    New-ChainModel $Chain -Width 512 -Layers 64
}

Describe 'A killed process' {
    It 'leaves no file under the final name when killed mid-export, and the next export to the same place leaves only the model' {
        # 256 MB of weights (a sparse file: no disk to start from): the export takes a second or more.
        $source = Join-Path $TestDrive 'big/big.onnx'
        $null = New-Item -ItemType Directory (Split-Path $source), (Join-Path $TestDrive 'out')
        New-ChainModel $source -Width 8192 -Sparse
        $target = Join-Path $TestDrive 'out/out.onnx'
        $child = Start-Pwsh "Get-Model '$source' | Export-Model '$target'"
        $writing = Wait-Until -Seconds 120 { @(Get-ChildItem (Split-Path $target) -Force -Filter '.out.onnx.data.mc-*.tmp' | Where-Object Length -GT 16MB).Count -gt 0 }
        $child.Kill()   # SIGKILL: no handler, no finally block runs
        $child.WaitForExit()
        $writing | Should -BeTrue -Because 'the export was killed while it wrote'
        Test-Path $target | Should -BeFalse
        Get-Entry (Split-Path $target) | Should -BeLike '.out.onnx.data.mc-*.tmp' -Because 'the killed export left its temporary file'

        Get-Model $source | Export-Model $target
        Get-Entry (Split-Path $target) | Should -Be 'out.onnx', 'out.onnx.data'
    }

    It 'leaves its scratch folder when killed mid-stage, and the next stage removes it' {
        $tmp = New-Item -ItemType Directory (Join-Path $TestDrive 'tmp-kill')
        # Weight-only quantization writes each layer's result as it goes: the scratch file grows from the first layer on.
        $child = Start-Pwsh "$SpillAll Get-Model '$Chain' | Invoke-ModelQuantization -Mode WeightOnly -Algorithm HQQ | Out-Null" -Environment @{ TMPDIR = "$tmp/" }
        $spilling = Wait-Until -Seconds 120 { @(Get-ChildItem $tmp -Recurse -Filter *.data | Where-Object Length -GT 0).Count -gt 0 }
        $child.Kill()
        $child.WaitForExit()
        $spilling | Should -BeTrue -Because 'the stage was killed while it wrote scratch files'
        (Get-ChildItem $tmp -Filter mc-*).Name | Should -BeLike "mc-scratch-$($child.Id)-*"

        $out = Wait-Pwsh (Start-Pwsh "$SpillAll `$q = Get-Model '$WineModel' | Invoke-ModelQuantization -Mode Float16; (Get-ChildItem '$tmp' -Filter mc-*).Name" -Environment @{ TMPDIR = "$tmp/" })
        $out | Should -BeLike 'mc-scratch-*' -Because 'the second stage made its own scratch folder and removed the dead one'
        $out | Should -Not -BeLike "mc-scratch-$($child.Id)-*"
        Get-ChildItem $tmp -Filter mc-* | Should -BeNullOrEmpty -Because 'a process removes its own scratch folder when it exits'
    }
}

Describe 'Process ids below 1000' {
    It 'quantizes, prunes and exports a model that spills to scratch files in a PID namespace' {
        if (-not $IsLinux) { Set-ItResult -Skipped -Because 'PID namespaces are Linux'; return }
        $probe = & unshare --pid --fork --mount-proc true 2>&1
        if ($LASTEXITCODE -ne 0) { Set-ItResult -Skipped -Because "unshare --pid --fork --mount-proc fails here: $probe"; return }
        $tmp = New-Item -ItemType Directory (Join-Path $TestDrive 'tmp-pid')
        $out = Join-Path $TestDrive 'pid.onnx'
        $lines = Wait-Pwsh (Start-Pwsh -Prefix unshare, --pid, --fork, --mount-proc -Environment @{ TMPDIR = "$tmp/" } -Script (
            "$SpillAll `$p = Get-Model '$WineModel' | Invoke-ModelPruning -Rate 0.5 -WarningAction SilentlyContinue; " +
            "`$q = `$p | Invoke-ModelQuantization -Mode WeightOnly -Bits 4; `$q | Export-Model '$out'; `"pid `$PID`"; (Get-ChildItem '$tmp' -Filter mc-*).Name"))
        $because = $lines -join "`n"
        $id = $lines | Where-Object { $_ -match '^pid \d+$' }
        $id | Should -Not -BeNullOrEmpty -Because "the stages ran to the end: $because"
        [int]($id -replace 'pid ') | Should -BeLessThan 1000 -Because $because
        $lines | Where-Object { $_ -match '^mc-scratch-\d{1,3}-\d+-[0-9a-f]+$' } | Should -Not -BeNullOrEmpty -Because "the stages spilled to scratch files: $because"
        (Compare-Model $WineModel $out -InputData $WineData).Outputs[0].Cosine | Should -BeGreaterThan 0.9
    }
}

Describe 'A full disk' {
    BeforeAll {
        # A 64 KB tmpfs: smaller than the wine model (281 KB) and its float16 weights (128 KB).
        $Full = New-Item -ItemType Directory (Join-Path $TestDrive 'full')
        $MountFailure = if (-not $IsLinux) { 'tmpfs is Linux' } else {
            $message = & mount -t tmpfs -o size=64k tmpfs $Full 2>&1
            if ($LASTEXITCODE -ne 0) { "mount -t tmpfs fails here (not root, or no CAP_SYS_ADMIN): $message" }
        }
    }
    AfterAll { if (-not $MountFailure) { & umount -l $Full } }

    It 'gives ExportWriteFailed for a destination with no room, and leaves nothing' {
        if ($MountFailure) { Set-ItResult -Skipped -Because $MountFailure; return }
        Get-Model $WineModel | Export-Model (Join-Path $Full 'out.onnx') -ErrorVariable errs -ErrorAction SilentlyContinue
        $errs | Get-ErrorId | Should -Be ExportWriteFailed
        $errs[0].CategoryInfo.Category | Should -Be WriteError
        Get-Entry $Full | Should -BeNullOrEmpty
    }

    It 'gives ScratchWriteFailed for a temporary folder with no room, and leaves nothing' {
        if ($MountFailure) { Set-ItResult -Skipped -Because $MountFailure; return }
        $lines = Wait-Pwsh (Start-Pwsh -Environment @{ TMPDIR = "$Full/" } -Script (
            "$SpillAll Get-Model '$WineModel' | Invoke-ModelQuantization -Mode Float16 -ErrorVariable errs -ErrorAction SilentlyContinue; " +
            "`$errs | ForEach-Object { `"`$(`$_.FullyQualifiedErrorId) `$(`$_.CategoryInfo.Category)`" }"))
        $lines | Should -BeLike 'ScratchWriteFailed,* WriteError' -Because ($lines -join "`n")
        # (.NET's own diagnostic pipes and pwsh's files in TMPDIR are not the engine's.)
        Get-Entry $Full | Where-Object { $_ -like 'mc-*' -or $_ -like '.*.mc-*.tmp' } | Should -BeNullOrEmpty
    }
}

Describe 'Two exports to one path' {
    It 'leave one of the two models, whole, in each of 20 rounds' {
        $dir = New-Item -ItemType Directory (Join-Path $TestDrive 'race')
        $models = foreach ($name in 'a', 'b') {
            $source = Join-Path $TestDrive "race-$name/$name.onnx"
            $null = New-Item -ItemType Directory (Split-Path $source)
            # Different shapes and values: one model's graph with the other's data file is neither of them.
            if ($name -eq 'a') { New-ChainModel $source -Width 512 -Layers 4 -Value 0.01 } else { New-ChainModel $source -Width 768 -Layers 3 -Value -0.02 }
            $reference = Join-Path (Split-Path $source) 'reference/out.onnx'
            $null = New-Item -ItemType Directory (Split-Path $reference)
            Get-Model $source | Export-Model $reference
            [pscustomobject]@{ Source = $source; Hash = (Get-FileHash $reference).Hash + (Get-FileHash "$reference.data").Hash }
        }
        $target = Join-Path $dir 'out.onnx'
        # Each racer loads its model, says it is ready, and in each round waits for the signal, exports, and says it is done.
        $racers = foreach ($m in $models) {
            $name = Split-Path $m.Source -LeafBase
            Start-Pwsh ("`$m = Get-Model '$($m.Source)'; `$null = New-Item '$TestDrive/ready-$name'; foreach (`$r in 1..20) { " +
                "while (-not (Test-Path `"$TestDrive/go-`$r`")) { Start-Sleep -Milliseconds 1 }; `$m | Export-Model '$target' -Force; `$null = New-Item `"$TestDrive/done-`$r-$name`" }")
        }
        try {
            Wait-Until { (Test-Path "$TestDrive/ready-a") -and (Test-Path "$TestDrive/ready-b") } -Seconds 120 | Should -BeTrue -Because 'both racers started'
            foreach ($r in 1..20) {
                $null = New-Item (Join-Path $TestDrive "go-$r")
                Wait-Until { (Test-Path "$TestDrive/done-$r-a") -and (Test-Path "$TestDrive/done-$r-b") } | Should -BeTrue -Because "round $r finished"
                $hash = (Get-FileHash $target).Hash + (Get-FileHash "$target.data").Hash
                $hash | Should -BeIn $models.Hash -Because "round $r left one whole model"
                Get-Entry $dir | Should -Be 'out.onnx', 'out.onnx.data'
            }
        }
        finally { foreach ($p in $racers) { if (-not $p.HasExited) { $p.Kill() } } }
        $winner = $models | Where-Object Hash -EQ $hash
        (Compare-Model $winner.Source $target).Outputs[0].MaxAbsError | Should -Be 0
    }
}

Describe 'A data file replaced during a stage' {
    It 'gives ExternalDataChanged' {
        $dir = New-Item -ItemType Directory (Join-Path $TestDrive 'replaced')
        Copy-Item $Chain, "$Chain.data" $dir
        $path = Join-Path $dir 'chain.onnx'
        # The new file, written beforehand (one byte differs) so that replacing it is one rename, as tools replace files.
        Copy-Item "$path.data" "$path.data.new"
        $stream = [IO.File]::OpenWrite("$path.data.new"); $stream.WriteByte(7); $stream.Dispose()
        $ps = New-PowerShell
        try {
            $null = $ps.AddScript("Get-Model '$path' | Invoke-ModelQuantization -Mode WeightOnly -Algorithm HQQ")
            $async = $ps.BeginInvoke()
            Wait-Until { $ps.Streams.Progress.Count -gt 0 -or $async.IsCompleted } | Should -BeTrue
            $async.IsCompleted | Should -BeFalse -Because 'the stage is still running when the file is replaced'
            Move-Item "$path.data.new" "$path.data" -Force
            $null = $ps.EndInvoke($async)
            $ps.Streams.Error | Get-ErrorId | Should -Be ExternalDataChanged
        }
        finally { $ps.Dispose() }
    }
}

Describe 'Ctrl+C' {
    BeforeAll {
        # Stages spill here too (the scratch files must go with the stopped stage).
        $engine = [AppDomain]::CurrentDomain.GetAssemblies() | Where-Object { $_.GetName().Name -eq 'ModelCompression.Native' }
        $SpillThreshold = $engine.GetType('ModelCompression.Native.Onnx.OnnxModel').GetProperty('SpillThreshold')
        $OldThreshold = $SpillThreshold.GetValue($null)
        $SpillThreshold.SetValue($null, [long]0)
        $Big = Join-Path $TestDrive 'stop/big.onnx'
        $null = New-Item -ItemType Directory (Split-Path $Big)
        New-ChainModel $Big -Width 8192 -Sparse
    }
    AfterAll { $SpillThreshold.SetValue($null, $OldThreshold) }

    # The scripts' {0}..{4}: the chain model, the 256 MB model, an export target, the wine model and its data.
    It 'stops <stage> within a second and leaves no file' -ForEach @(
        @{ stage = 'quantization'; script = "Get-Model '{0}' | Invoke-ModelQuantization -Mode WeightOnly -Algorithm HQQ" }
        @{ stage = 'pruning'; script = "Get-Model '{0}' | Invoke-ModelPruning -Rate 0.5" }
        @{ stage = 'distillation'; script = "Invoke-Distillation -Teacher '{3}' -HiddenLayers 64 -TrainingData '{4}' -Epochs 100000" }
        @{ stage = 'Compare-Model'; script = "Compare-Model '{0}' '{0}' -BatchSize 1024" }
        @{ stage = 'Measure-ModelLatency'; script = "Measure-ModelLatency '{3}' -Iterations 100000000 -Warmup 0" }
        @{ stage = 'Export-Model'; script = "Get-Model '{1}' | Export-Model '{2}'" }
    ) {
        $out = New-Item -ItemType Directory (Join-Path $TestDrive "stop-$stage")
        $scratch = Join-Path ([IO.Path]::GetTempPath()) "mc-scratch-$PID-*"
        $before = @(Get-ChildItem $scratch -Recurse -File -ErrorAction Ignore).Count
        $ps = New-PowerShell
        try {
            $null = $ps.AddScript(($script -f $Chain, $Big, (Join-Path $out 'out.onnx'), $WineModel, $WineData))
            $async = $ps.BeginInvoke()
            # Running: it reported progress (or, for the export, its temporary file has grown).
            Wait-Until { $ps.Streams.Progress.Count -gt 0 -or @(Get-ChildItem $out -Force | Where-Object Length -GT 1MB).Count -gt 0 -or $async.IsCompleted } | Should -BeTrue
            Start-Sleep -Milliseconds 100
            $async.IsCompleted | Should -BeFalse -Because "$stage was still running when it was stopped"
            $clock = [Diagnostics.Stopwatch]::StartNew()
            $ps.Stop()
            $clock.Elapsed.TotalSeconds | Should -BeLessThan 1
            $ps.InvocationStateInfo.State | Should -Be Stopped
        }
        finally { $ps.Dispose() }
        Get-Entry $out | Should -BeNullOrEmpty
        @(Get-ChildItem $scratch -Recurse -File -ErrorAction Ignore).Count | Should -Be $before -Because 'the stopped stage deleted its scratch files'
    }
}
