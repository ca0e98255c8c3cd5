using System.Text.Json;
using System.Text.Unicode;

namespace Optimum.Server;

/// <summary>A request error: 400 for malformed JSON or wrong types, 404 for an unknown model, 422 for out-of-range values.</summary>
public sealed class RequestError(int status, string title, string detail, Exception? inner = null) : Exception(detail, inner)
{
    public int Status { get; } = status;
    public string Title { get; } = title;
}

/// <summary>Reading request bodies field by field, with errors that name the field, what was expected and what came.</summary>
internal static class RequestJson
{
    /// <summary>
    /// The body as a JSON object; the caller disposes the document. JSON text is UTF-8 (RFC 8259 §8.1): a leading byte
    /// order mark is skipped, invalid UTF-8 anywhere is a 400 naming the byte. A key given twice is a 400 (which one
    /// counts would be a guess, and a proxy may have guessed the other way), and so is a string .NET cannot hold (an
    /// escaped lone surrogate) anywhere in the body, named by its path, also in fields the endpoint does not read.
    /// </summary>
    public static JsonDocument Parse(ReadOnlySpan<byte> body)
    {
        int bom = body.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]) ? 3 : 0;
        body = body[bom..];
        if (!Utf8.IsValid(body))
        {
            Utf8.ToUtf16(body, new char[body.Length], out int valid, out _, replaceInvalidSequences: false);
            throw Bad($"The body is not valid UTF-8: byte {bom + valid} (0x{body[valid]:X2}) starts an invalid sequence.");
        }
        JsonDocument doc;
        try { doc = JsonDocument.Parse(body.ToArray()); }
        catch (JsonException e) { throw Bad($"The body is not valid JSON: {e.Message}"); }
        try
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad($"The body must be a JSON object, got {doc.RootElement.ValueKind}.");
            CheckText(doc.RootElement, "");
            return doc;
        }
        catch
        {
            doc.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Every string and key under <paramref name="e"/> decodes to UTF-16 and no object has a key twice; else a 400 naming
    /// where (<paramref name="path"/>: "" for the body). Done here rather than by JsonDocumentOptions.AllowDuplicateProperties,
    /// whose check throws InvalidOperationException on a key with a lone surrogate and names no place.
    /// </summary>
    private static void CheckText(JsonElement e, string path)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.String:
                Text(e, path);
                break;
            case JsonValueKind.Array:
                int i = 0;
                foreach (var x in e.EnumerateArray()) CheckText(x, $"{path}[{i++}]");
                break;
            case JsonValueKind.Object:
                var names = new HashSet<string>(StringComparer.Ordinal);
                string where = path.Length == 0 ? "the body" : $"'{path}'";
                foreach (var p in e.EnumerateObject())
                {
                    string name;
                    try { name = p.Name; }
                    catch (InvalidOperationException ex)
                    {
                        throw new RequestError(400, "Malformed request", $"A key of {where} is not valid Unicode text (a lone surrogate?): {ex.Message}", ex);
                    }
                    // Which of two values would count is a guess (and a proxy in front may have guessed the other way).
                    if (!names.Add(name)) throw Bad($"{char.ToUpperInvariant(where[0])}{where[1..]} has the key '{Clip(name)}' twice.");
                    CheckText(p.Value, path.Length == 0 ? name : $"{path}.{name}");
                }
                break;
        }
    }

    /// <summary>
    /// The model named by "model", or the first served model of the wanted kind when none is named:
    /// 404 when it is not served, 400 when it is of another kind (a forecaster on /v1/completions, a language model on /v1/images/generations, ...).
    /// </summary>
    public static string Model(JsonElement root, ModelRegistry models, ServedKind kind)
    {
        var (route, want) = kind switch
        {
            ServedKind.Forecaster => ("/v1/forecast", "a forecaster (model_type time_series_transformer or informer)"),
            ServedKind.ImageGenerator => ("/v1/images/generations", "an image generator (a diffusion UNet2DModel)"),
            _ => ("/v1/completions", "a language model (causal-lm or seq2seq)"),
        };
        if (!root.TryGetProperty("model", out var m))
            return models.DefaultOf(kind)
                ?? throw new RequestError(404, "Model not found", $"{route} needs {want}; none is served (GET /v1/models: {string.Join(", ", models.Names)}).");
        if (m.ValueKind != JsonValueKind.String) throw Type("model", "a string", m);
        var name = Text(m, "model");
        if (!models.Contains(name)) throw new RequestError(404, "Model not found", $"Model '{name}' is not served; see GET /v1/models ({string.Join(", ", models.Names)}).");
        if (models.ServedKindOf(name) != kind)
            throw new RequestError(400, "Wrong kind of model", $"Model '{name}' is of kind '{models.KindOf(name)}'; {route} needs {want}.");
        return name;
    }

    /// <summary>
    /// A JSON string's text: an escaped lone surrogate ("\ud800") or any other text .NET cannot hold as UTF-16 is a 400
    /// naming <paramref name="field"/>, not an exception from the reader.
    /// </summary>
    public static string Text(JsonElement v, string field)
    {
        try { return v.GetString()!; }
        catch (InvalidOperationException e) { throw new RequestError(400, "Malformed request", $"'{field}' is not valid Unicode text (a lone surrogate?): {e.Message}", e); }
    }

    public static int Int(JsonElement root, string name, int fallback)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var i)) throw Type(name, "an integer", v);
        return i;
    }

    public static double Number(JsonElement root, string name, double fallback)
    {
        if (!root.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null) return fallback;
        if (v.ValueKind != JsonValueKind.Number) throw Type(name, "a number", v);
        return v.GetDouble();
    }

    public static RequestError Bad(string detail) => new(400, "Malformed request", detail);
    public static RequestError Type(string field, string expected, JsonElement got) =>
        new(400, "Malformed request", $"'{field}' must be {expected}, got {got.ValueKind.ToString().ToLowerInvariant()} {Clip(got.GetRawText())}.");
    public static RequestError Range(string detail, Exception? inner = null) => new(422, "Value out of range", detail, inner);
    public static string Clip(string s) => s.Length > 40 ? s[..40] + "..." : s;
}
