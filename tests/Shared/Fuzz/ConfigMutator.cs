using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Optimum.Tests.Fuzz;

/// <summary>
/// What one key of a JSON file (a config.json, a trainer_state.json) may hold for the folder to be read: the values accepted
/// (for a config: those the HF config class reads, that the definition builds and that keep the parameter shapes the weights
/// have), whether absence and null are, and values worth trying. <see cref="Shape"/> keys decide which tensors the weights
/// must hold: a different but buildable value may be refused by model.safetensors instead of the JSON file.
/// </summary>
public sealed record KeyRule(string Key, Func<JsonNode, bool> Accepts, bool AbsentOk, bool NullOk, JsonNode?[][] Probes, bool Shape = false);

/// <summary>The rules of each fixture's config.json, and the value pools they draw probes from.</summary>
public static class ConfigRules
{
    private static bool Int(JsonNode n, out int v)
    {
        v = 0;
        return n is JsonValue j && j.GetValueKind() == JsonValueKind.Number && j.TryGetValue(out v);
    }

    private static bool Long(JsonNode n, out long v)
    {
        v = 0;
        return n is JsonValue j && j.GetValueKind() == JsonValueKind.Number && j.TryGetValue(out v);
    }

    private static bool Num(JsonNode n, out double v)
    {
        v = 0;
        if (n is not JsonValue j || j.GetValueKind() != JsonValueKind.Number) return false;
        v = double.Parse(j.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture);
        return double.IsFinite(v);
    }

    private static JsonNode Raw(string json) => JsonNode.Parse(json)!;

    private static readonly JsonNode?[] WrongForNumbers = ["7", true, new JsonArray(), new JsonObject(), new JsonArray(1)];
    private static JsonNode?[] IntValues(int current) => [-1, 0, 1, 2, 3, current - 1, current + 1, 2 * current, Raw("2.5"), Raw($"{current}.0"), Raw("1e1")];
    private static readonly JsonNode?[] IntExtremes = [int.MinValue, Raw("2147483648"), Raw("-9223372036854775809"), Raw("1e400")];
    private static readonly JsonNode?[] HugeInts = [1_000_000_000, int.MaxValue, 1 << 30];
    private static readonly JsonNode?[] LongExtremes = [long.MinValue, long.MaxValue, Raw("9223372036854775808"), Raw("1e400"), Raw("2147483648")];
    private static readonly JsonNode?[] NumValues = [-1, 0, Raw("0.0"), Raw("0.5"), 1, Raw("1e-300"), Raw("-0.0"), Raw("0.99999")];
    private static readonly JsonNode?[] NumExtremes = [Raw("1e300"), Raw("-1e300"), Raw("1e400"), Raw("-1e400"), Raw("5e-324")];
    private static readonly JsonNode?[] WrongForBools = [0, 1, "true", new JsonArray()];
    private static readonly JsonNode?[] WrongForStrings = [5, true, new JsonArray("x"), new JsonObject()];
    private static readonly JsonNode?[] WrongForLists = ["x", 3, new JsonObject(), new JsonArray(new JsonArray())];

    public static KeyRule Same(string key, int current, bool absentOk = false) =>
        new(key, n => Int(n, out var v) && v == current, absentOk, absentOk, [WrongForNumbers, IntValues(current), IntExtremes, HugeInts], Shape: true);

    /// <summary>A layer count: fewer layers than the weights hold read a subset of them (the rest reported unused), more are missing.</summary>
    public static KeyRule Layers(string key, int current, bool absentOk = false) => IntWhere(key, current, n => n >= 1 && n <= current, absentOk, shape: true);

    public static KeyRule IntWhere(string key, int current, Func<int, bool> ok, bool absentOk = true, bool? nullOk = null, bool shape = false) =>
        new(key, n => Int(n, out var v) && ok(v), absentOk, nullOk ?? absentOk, [WrongForNumbers, IntValues(current), IntExtremes, HugeInts], shape);

    public static KeyRule LongWhere(string key, int current, Func<long, bool> ok, bool absentOk = true) =>
        new(key, n => Long(n, out var v) && ok(v), absentOk, absentOk, [WrongForNumbers, IntValues(current), LongExtremes, HugeInts]);

    public static KeyRule AnyString(string key, bool absentOk = true) =>
        new(key, n => n is JsonValue j && j.GetValueKind() == JsonValueKind.String, absentOk, absentOk, [WrongForStrings, ["", "x", "\u00e9", "cosine"]]);

    public static KeyRule NumWhere(string key, Func<double, bool> ok, bool absentOk = true) =>
        new(key, n => Num(n, out var v) && ok(v), absentOk, absentOk, [WrongForNumbers, NumValues, NumExtremes]);

    public static KeyRule Prob(string key) => NumWhere(key, p => p is >= 0 and < 1);

    public static KeyRule Bool(string key, Func<bool, bool> ok, bool absentOk = true, bool shape = false) =>
        new(key, n => n is JsonValue j && j.GetValueKind() is JsonValueKind.True or JsonValueKind.False && ok(j.GetValue<bool>()), absentOk, absentOk, [WrongForBools, [true], [false]], shape);

    public static KeyRule Str(string key, string[] ok, string[] others, bool absentOk = true, bool shape = false) =>
        new(key, n => n is JsonValue j && j.GetValueKind() == JsonValueKind.String && ok.Contains(j.GetValue<string>()), absentOk, absentOk,
            [WrongForStrings, [.. ok.Select(s => (JsonNode?)s)], [.. others.Select(s => (JsonNode?)s), "", " ", "\u00e9"]], shape);

    public static KeyRule List(string key, Func<JsonArray, bool> ok, JsonNode?[] values, bool absentOk = false, bool? nullOk = null, bool shape = false) =>
        new(key, n => n is JsonArray a && ok(a), absentOk, nullOk ?? absentOk, [WrongForLists, values, values], shape);

    public static KeyRule Ignored(string key) => new(key, _ => true, true, true, [["x", 5, new JsonArray(), new JsonObject { ["a"] = null }]]);

    public static bool Ints(JsonArray a, out int[] values)
    {
        values = new int[a.Count];
        for (int i = 0; i < a.Count; i++) if (a[i] is null || !Int(a[i]!, out values[i])) return false;
        return true;
    }

    public static Func<JsonArray, bool> IntsEqual(params int[] expected) => a => Ints(a, out var v) && v.SequenceEqual(expected);

    public static Func<JsonArray, bool> StringsEqual(params string[] expected) =>
        a => a.Count == expected.Length && a.Select((n, i) => n is JsonValue j && j.GetValueKind() == JsonValueKind.String && j.GetValue<string>() == expected[i]).All(x => x);

    public static JsonNode?[] IntLists(params int[] current) =>
        [new JsonArray(), new JsonArray([.. current.Select(c => (JsonNode)c)]), new JsonArray([.. current.Select(c => (JsonNode)(c + 1))]),
         new JsonArray([.. current.Reverse().Select(c => (JsonNode)c)]), new JsonArray([.. current.Select(c => (JsonNode)c), 1]), new JsonArray(0), new JsonArray(-1),
         new JsonArray(Raw("2.5")), new JsonArray("1"), new JsonArray((JsonNode?)null), new JsonArray(int.MaxValue), new JsonArray(Raw("2147483648"))];
}

/// <summary>
/// Seeded mutations of a JSON object file: per key (by its rule) removal, null and probes of wrong types, edge values and
/// extremes; additions; truncations and bit flips of the text (judged by what they parse to); JSON garbage.
/// </summary>
public sealed class ConfigMutator(string text, IReadOnlyList<KeyRule> rules, IReadOnlyList<(string Key, JsonNode? Value, bool Ok, bool Shape)> additions, int seed)
{
    private readonly Random _rng = new(seed);
    private readonly JsonObject _base = JsonNode.Parse(text)!.AsObject();
    private readonly Dictionary<string, KeyRule> _rules = rules.ToDictionary(r => r.Key, StringComparer.Ordinal);
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    /// <summary>A mutation, the text, the key it touches (null for several or none) and whether a refusal may come from the weights.</summary>
    public IEnumerable<(Mutation Mutation, byte[] Bytes, string? Key, bool Shape)> Generate()
    {
        var missing = _base.Select(kv => kv.Key).Where(k => !_rules.ContainsKey(k)).ToArray();
        if (missing.Length > 0) throw new InvalidOperationException($"Fuzzer bug: no rule for {string.Join(", ", missing)}.");
        foreach (var rule in rules)
        {
            yield return Set("remove", rule, null, remove: true);
            yield return Set("null", rule, null, remove: false);
            foreach (var pool in rule.Probes) yield return Set("value", rule, pool[_rng.Next(pool.Length)]?.DeepClone(), remove: false);
        }
        foreach (var (key, value, ok, shape) in additions)
        {
            var doc = (JsonObject)_base.DeepClone();
            doc[key] = value?.DeepClone();
            yield return (Judged(ok, "add", $"'{key}' added as {value?.ToJsonString() ?? "null"}"), Utf8(doc.ToJsonString(Indented)), key, shape);
        }
        var cuts = new SortedSet<int> { 0, 1, text.Length / 2, text.Length - 1 };
        while (cuts.Count < 10) cuts.Add(_rng.Next(text.Length));
        foreach (var cut in cuts) if (Judge(Utf8(text[..cut]), $"cut at {cut} of {text.Length} characters", "truncate") is { } m) yield return m;
        var bytes = Encoding.UTF8.GetBytes(text);
        for (int i = 0, made = 0; made < 14 && i < 200; i++)
        {
            var b = (byte[])bytes.Clone();
            int at = _rng.Next(b.Length), bit = _rng.Next(8);
            b[at] ^= (byte)(1 << bit);
            if (Judge(b, $"byte {at} bit {bit} ('{(char)bytes[at]}' -> '{(char)b[at]}')", "flip") is { } m) { made++; yield return m; }
        }
        var garbage = new (string What, string Text, bool Ok)[]
        {
            ("empty", "", false), ("whitespace", " \n\t", false), ("null", "null", false), ("an array", "[" + text + "]", false), ("a string", "\"config\"", false),
            ("a number", "42", false), ("two objects", text + text, false), ("trailing comma", text.TrimEnd()[..^1].TrimEnd() + ",}", false),
            ("a comment", "// config\n" + text, false), ("NaN", text.TrimEnd()[..^1] + ",\"fuzz\": NaN}", false), ("nesting 100 deep", new string('[', 100) + new string(']', 100), false),
            ("NUL bytes", text + "\0\0", false), ("a BOM", "\uFEFF" + text, true), ("a lone surrogate escape in a new key", text.TrimEnd()[..^1] + ",\"\\ud800\": 1}", false),
            ("a lone surrogate in a string value", text.TrimEnd()[..^1] + ",\"fuzz\": \"\\udc00\"}", false),
        };
        foreach (var (what, t, ok) in garbage) yield return (Judged(ok, "garbage", what), Utf8(t), null, false);
        var dup = rules.First(r => _base.ContainsKey(r.Key)).Key;
        yield return (Judged(false, "garbage", $"'{dup}' twice with the same value"), Utf8(text.TrimEnd()[..^1] + $",\"{dup}\": {_base[dup]?.ToJsonString() ?? "null"}}}"), dup, false);
    }

    private static Mutation Judged(bool ok, string cls, string what) => new(cls, what, ok ? Verdict.Valid : Verdict.Invalid, ok ? "rules accept" : "rules refuse");

    private static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);

    private (Mutation, byte[], string?, bool) Set(string cls, KeyRule rule, JsonNode? value, bool remove)
    {
        var doc = (JsonObject)_base.DeepClone();
        if (remove) doc.Remove(rule.Key);
        else doc[rule.Key] = value;
        // Judged as the reader sees it: parsed from its text (a value built in code is typed, e.g. an int that is not a long).
        bool ok = remove ? rule.AbsentOk : value is null ? rule.NullOk : rule.Accepts(JsonNode.Parse(value.ToJsonString())!);
        var what = remove ? $"'{rule.Key}' removed" : $"'{rule.Key}' = {value?.ToJsonString() ?? "null"}";
        return (Judged(ok, cls, what), Utf8(doc.ToJsonString(Indented)), rule.Key, rule.Shape);
    }

    /// <summary>
    /// Garbled bytes judged by the text they decode to (invalid UTF-8 replaced, as File.ReadAllText does): not an object (or a
    /// key twice) is invalid; else the changed keys' rules decide.
    /// </summary>
    private (Mutation, byte[], string?, bool)? Judge(byte[] bytes, string what, string cls)
    {
        JsonObject doc;
        try
        {
            doc = JsonNode.Parse(Encoding.UTF8.GetString(bytes)) as JsonObject ?? throw new JsonException();
            _ = doc.Count;                                                                 // materialises the properties: a key twice throws here
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException) { return (Judged(false, cls, what), bytes, null, false); }
        var changed = doc.Select(kv => kv.Key).Union(_base.Select(kv => kv.Key))
            .Where(k => doc.ContainsKey(k) != _base.ContainsKey(k) || !JsonNode.DeepEquals(doc[k], _base[k])).ToArray();
        if (changed.Any(k => !_rules.ContainsKey(k) && _base.ContainsKey(k))) return null;
        bool ok = changed.All(k => !_rules.TryGetValue(k, out var r) ? true                // a new, unknown key: ignored
            : !doc.ContainsKey(k) ? r.AbsentOk : doc[k] is null ? r.NullOk : r.Accepts(doc[k]!));
        var key = changed.Length == 1 ? changed[0] : null;
        return (Judged(ok, cls, what), bytes, key, changed.Any(k => _rules.TryGetValue(k, out var r) && r.Shape));
    }
}
