// Turns PlatyPS-schema markdown (docs/en-US/<Cmdlet>.md, about_*.md) into the files Get-Help reads:
// <Module>.dll-Help.xml (MAML) and about_*.help.txt. PlatyPS is not needed at build time.
using System.Text;
using System.Text.RegularExpressions;
using System.Xml;

if (args.Length != 2)
{
    Console.Error.WriteLine("usage: HelpCompiler <docs/en-US folder> <output en-US folder>");
    return 2;
}
string source = args[0], target = args[1];
Directory.CreateDirectory(target);
var commands = new List<CommandHelp>();
foreach (var file in Directory.EnumerateFiles(source, "*.md").Order(StringComparer.Ordinal))
{
    string name = Path.GetFileNameWithoutExtension(file);
    if (name.StartsWith("about_", StringComparison.OrdinalIgnoreCase))
        File.WriteAllText(Path.Combine(target, name + ".help.txt"), Markdown.ToAboutText(File.ReadAllText(file)));
    else
        commands.Add(CommandHelp.Parse(File.ReadAllText(file), file));
}
Maml.Write(commands, Path.Combine(target, "ModelCompression.dll-Help.xml"));
Console.WriteLine($"HelpCompiler: {commands.Count} cmdlet pages -> {target}");
return 0;

sealed record ParameterHelp(string Name, string Description, string Type, string[] Sets, string Aliases, bool Required,
    string Position, string DefaultValue, string PipelineInput, bool Wildcards);

sealed record ExampleHelp(string Title, string Code, string Remarks);

sealed record TypeHelp(string Name, string Description);

sealed class CommandHelp
{
    public string Name = "", Synopsis = "", Description = "", Notes = "";
    public List<string> SetNames = [];
    /// <summary>Per parameter set, the parameter names in the order of the page's SYNTAX block (Get-Command -Syntax's order).</summary>
    public Dictionary<string, List<string>> SyntaxOrder = [];
    public List<ParameterHelp> Parameters = [];
    public List<ExampleHelp> Examples = [];
    public List<TypeHelp> Inputs = [], Outputs = [];
    public List<(string Text, string Uri)> Links = [];

    public static CommandHelp Parse(string text, string file)
    {
        var help = new CommandHelp();
        var sections = Markdown.Sections(Markdown.StripFrontMatter(text), "## ");
        help.Name = Regex.Match(text, @"^# (\S+)", RegexOptions.Multiline).Groups[1].Value;
        if (help.Name.Length == 0) throw new InvalidDataException($"{file}: no '# Cmdlet-Name' title");
        foreach (var (heading, body) in sections)
        {
            switch (heading.ToUpperInvariant())
            {
                case "SYNOPSIS": help.Synopsis = body.Trim(); break;
                case "DESCRIPTION": help.Description = body.Trim(); break;
                case "NOTES": help.Notes = body.Trim(); break;
                case "SYNTAX":
                    var setSections = Markdown.Sections(body, "### ");
                    if (setSections.Count == 0) setSections = [("__AllParameterSets", body)];
                    foreach (var (setHeading, setBody) in setSections)
                    {
                        string set = setHeading.Replace("(Default)", "").Trim();
                        if (set != "__AllParameterSets") help.SetNames.Add(set);
                        help.SyntaxOrder[set] = Regex.Matches(Markdown.TakeCodeBlocks(setBody).Code, @"(?<![\w<])-(\w+)").Select(m => m.Groups[1].Value).ToList();
                    }
                    break;
                case "EXAMPLES":
                    foreach (var (title, ex) in Markdown.Sections(body, "### "))
                    {
                        var (code, rest) = Markdown.TakeCodeBlocks(ex);
                        help.Examples.Add(new ExampleHelp(title, code, rest.Trim()));
                    }
                    break;
                case "PARAMETERS":
                    foreach (var (title, p) in Markdown.Sections(body, "### "))
                        if (title.StartsWith('-')) help.Parameters.Add(ParseParameter(title[1..].Trim(), p, file));
                    break;
                case "INPUTS": help.Inputs = Markdown.Sections(body, "### ").Select(s => new TypeHelp(s.Heading, s.Body.Trim())).ToList(); break;
                case "OUTPUTS": help.Outputs = Markdown.Sections(body, "### ").Select(s => new TypeHelp(s.Heading, s.Body.Trim())).ToList(); break;
                case "RELATED LINKS":
                    foreach (Match m in Regex.Matches(body, @"\[([^\]]+)\]\(([^)]*)\)")) help.Links.Add((m.Groups[1].Value, m.Groups[2].Value));
                    break;
            }
        }
        if (help.Synopsis.Length == 0) throw new InvalidDataException($"{file}: empty SYNOPSIS");
        return help;
    }

    static ParameterHelp ParseParameter(string name, string body, string file)
    {
        var (yaml, description) = Markdown.TakeCodeBlocks(body);
        var fields = yaml.Split('\n').Select(l => l.Split(':', 2)).Where(p => p.Length == 2)
            .ToDictionary(p => p[0].Trim(), p => p[1].Trim(), StringComparer.OrdinalIgnoreCase);
        string Get(string key) => fields.TryGetValue(key, out var v) ? v : throw new InvalidDataException($"{file}: parameter -{name} has no '{key}' in its yaml block");
        return new ParameterHelp(name, description.Trim(), Get("Type"),
            Get("Parameter Sets").Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries),
            Get("Aliases"), Get("Required").StartsWith("True", StringComparison.OrdinalIgnoreCase), Get("Position"),
            Get("Default value"), Get("Accept pipeline input"), Get("Accept wildcard characters").StartsWith("True", StringComparison.OrdinalIgnoreCase));
    }
}

static class Markdown
{
    public static string StripFrontMatter(string text)
    {
        text = text.Replace("\r\n", "\n");
        if (!text.StartsWith("---\n", StringComparison.Ordinal)) return text;
        int end = text.IndexOf("\n---\n", 4, StringComparison.Ordinal);
        return end < 0 ? text : text[(end + 5)..];
    }

    /// <summary>Splits text at lines starting with <paramref name="prefix"/> (outside code blocks).</summary>
    public static List<(string Heading, string Body)> Sections(string text, string prefix)
    {
        var result = new List<(string, string)>();
        string? heading = null;
        var body = new StringBuilder();
        bool inCode = false;
        foreach (var line in text.Replace("\r\n", "\n").Split('\n'))
        {
            if (line.StartsWith("```", StringComparison.Ordinal)) inCode = !inCode;
            if (!inCode && line.StartsWith(prefix, StringComparison.Ordinal))
            {
                if (heading is not null) result.Add((heading, body.ToString()));
                heading = line[prefix.Length..].Trim();
                body.Clear();
            }
            else if (heading is not null) body.Append(line).Append('\n');
        }
        if (heading is not null) result.Add((heading, body.ToString()));
        return result;
    }

    /// <summary>The contents of the fenced code blocks (joined), and the text outside them.</summary>
    public static (string Code, string Prose) TakeCodeBlocks(string text)
    {
        var code = new StringBuilder();
        var rest = new StringBuilder();
        bool inCode = false;
        foreach (var line in text.Split('\n'))
        {
            if (line.StartsWith("```", StringComparison.Ordinal)) { inCode = !inCode; continue; }
            (inCode ? code : rest).Append(line).Append('\n');
        }
        return (code.ToString().TrimEnd(), rest.ToString());
    }

    static readonly Regex ListItem = new(@"^\s*(?:[-*+]|\d+\.)\s+");

    /// <summary>
    /// Paragraphs as help should wrap them: the markdown's line breaks are the editor's, not the text's, so the lines of a
    /// paragraph are joined into one, and a list gives one paragraph per item ("- text" or "1. text", its continuation
    /// lines joined). Tables and fenced code keep their lines.
    /// </summary>
    public static IEnumerable<string> Paragraphs(string text) => Blocks(text).Select(b => b.Text);

    /// <summary>The paragraphs of <see cref="Paragraphs"/>, each marked verbatim (code, a table) or not.</summary>
    public static IEnumerable<(string Text, bool Verbatim)> Blocks(string text)
    {
        var current = new List<string>();
        bool code = false;
        foreach (var raw in text.Replace("\r\n", "\n").Trim().Split('\n'))
        {
            string line = raw.TrimEnd();
            bool fence = line.TrimStart().StartsWith("```", StringComparison.Ordinal);
            if (code || fence)
            {
                if (fence && !code && current.Count > 0) { yield return Join(current); current.Clear(); }
                current.Add(line);
                code = fence ? !code : code;
                if (!code) { yield return (string.Join("\n", current.Where(l => !l.TrimStart().StartsWith("```", StringComparison.Ordinal))), true); current.Clear(); }
                continue;
            }
            if (line.Trim().Length == 0 || ListItem.IsMatch(line))
            {
                if (current.Count > 0) yield return Join(current);
                current.Clear();
                if (line.Trim().Length == 0) continue;
            }
            current.Add(line);
        }
        if (current.Count > 0) yield return Join(current);
    }

    /// <summary>One paragraph's lines as one line; a table keeps its rows.</summary>
    static (string, bool) Join(List<string> lines) => lines[0].TrimStart().StartsWith('|')
        ? (string.Join("\n", lines.Select(l => l.Trim())), true)
        : (string.Join(" ", lines.Select(l => l.Trim())), false);

    /// <summary>
    /// An about_ topic as text: headings in capitals (## level) or indented (### level), paragraphs and list items filled
    /// to 80 columns (what about_ topics are written for), code and tables as they are, indented.
    /// </summary>
    public static string ToAboutText(string markdown)
    {
        var sb = new StringBuilder();
        foreach (var (heading, body) in Sections(StripFrontMatter(markdown), "#"))
        {
            var h = Regex.Match("#" + heading, @"^(#+)\s*(.*)$");
            sb.AppendLine(h.Groups[1].Value.Length <= 2 ? h.Groups[2].Value.ToUpperInvariant() : "  " + h.Groups[2].Value);
            if (h.Groups[1].Value.Length == 1) sb.AppendLine();
            foreach (var (para, verbatim) in Blocks(body))
            {
                if (verbatim) foreach (var line in para.Split('\n')) sb.Append("    ").AppendLine(line);
                else Fill(sb, para.Replace("`", ""), "    ", ListItem.IsMatch(para) ? "      " : "    ", 80);
                sb.AppendLine();
            }
        }
        return sb.ToString();
    }

    /// <summary>Words of <paramref name="text"/> in lines of at most <paramref name="width"/> characters.</summary>
    static void Fill(StringBuilder sb, string text, string first, string rest, int width)
    {
        var line = new StringBuilder(first);
        int start = first.Length;
        foreach (var word in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (line.Length > start && line.Length + 1 + word.Length > width)
            {
                sb.AppendLine(line.ToString());
                line.Clear().Append(rest);
                start = rest.Length;
            }
            if (line.Length > start) line.Append(' ');
            line.Append(word);
        }
        sb.AppendLine(line.ToString());
    }
}

static class Maml
{
    const string MamlNs = "http://schemas.microsoft.com/maml/2004/10";
    const string CommandNs = "http://schemas.microsoft.com/maml/dev/command/2004/10";
    const string DevNs = "http://schemas.microsoft.com/maml/dev/2004/10";

    public static void Write(IEnumerable<CommandHelp> commands, string path)
    {
        var settings = new XmlWriterSettings { Indent = true, Encoding = new UTF8Encoding(false) };
        using var w = XmlWriter.Create(path, settings);
        w.WriteStartDocument();
        w.WriteStartElement("helpItems", "http://msh");
        w.WriteAttributeString("schema", "maml");
        foreach (var c in commands) WriteCommand(w, c);
        w.WriteEndElement();
        w.WriteEndDocument();
    }

    static void WriteCommand(XmlWriter w, CommandHelp c)
    {
        w.WriteStartElement("command", "command", CommandNs);
        w.WriteAttributeString("xmlns", "maml", null, MamlNs);
        w.WriteAttributeString("xmlns", "dev", null, DevNs);
        w.WriteStartElement("command", "details", CommandNs);
        w.WriteElementString("command", "name", CommandNs, c.Name);
        var parts = c.Name.Split('-', 2);
        w.WriteElementString("command", "verb", CommandNs, parts[0]);
        w.WriteElementString("command", "noun", CommandNs, parts.Length > 1 ? parts[1] : "");
        Description(w, c.Synopsis);
        w.WriteEndElement();
        Description(w, c.Description);

        w.WriteStartElement("command", "syntax", CommandNs);
        var sets = c.SetNames.Count > 0 ? c.SetNames : ["__AllParameterSets"];
        foreach (var set in sets)
        {
            w.WriteStartElement("command", "syntaxItem", CommandNs);
            w.WriteElementString("maml", "name", MamlNs, c.Name);
            // In the order of the page's SYNTAX block, as Get-Command -Syntax shows it; parameters it lacks follow.
            var order = c.SyntaxOrder.GetValueOrDefault(set) ?? [];
            foreach (var p in c.Parameters.Where(p => p.Sets.Contains("(All)") || p.Sets.Contains(set) || set == "__AllParameterSets")
                         .OrderBy(p => order.IndexOf(p.Name) is int i and >= 0 ? i : int.MaxValue))
                Parameter(w, p, inSyntax: true);
            w.WriteEndElement();
        }
        w.WriteEndElement();

        w.WriteStartElement("command", "parameters", CommandNs);
        foreach (var p in c.Parameters) Parameter(w, p, inSyntax: false);
        w.WriteEndElement();

        Types(w, "inputTypes", "inputType", c.Inputs);
        Types(w, "returnValues", "returnValue", c.Outputs);

        w.WriteStartElement("maml", "alertSet", MamlNs);
        w.WriteStartElement("maml", "alert", MamlNs);
        foreach (var para in Markdown.Paragraphs(c.Notes)) w.WriteElementString("maml", "para", MamlNs, para);
        w.WriteEndElement();
        w.WriteEndElement();

        w.WriteStartElement("command", "examples", CommandNs);
        foreach (var e in c.Examples)
        {
            w.WriteStartElement("command", "example", CommandNs);
            w.WriteElementString("maml", "title", MamlNs, $"-------------------------- {e.Title} --------------------------");
            w.WriteElementString("dev", "code", DevNs, e.Code);
            w.WriteStartElement("dev", "remarks", DevNs);
            foreach (var para in Markdown.Paragraphs(e.Remarks)) w.WriteElementString("maml", "para", MamlNs, para);
            w.WriteEndElement();
            w.WriteEndElement();
        }
        w.WriteEndElement();

        w.WriteStartElement("command", "relatedLinks", CommandNs);
        foreach (var (text, uri) in c.Links)
        {
            w.WriteStartElement("maml", "navigationLink", MamlNs);
            w.WriteElementString("maml", "linkText", MamlNs, text);
            w.WriteElementString("maml", "uri", MamlNs, uri.EndsWith(".md", StringComparison.Ordinal) ? "" : uri);
            w.WriteEndElement();
        }
        w.WriteEndElement();
        w.WriteEndElement();
    }

    static void Parameter(XmlWriter w, ParameterHelp p, bool inSyntax)
    {
        w.WriteStartElement("command", "parameter", CommandNs);
        w.WriteAttributeString("required", p.Required ? "true" : "false");
        w.WriteAttributeString("variableLength", p.Type.EndsWith("[]", StringComparison.Ordinal) ? "true" : "false");
        w.WriteAttributeString("globbing", p.Wildcards ? "true" : "false");
        w.WriteAttributeString("pipelineInput", p.PipelineInput);
        w.WriteAttributeString("position", p.Position.Equals("Named", StringComparison.OrdinalIgnoreCase) ? "named" : p.Position);
        w.WriteAttributeString("aliases", p.Aliases.Length == 0 ? "none" : p.Aliases);
        w.WriteElementString("maml", "name", MamlNs, p.Name);
        Description(w, p.Description);
        bool isSwitch = p.Type == "SwitchParameter";
        // A switch takes no value: without parameterValue, Get-Help writes [-Force], not [-Force <SwitchParameter>].
        if (!(isSwitch && inSyntax))
        {
            w.WriteStartElement("command", "parameterValue", CommandNs);
            w.WriteAttributeString("required", isSwitch ? "false" : "true");
            w.WriteAttributeString("variableLength", "false");
            w.WriteString(p.Type);
            w.WriteEndElement();
        }
        w.WriteStartElement("dev", "type", DevNs);
        w.WriteElementString("maml", "name", MamlNs, p.Type);
        w.WriteEndElement();
        w.WriteElementString("dev", "defaultValue", DevNs, p.DefaultValue);
        w.WriteEndElement();
    }

    static void Types(XmlWriter w, string outer, string inner, List<TypeHelp> types)
    {
        w.WriteStartElement("command", outer, CommandNs);
        foreach (var t in types)
        {
            w.WriteStartElement("command", inner, CommandNs);
            w.WriteStartElement("dev", "type", DevNs);
            w.WriteElementString("maml", "name", MamlNs, t.Name);
            w.WriteEndElement();
            Description(w, t.Description);
            w.WriteEndElement();
        }
        w.WriteEndElement();
    }

    static void Description(XmlWriter w, string text)
    {
        w.WriteStartElement("maml", "description", MamlNs);
        foreach (var para in Markdown.Paragraphs(text)) w.WriteElementString("maml", "para", MamlNs, para);
        w.WriteEndElement();
    }
}
