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
        try
        {
            return JsonNode.Parse(text) is JsonObject o ? new HfConfig(source, o) : throw new InvalidDataException($"{source}: not a JSON object.");
        }
        catch (JsonException e) { throw new InvalidDataException($"{source}: not valid JSON ({e.Message}).", e); }
    }

    /// <summary>
    /// transformers' <c>model_type</c>; for a diffusers config, which has none, its <c>_class_name</c> (e.g. UNet2DModel).
    /// </summary>
    public string? ModelType => Text("model_type") ?? Text("_class_name");

    private string? Text(string key) => Json[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    /// <summary>An integer field, or <paramref name="fallback"/> when absent or null; a wrong type is refused.</summary>
    public int Int(string key, int fallback) => Get(key, fallback, n => n.GetValueKind() == JsonValueKind.Number && n.AsValue().TryGetValue<int>(out var i) ? (true, i) : (false, 0), "an integer");
    public int? OptionalInt(string key) => Json[key] is null ? null : Int(key, 0);
    public double Double(string key, double fallback) => Get(key, fallback, n => n.GetValueKind() == JsonValueKind.Number ? (true, n.GetValue<double>()) : (false, 0), "a number");
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
