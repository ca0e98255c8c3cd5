namespace Optimum.Cli;

/// <summary>Paths of the command line: the bundled defaults found from anywhere, output folders checked before any work.</summary>
public static class CliPaths
{
    /// <summary>
    /// A default that ships with the repository (models/gpt2-mini, samples/data/...): as given when it exists from the
    /// current folder, else the copy in the repository this build came from (searched upward from the executable), else
    /// as given (the command then names it as missing).
    /// </summary>
    public static string Bundled(string relative)
    {
        if (Path.Exists(relative)) return relative;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, relative);
            if (Path.Exists(candidate)) return candidate;
        }
        return relative;
    }

    /// <summary>A parse error with .NET type names said in words: "as expected type 'System.Int32'" becomes "as an integer".</summary>
    public static string Friendly(string message)
    {
        // An enum option's refusal names the .NET type and lists the values one per line: one line naming the values instead.
        var choice = System.Text.RegularExpressions.Regex.Match(message,
            @"^Cannot parse argument '(?<arg>.*)' for option '(?<opt>[^']*)' as expected type '[^']*'\. Did you mean one of the following\?\s*(?<values>.*)$",
            System.Text.RegularExpressions.RegexOptions.Singleline);
        if (choice.Success)
            return $"{choice.Groups["opt"].Value} '{choice.Groups["arg"].Value}' is not one of "
                + string.Join(", ", choice.Groups["values"].Value.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
        return Types(message);
    }

    private static string Types(string message) => System.Text.RegularExpressions.Regex.Replace(message, @"as expected type '([^']*)'", m =>
    {
        var t = m.Groups[1].Value;
        return "as " + (t.Contains("Int32") || t.Contains("Int64") ? "an integer"
            : t.Contains("Double") || t.Contains("Single") ? "a number"
            : t.Contains("Boolean") ? "true or false"
            : t.Contains("String") ? "text" : $"a {t}");
    });

    /// <summary>Refuses an output folder that is a file (it failed late with "already exists"); returns it.</summary>
    public static string OutputFolder(string path, string flag)
    {
        if (File.Exists(path)) throw new ArgumentException($"{flag} '{path}' is a file; give a folder (it is created when missing).");
        return path;
    }
}
