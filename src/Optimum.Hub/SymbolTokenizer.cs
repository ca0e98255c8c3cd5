using System.Text.Json;
using System.Text.Json.Nodes;
using Optimum.Core;

namespace Optimum.Hub;

/// <summary>
/// A vocabulary built from data: ids 0, 1, 2 are pad, eos (&lt;/s&gt;) and unk, then the symbols. Text is
/// split into characters or into whitespace-separated words; encoding appends eos as T5 does.
/// Saved as vocab.json in a model folder.
/// </summary>
public sealed class SymbolTokenizer : IPairTokenizer
{
    public const string FileName = "vocab.json";
    public const int Pad = 0, Eos = 1, Unk = 2;
    private static readonly string[] Specials = ["<pad>", "</s>", "<unk>"];
    private readonly Dictionary<string, int> _ids;

    public SymbolTokenizer(IReadOnlyList<string> symbols, string sourceSplit, string targetSplit)
    {
        if (sourceSplit is not ("chars" or "words") || targetSplit is not ("chars" or "words"))
            throw new ArgumentException($"Splits must be 'chars' or 'words', got '{sourceSplit}' and '{targetSplit}'.");
        Tokens = [.. Specials, .. symbols.Where(s => !Specials.Contains(s)).Distinct()];
        _ids = Tokens.Select((t, i) => (t, i)).ToDictionary(x => x.t, x => x.i, StringComparer.Ordinal);
        SourceSplit = sourceSplit;
        TargetSplit = targetSplit;
    }

    public IReadOnlyList<string> Tokens { get; }
    public string SourceSplit { get; }
    public string TargetSplit { get; }
    public int VocabSize => Tokens.Count;

    /// <summary>Builds the vocabulary of <paramref name="pairs"/> (symbols in order of first appearance, sorted for stability).</summary>
    public static SymbolTokenizer Build(IEnumerable<(string Source, string Target)> pairs, string sourceSplit = "chars", string targetSplit = "words")
    {
        var symbols = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var (s, t) in pairs)
        {
            symbols.UnionWith(Split(s, sourceSplit));
            symbols.UnionWith(Split(t, targetSplit));
        }
        return new SymbolTokenizer([.. symbols], sourceSplit, targetSplit);
    }

    private static IEnumerable<string> Split(string text, string how) => how == "chars"
        ? System.Globalization.StringInfo.GetTextElementEnumerator(text) is var e ? Elements(e) : []
        : text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);

    private static IEnumerable<string> Elements(System.Globalization.TextElementEnumerator e)
    {
        while (e.MoveNext()) yield return (string)e.Current;
    }

    public int[] EncodeSource(string text) => Encode(text, SourceSplit);
    public int[] EncodeTarget(string text) => Encode(text, TargetSplit);

    private int[] Encode(string text, string how) => [.. Split(text, how).Select(s => _ids.GetValueOrDefault(s, Unk)), Eos];

    /// <summary>Target text of ids (specials dropped; words joined by spaces).</summary>
    public string DecodeTarget(IEnumerable<int> ids) => Join(ids, TargetSplit);
    public string DecodeSource(IEnumerable<int> ids) => Join(ids, SourceSplit);

    private string Join(IEnumerable<int> ids, string how) =>
        string.Join(how == "chars" ? "" : " ", ids.Where(i => i > Unk && i < Tokens.Count).Select(i => Tokens[i]));

    public void Save(string dir)
    {
        var json = new JsonObject
        {
            ["kind"] = "symbols", ["source_split"] = SourceSplit, ["target_split"] = TargetSplit,
            ["tokens"] = new JsonArray(Tokens.Select(t => (JsonNode)t).ToArray()),
        };
        Optimum.Core.AtomicFile.Write(Path.Combine(dir, FileName), System.Text.Encoding.UTF8.GetBytes(json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n"));
    }

    public static SymbolTokenizer Load(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"'{dir}' has no {FileName}.", path);
        try
        {
            var j = JsonNode.Parse(File.ReadAllText(path))!;
            var tokens = j["tokens"]!.AsArray().Select(t => t!.GetValue<string>()).ToArray();
            if (!tokens.Take(3).SequenceEqual(Specials)) throw new InvalidDataException("the first tokens must be <pad>, </s>, <unk>");
            return new SymbolTokenizer(tokens[3..], j["source_split"]!.GetValue<string>(), j["target_split"]!.GetValue<string>());
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or NullReferenceException)
        {
            throw new InvalidDataException($"'{path}' is not a valid vocabulary: {e.Message}", e);
        }
    }
}
