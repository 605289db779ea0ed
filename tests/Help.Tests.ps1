# Help as a user meets it: Get-Help -Full from the built MAML, the docs in step with the code, and every example runs.
BeforeDiscovery {
    . $PSScriptRoot/Common.ps1
    $cmdlets = @((Get-Module ModelCompression).ExportedCmdlets.Keys | Sort-Object | ForEach-Object { @{ cmdlet = $_ } })
    $examples = foreach ($file in Get-ChildItem (Join-Path $RepoRoot 'docs/en-US') -Filter '*-*.md' | Sort-Object Name) {
        $text = (Get-Content -Raw $file.FullName) -replace "`r`n", "`n"
        $start = $text.IndexOf("`n## EXAMPLES"); $end = $text.IndexOf("`n## PARAMETERS")
        if ($start -lt 0 -or $end -lt $start) { continue }
        $n = 0
        foreach ($m in [regex]::Matches($text.Substring($start, $end - $start), '(?s)```powershell\n(.*?)```')) {
            @{ page = $file.BaseName; number = ++$n; code = $m.Groups[1].Value }
        }
    }
}

BeforeAll {
    . $PSScriptRoot/Common.ps1
    # -WhatIf and -Confirm are documented on the page (PlatyPS does too); the other common parameters are not.
    $CommonParameters = [System.Management.Automation.PSCmdlet]::CommonParameters
}

Describe 'Get-Help <cmdlet> -Full' -ForEach $cmdlets {
    It 'shows a synopsis, a description of every parameter in code and nothing stale, and examples' {
        $help = Get-Help $cmdlet -Full
        $help.Synopsis.Trim() | Should -Not -BeNullOrEmpty
        $help.Synopsis.Trim() | Should -Not -BeLike "$cmdlet *" -Because 'a synopsis that starts with the name is the generated stand-in'
        $documented = @($help.parameters.parameter.name)
        $inCode = @((Get-Command $cmdlet).Parameters.Keys | Where-Object { $_ -notin $CommonParameters })
        @($inCode | Where-Object { $_ -notin $documented }) | Should -BeNullOrEmpty -Because 'every parameter in code is documented'
        @($documented | Where-Object { $_ -notin $inCode }) | Should -BeNullOrEmpty -Because 'no documented parameter is stale'
        foreach ($p in $inCode) {
            ((Get-Help $cmdlet -Parameter $p).description.Text -join ' ') | Should -Not -BeNullOrEmpty -Because "-$p needs a description"
        }
        @((Get-Help $cmdlet -Examples).examples.example).Count | Should -BeGreaterThan 0
    }
}

Describe 'Get-Help <cmdlet> syntax' -ForEach $cmdlets {
    It 'matches Get-Command -Syntax: same parameters in the same order per set, switches without a value' {
        $help = Get-Help $cmdlet -Full
        ($help.syntax | Out-String) | Should -Not -BeLike '*<SwitchParameter>*'
        $inCode = @(foreach ($set in (Get-Command $cmdlet).ParameterSets) {
            , @([regex]::Matches($set.ToString(), '(?<![\w<])-(\w+)').ForEach({ $_.Groups[1].Value }) | Where-Object { $_ -notin $CommonParameters -or $_ -in 'WhatIf', 'Confirm' })
        })
        $inHelp = @(foreach ($item in $help.syntax.syntaxItem) { , @($item.parameter.name) })
        $inHelp.Count | Should -Be $inCode.Count
        foreach ($names in $inHelp) {
            $match = $inCode | Where-Object { ($_ | Sort-Object) -join ',' -eq (($names | Sort-Object) -join ',') }
            $match | Should -Not -BeNullOrEmpty -Because "help has a syntax with $($names -join ', ')"
            $names -join ' ' | Should -Be ($match -join ' ')
        }
    }
}

Describe 'The manifest' {
    It 'has release notes that name every cmdlet' {
        $notes = (Test-ModuleManifest $ModulePath).ReleaseNotes
        foreach ($cmdlet in (Get-Module ModelCompression).ExportedCmdlets.Keys) { $notes | Should -BeLike "*$cmdlet*" }
    }
}

Describe 'Get-Help about_ModelCompression' {
    It 'is installed' {
        $text = Get-Help about_ModelCompression | Out-String
        $text | Should -BeLike '*ModelCompression*'
        $text | Should -BeLike '*Get-Model*'
    }
}

# Every example in the docs runs without an error in a scratch folder holding the repository's models and data,
# with ../shared meaning the development models beside the repository (those examples skip when it is absent).
Describe '<page> example <number>' -ForEach $examples {
    BeforeAll {
        foreach ($folder in 'models', 'data') { Copy-Item -Recurse (Join-Path $RepoRoot $folder) (Join-Path $TestDrive $folder) }
    }
    It 'runs without an error' {
        if ($code -like '*../shared*') { Skip-WithoutShared }
        $script = [scriptblock]::Create($code.Replace('../shared', $SharedRoot))
        Push-Location $TestDrive
        # Formatted as pwsh would show it at 80 columns, so the views run too; warnings and verbose lines join the output.
        try { $null = & $script 3>&1 4>&1 6>&1 | Out-String -Width 80 }
        finally { Pop-Location }
    }
}
