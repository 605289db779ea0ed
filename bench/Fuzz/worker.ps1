<#
.SYNOPSIS
    The fuzzer's worker: real pwsh with the module imported, running one case per line of standard input (JSON: id,
    script, variables, timeout) and answering one JSON line per case: the error records (id, category, exception
    type), the time, whether it had to be stopped, and the peak memory the case added to the process.
#>
param([Parameter(Mandatory)] [string] $ModulePath)
$ErrorActionPreference = 'Stop'
$PSStyle.OutputRendering = 'PlainText'
function New-CaseRunspace {
    $r = [runspacefactory]::CreateRunspace([initialsessionstate]::CreateDefault2())
    $r.Open()
    $setup = [powershell]::Create($r)
    $null = $setup.AddScript("Import-Module '$ModulePath'; `$ProgressPreference = 'SilentlyContinue'; `$WarningPreference = 'SilentlyContinue'").Invoke()
    $setup.Dispose()
    $r
}
$runspace = New-CaseRunspace
$linux = Test-Path /proc/self/clear_refs

function Get-Status([string] $Key) {
    foreach ($line in [IO.File]::ReadLines('/proc/self/status')) { if ($line.StartsWith($Key)) { return [long]($line -split '\s+')[1] * 1KB } }
    0
}

function ConvertTo-ErrorInfo($record) {
    $e = $record.Exception
    [ordered]@{
        id = ($record.FullyQualifiedErrorId -split ',')[0]
        category = "$($record.CategoryInfo.Category)"
        type = $e.GetType().FullName
        inner = if ($e.InnerException) { $e.InnerException.GetType().FullName } else { $null }
        message = "$($e.Message)".Substring(0, [Math]::Min(300, "$($e.Message)".Length))
        where = "$($record.ScriptStackTrace)".Split("`n")[0]
        stack = if ($e.InnerException) { "$($e.InnerException.StackTrace)".Split("`n") | Select-Object -First 3 } else { "$($e.StackTrace)".Split("`n") | Select-Object -First 3 }
    }
}

"ready"
while ($null -ne ($line = [Console]::In.ReadLine())) {
    $case = $line | ConvertFrom-Json
    # A case stopped at its limit may leave its runspace busy a moment longer: the next case gets a fresh one.
    if ($runspace.RunspaceAvailability -ne 'Available') { $runspace = New-CaseRunspace }
    [GC]::Collect(); [GC]::WaitForPendingFinalizers(); [GC]::Collect()
    $before = if ($linux) { [IO.File]::WriteAllText('/proc/self/clear_refs', '5'); Get-Status 'VmRSS:' } else { [Environment]::WorkingSet }
    $peak = $before
    $ps = [powershell]::Create($runspace)
    foreach ($p in $case.variables.PSObject.Properties) { $runspace.SessionStateProxy.SetVariable($p.Name, $p.Value) }
    $null = $ps.AddScript($case.script)
    $errors = [System.Collections.Generic.List[object]]::new()
    $clock = [Diagnostics.Stopwatch]::StartNew()
    $timedOut = $false; $stopped = $true
    try {
        $async = $ps.BeginInvoke()
        while (-not $async.AsyncWaitHandle.WaitOne(20)) {
            if (-not $linux) { $peak = [Math]::Max($peak, [Environment]::WorkingSet) }
            if ($clock.Elapsed.TotalSeconds -gt $case.timeout) {
                $timedOut = $true
                $stop = $ps.BeginStop($null, $null)
                $stopped = $stop.AsyncWaitHandle.WaitOne([TimeSpan]::FromSeconds(10))
                break
            }
        }
        if (-not $timedOut) { $null = $ps.EndInvoke($async) }
    }
    catch {
        $record = if ($_.Exception.InnerException -is [System.Management.Automation.RuntimeException] -and $_.Exception.InnerException.ErrorRecord) {
            $_.Exception.InnerException.ErrorRecord } elseif ($_.Exception -is [System.Management.Automation.RuntimeException]) { $_.Exception.ErrorRecord } else { $_ }
        if (-not ($timedOut -and $record.Exception -is [System.Management.Automation.PipelineStoppedException])) { $errors.Add((ConvertTo-ErrorInfo $record)) }
    }
    $seconds = $clock.Elapsed.TotalSeconds
    foreach ($record in $ps.Streams.Error) { $errors.Add((ConvertTo-ErrorInfo $record)) }
    if ($linux) { $peak = Get-Status 'VmHWM:' }
    [ordered]@{
        id = $case.id; seconds = $seconds; timedOut = $timedOut; stopped = $stopped
        addedBytes = [Math]::Max([long]0, $peak - $before); errors = $errors
    } | ConvertTo-Json -Compress -Depth 5
    if ($timedOut -and -not $stopped) { exit 3 }   # the runspace is stuck: the driver starts a new worker
    $ps.Dispose()
}
