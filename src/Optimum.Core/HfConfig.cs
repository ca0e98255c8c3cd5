using System.Text.Json;
using System.Text.Json.Nodes;

namespace Optimum.Core;

/// <summary>Reading Hugging Face <c>config.json</c> files with errors that name the file and the field.</summary>
public sealed class HfConfig
{
    private HfConfig(string source, JsonObject json)
    {
        Source = source;
        Json = json;
    }

    /// <summary>Where the config came from, for messages.</summary>
    public string Source { get; }
    /// <summary>The whole document (unknown keys are kept so that exports write them back).</summary>
    public JsonObject Json { get; }

    public static HfConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Config '{path}' does not exist.", path);
        return Parse(File.ReadAllText(path), path);
    }

    public static HfConfig Parse(string text, string source = "config.json")
    {
        JsonNode? node;
        try { node = JsonNode.Parse(text); }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not valid JSON ({e.Message}).", e); }
        if (node is not JsonObject o) throw new InvalidDataException($"{source}: not a JSON object.");
        // JsonNode reads lazily: a key twice (anywhere) or a string escaping half a surrogate pair would fail later, in
        // whatever reads it, without naming the file. Every object and string is read once here.
        try { ReadAll(o); }
        catch (ArgumentException e) { throw new InvalidDataException($"{source}: a key appears twice in an object ({e.Message}).", e); }
        catch (InvalidOperationException e) { throw new InvalidDataException($"{source}: holds a string that cannot be decoded ({e.Message}).", e); }
        return new HfConfig(source, o);
    }

    private static void ReadAll(JsonNode? n)
    {
        switch (n)
        {
            case JsonObject o: foreach (var (_, v) in o) ReadAll(v); break;
            case JsonArray a: foreach (var v in a) ReadAll(v); break;
            case JsonValue v when v.GetValueKind() == JsonValueKind.String: _ = v.GetValue<string>(); break;
        }
    }

    /// <summary>
    /// transformers' <c>model_type</c>; for a diffusers config, which has none, its <c>_class_name</c> (e.g. UNet2DModel).
    /// </summary>
    public string? ModelType => Text("model_type") ?? Text("_class_name");

    private string? Text(string key) => Json[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    /// <summary>An integer field, or <paramref name="fallback"/> when absent or null; a wrong type is refused.</summary>
    public int Int(string key, int fallback) => Get(key, fallback, n => n.GetValueKind() == JsonValueKind.Number && n.AsValue().TryGetValue<int>(out var i) ? (true, i) : (false, 0), "an integer");
    public int? OptionalInt(string key) => Json[key] is null ? null : Int(key, 0);
    /// <summary>A finite number, or <paramref name="fallback"/> when absent or null; a number beyond double's range (1e400 reads as infinity) is refused.</summary>
    public double Double(string key, double fallback) => Get(key, fallback, n => n.GetValueKind() == JsonValueKind.Number && n.GetValue<double>() is var d && double.IsFinite(d) ? (true, d) : (false, 0), "a finite number");
    public bool Bool(string key, bool fallback) => Get(key, fallback, n => n.GetValueKind() switch { JsonValueKind.True => (true, true), JsonValueKind.False => (true, false), _ => (false, false) }, "true or false");
    public string String(string key, string fallback) => Get(key, fallback, n => n.GetValueKind() == JsonValueKind.String ? (true, n.GetValue<string>()) : (false, ""), "a string");

    private T Get<T>(string key, T fallback, Func<JsonNode, (bool Ok, T Value)> read, string expected)
    {
        var n = Json[key];
        if (n is null) return fallback;
        var (ok, value) = read(n);
        return ok ? value : throw new InvalidDataException($"{Source}: '{key}' is {n.ToJsonString()}, expected {expected}.");
    }
}
