<#
.SYNOPSIS
    Turns a compression pipeline written as text, one stage a line ("Invoke-ModelPruning -Structured -Rate 0.5"), into
    the commands and parameters to run, and refuses what is not a stage: a command other than the module's stages
    (StageUnknown), a parameter the stage does not have (StageParameterUnknown), an argument that is not a constant
    (StageArgumentNotConstant: the text is data, never run as code), a positional argument or a second command on the
    line (StageSyntaxInvalid). Each problem is its own error record, so a caller can list them all.
.OUTPUTS
    One object per stage: Command (the cmdlet name), Parameters (a hashtable to splat), Text (the line).
#>
[CmdletBinding()]
param([Parameter(Mandatory)] [AllowEmptyCollection()] [string[]] $Stages)
$ErrorActionPreference = 'Stop'
if (-not (Get-Module ModelCompression)) { throw 'Import the ModelCompression module first.' }
# The stages: the module's cmdlets that take a Model from the pipeline and return a new one.
$known = @(Get-Command -Module ModelCompression -CommandType Cmdlet | Where-Object {
        $_.Parameters['InputObject'] -and ($_.OutputType.Name -contains 'ModelCompression.Model') })
$common = [System.Management.Automation.PSCmdlet]::CommonParameters + [System.Management.Automation.PSCmdlet]::OptionalCommonParameters

# Numbers, strings, $true/$false and lists of them: values only, nothing that runs.
function Test-Constant($Ast) {
    switch ($Ast) {
        { $_ -is [System.Management.Automation.Language.ConstantExpressionAst] -and $_ -isnot [System.Management.Automation.Language.ExpandableStringExpressionAst] } { return $true }
        { $_ -is [System.Management.Automation.Language.VariableExpressionAst] } { return $_.VariablePath.UserPath -in 'true', 'false' }
        { $_ -is [System.Management.Automation.Language.ArrayLiteralAst] } { return -not ($_.Elements | Where-Object { -not (Test-Constant $_) }) }
    }
    return $false
}

function Write-StageError([string] $Id, [string] $Message, [string] $Line) {
    $record = [System.Management.Automation.ErrorRecord]::new([System.ArgumentException]::new($Message), $Id, 'InvalidArgument', $Line)
    $PSCmdlet.WriteError($record)
}

foreach ($line in $Stages | ForEach-Object { $_ -split "`r?`n" } | ForEach-Object Trim | Where-Object { $_ -and -not $_.StartsWith('#') }) {
    $tokens = $null; $parseErrors = $null
    $ast = [System.Management.Automation.Language.Parser]::ParseInput($line, [ref]$tokens, [ref]$parseErrors)
    $commands = @($ast.FindAll({ param($a) $a -is [System.Management.Automation.Language.CommandAst] }, $true))
    if ($parseErrors.Count -gt 0) {
        Write-StageError StageSyntaxInvalid "Stage '$line' does not parse: $($parseErrors.Message -join '; ')" $line
        continue
    }
    if ($ast.EndBlock.Statements.Count -ne 1 -or $commands.Count -ne 1) {
        Write-StageError StageSyntaxInvalid "Stage '$line' is more than one command; give one stage a line, with constant arguments." $line
        continue
    }
    $elements = $commands[0].CommandElements
    $name = $commands[0].GetCommandName()
    $command = $known | Where-Object Name -EQ $name
    if (-not $command) {
        Write-StageError StageUnknown "Stage '$name' is not a compression stage; the stages are $(($known.Name | Sort-Object) -join ', ')." $line
        continue
    }
    $parameters = @{}
    $ok = $true
    for ($i = 1; $i -lt $elements.Count; $i++) {
        $element = $elements[$i]
        if ($element -isnot [System.Management.Automation.Language.CommandParameterAst]) {
            Write-StageError StageSyntaxInvalid "Stage '$line': give every argument with its parameter name ('$($element.Extent.Text)' has none)." $line
            $ok = $false; break
        }
        $parameter = $command.Parameters.Values | Where-Object { $_.Name -eq $element.ParameterName -or $_.Aliases -contains $element.ParameterName }
        # The argument: -Name:value, or the next element unless the parameter is a switch or the next is a parameter.
        $argument = $element.Argument
        if (-not $argument -and (-not $parameter -or $parameter.ParameterType -ne [switch]) -and $i + 1 -lt $elements.Count -and
            $elements[$i + 1] -isnot [System.Management.Automation.Language.CommandParameterAst]) { $argument = $elements[++$i] }
        if (-not $parameter -or $parameter.Name -in $common -or $parameter.Name -eq 'InputObject') {
            Write-StageError StageParameterUnknown "Stage '$name' has no parameter -$($element.ParameterName)." $line
            $ok = $false; continue
        }
        if (-not $argument) { $parameters[$parameter.Name] = $true }
        elseif (Test-Constant $argument) { $parameters[$parameter.Name] = $argument.SafeGetValue() }
        else {
            Write-StageError StageArgumentNotConstant "Stage '$name': the value of -$($parameter.Name) must be a constant, not '$($argument.Extent.Text)'." $line
            $ok = $false
        }
    }
    if ($ok) { [pscustomobject]@{ Command = $command.Name; Parameters = $parameters; Text = $line } }
}
