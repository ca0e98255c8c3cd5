using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace Optimum.Server.Tests.Fuzz;

/// <summary>
/// A request body as a tree of JSON text pieces, so that a mutation can put anything anywhere: literals JSON does not
/// have (NaN), keys twice, escapes of lone surrogates. Keys are written as given (raw JSON string content).
/// </summary>
internal abstract record J
{
    public abstract void Write(StringBuilder sb);
    public string Text() { var sb = new StringBuilder(); Write(sb); return sb.ToString(); }
}

/// <summary>Any text, valid JSON or not.</summary>
internal sealed record JLit(string Raw) : J
{
    public override void Write(StringBuilder sb) => sb.Append(Raw);
}

internal sealed record JArr(IReadOnlyList<J> Items) : J
{
    public override void Write(StringBuilder sb)
    {
        sb.Append('[');
        for (int i = 0; i < Items.Count; i++) { if (i > 0) sb.Append(','); Items[i].Write(sb); }
        sb.Append(']');
    }
}

internal sealed record JObj(IReadOnlyList<(string Key, J Value)> Fields) : J
{
    public override void Write(StringBuilder sb)
    {
        sb.Append('{');
        for (int i = 0; i < Fields.Count; i++)
        {
            if (i > 0) sb.Append(',');
            sb.Append('"').Append(Fields[i].Key).Append("\":");
            Fields[i].Value.Write(sb);
        }
        sb.Append('}');
    }
}

/// <summary>Paths into a <see cref="J"/> tree: a segment is a key (string) or an index (int).</summary>
internal static class JPath
{
    /// <summary>The path as the service names the field: series[0].values[3].</summary>
    public static string Name(IReadOnlyList<object> path)
    {
        var sb = new StringBuilder();
        foreach (var s in path)
            if (s is int i) sb.Append('[').Append(i).Append(']');
            else sb.Append(sb.Length > 0 ? "." : "").Append(Key((string)s));
        return sb.ToString();
    }

    /// <summary>A key as text (its escapes decoded), or as written when it does not decode (a lone surrogate).</summary>
    private static string Key(string raw)
    {
        try { return JsonSerializer.Deserialize<string>($"\"{raw}\"")!; }
        catch (Exception e) when (e is JsonException or InvalidOperationException) { return raw; }
    }

    /// <summary>Containers enclosing the value at <paramref name="path"/>: the root object counts one.</summary>
    public static int Depth(IReadOnlyList<object> path) => path.Count;

    public static J? Get(J node, IReadOnlyList<object> path, int at = 0)
    {
        if (at == path.Count) return node;
        return (node, path[at]) switch
        {
            (JObj o, string k) => o.Fields.Where(f => f.Key == k).Select(f => Get(f.Value, path, at + 1)).FirstOrDefault(),
            (JArr a, int i) when i < a.Items.Count => Get(a.Items[i], path, at + 1),
            _ => null,
        };
    }

    /// <summary>A copy with the value at <paramref name="path"/> replaced (null: the field or item removed; added when missing).</summary>
    public static J Set(J node, IReadOnlyList<object> path, J? value, int at = 0)
    {
        if (at == path.Count) return value ?? throw new ArgumentException("The root cannot be removed.");
        switch (node, path[at])
        {
            case (JObj o, string k):
            {
                var fields = o.Fields.ToList();
                int i = fields.FindIndex(f => f.Key == k);
                if (at + 1 == path.Count && value is null) { if (i >= 0) fields.RemoveAt(i); }
                else if (i >= 0) fields[i] = (k, Set(fields[i].Value, path, value, at + 1));
                else fields.Add((k, Set(new JObj([]), path, value, at + 1)));
                return new JObj(fields);
            }
            case (JArr a, int i):
            {
                var items = a.Items.ToList();
                if (at + 1 == path.Count && value is null) items.RemoveAt(i);
                else items[i] = Set(items[i], path, value, at + 1);
                return new JArr(items);
            }
            default: throw new ArgumentException($"No '{JPath.Name(path)}' to set in {node.GetType().Name}.");
        }
    }

    /// <summary>A copy with a second "<paramref name="key"/>": <paramref name="value"/> in the object at <paramref name="path"/>.</summary>
    public static J AddDuplicate(J node, IReadOnlyList<object> path, string key, J value, int at = 0)
    {
        if (at == path.Count)
        {
            var o = (JObj)node;
            return new JObj([.. o.Fields, (key, value)]);
        }
        return (node, path[at]) switch
        {
            (JObj o, string k) => new JObj(o.Fields.Select(f => f.Key == k ? (f.Key, AddDuplicate(f.Value, path, key, value, at + 1)) : f).ToList()),
            (JArr a, int i) => new JArr(a.Items.Select((x, j) => j == i ? AddDuplicate(x, path, key, value, at + 1) : x).ToList()),
            _ => throw new ArgumentException($"No object at '{Name(path)}'."),
        };
    }

    /// <summary>Every object inside <paramref name="node"/> (the root included), with its path.</summary>
    public static IEnumerable<(List<object> Path, JObj Obj)> Objects(J node, List<object>? path = null)
    {
        path ??= [];
        if (node is JObj o)
        {
            yield return (path, o);
            foreach (var (k, v) in o.Fields)
                foreach (var x in Objects(v, [.. path, k])) yield return x;
        }
        else if (node is JArr a)
            for (int i = 0; i < a.Items.Count; i++)
                foreach (var x in Objects(a.Items[i], [.. path, i])) yield return x;
    }
}

/// <summary>
/// What a literal is, decided independently of the service: whether it is JSON at all, how deep it nests, whether
/// it holds an escaped lone surrogate (a string .NET cannot hold), and what number it is.
/// </summary>
internal sealed class Lit
{
    private static readonly Regex IntegerLiteral = new(@"^-?(0|[1-9][0-9]*)$", RegexOptions.CultureInvariant);
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lit> Known = new();
    private readonly Lazy<IReadOnlyList<Lit>?> _items;

    /// <summary>The literal's analysis (made once per text: the corpus draws the same literals many times).</summary>
    public static Lit Of(string raw) => Known.GetOrAdd(raw, r => new Lit(r));

    private Lit(string raw)
    {
        _items = new(() =>
        {
            if (Kind != JsonValueKind.Array) return null;
            using var doc = JsonDocument.Parse(raw, new JsonDocumentOptions { MaxDepth = 100_000 });
            return doc.RootElement.EnumerateArray().Select(x => Of(x.GetRawText())).ToList();
        });
        Raw = raw;
        Depth = NestingDepth(raw);
        try
        {
            using var doc = JsonDocument.Parse(raw, new JsonDocumentOptions { MaxDepth = 100_000 });
            IsJson = true;
            Kind = doc.RootElement.ValueKind;
            try { JsonDocument.Parse(raw, new JsonDocumentOptions { MaxDepth = 100_000, AllowDuplicateProperties = false }).Dispose(); }
            catch (Exception e) when (e is JsonException or InvalidOperationException) { DuplicateKey = true; }
            LoneSurrogate = HasLoneSurrogate(doc.RootElement);
            if (Kind == JsonValueKind.String && !LoneSurrogate) String = doc.RootElement.GetString();
        }
        catch (JsonException) { IsJson = false; }
    }

    public string Raw { get; }
    public bool IsJson { get; }
    public JsonValueKind Kind { get; }
    public int Depth { get; }
    public bool LoneSurrogate { get; }
    /// <summary>An object inside has a key twice (JSON allows it; what it means is left to the reader, so the service refuses it).</summary>
    public bool DuplicateKey { get; }
    public string? String { get; }
    /// <summary>An array's elements (null for anything else).</summary>
    public IReadOnlyList<Lit>? Items => _items.Value;

    public bool IsNull => Kind == JsonValueKind.Null;
    public bool IsNumber => Kind == JsonValueKind.Number;
    /// <summary>The number as IEEE double rounds it: beyond ±1.8e308 it is infinite, below 4.9e-324 it is 0.</summary>
    public double Double => double.Parse(Raw, NumberStyles.Float, CultureInfo.InvariantCulture);
    /// <summary>An integer literal (no fraction, no exponent) within [<paramref name="min"/>, <paramref name="max"/>].</summary>
    public bool IsInteger(long min = int.MinValue, long max = int.MaxValue) =>
        IsNumber && IntegerLiteral.IsMatch(Raw) && long.TryParse(Raw, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var v) && v >= min && v <= max;
    public long Long => long.Parse(Raw, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);

    private static int NestingDepth(string s)
    {
        int depth = 0, max = 0;
        bool inString = false;
        for (int i = 0; i < s.Length; i++)
        {
            char c = s[i];
            if (inString) { if (c == '\\') i++; else if (c == '"') inString = false; continue; }
            if (c == '"') inString = true;
            else if (c is '[' or '{') max = Math.Max(max, ++depth);
            else if (c is ']' or '}') depth--;
        }
        return max;
    }

    private static bool HasLoneSurrogate(JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String:
                try { e.GetString(); return false; }
                catch (InvalidOperationException) { return true; }
            case JsonValueKind.Array:
                return e.EnumerateArray().Any(HasLoneSurrogate);
            case JsonValueKind.Object:
                foreach (var p in e.EnumerateObject())
                {
                    try { _ = p.Name; }
                    catch (InvalidOperationException) { return true; }
                    if (HasLoneSurrogate(p.Value)) return true;
                }
                return false;
            default:
                return false;
        }
    }
}
