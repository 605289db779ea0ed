# The PowerShell engine hosted from NuGet (System.Management.Automation) has no Microsoft.PowerShell.Utility or
# .Management modules. These minimal stand-ins let the examples and docs run there (mc-host, module tests).
# Each is defined only when the real command is missing, so in pwsh nothing here is used.
$shims = @{
    'Format-List'     = { process { $_ } }
    'Format-Table'    = { process { $_ } }
    'Out-String'      = { process { "$_" } }
    'Join-Path'       = { param([string]$Path, [string]$ChildPath) [System.IO.Path]::Combine($Path, $ChildPath) }
    'Remove-Item'     = { param([string[]]$Path, [switch]$Recurse, [switch]$Force)
        foreach ($p in $Path) {
            $full = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($p)
            if ([System.IO.Directory]::Exists($full)) { [System.IO.Directory]::Delete($full, [bool]$Recurse) } else { [System.IO.File]::Delete($full) }
        } }
    'New-Item'        = { param([string]$Path, [string]$ItemType, [switch]$Force)
        $full = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($Path)
        if ($ItemType -ne 'Directory') { throw 'This stand-in for New-Item only creates directories.' }
        [System.IO.Directory]::CreateDirectory($full) }
    'Get-ChildItem'   = { param([string[]]$Path)
        foreach ($p in $Path) {
            foreach ($f in $ExecutionContext.SessionState.Path.GetResolvedProviderPathFromPSPath($p, [ref]$null)) {
                $item = [psobject]::AsPSObject([System.IO.FileInfo]::new($f))
                $item.PSObject.Properties.Add([psnoteproperty]::new('PSPath', "Microsoft.PowerShell.Core\FileSystem::$f"))
                $item
            }
        } }
    'ConvertTo-Json'  = { param([int]$Depth = 2)
        $all = @($input)
        $value = if ($all.Count -eq 1) { $all[0].PSObject.BaseObject } else { $all | ForEach-Object { $_.PSObject.BaseObject } }
        [System.Text.Json.JsonSerializer]::Serialize($value, [System.Text.Json.JsonSerializerOptions]@{ WriteIndented = $true }) }
}
foreach ($name in $shims.Keys) {
    if (-not (Get-Command $name -ErrorAction Ignore)) { . ([scriptblock]::Create("function global:$name { $($shims[$name]) }")) }
}
