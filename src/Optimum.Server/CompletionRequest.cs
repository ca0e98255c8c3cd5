using System.Text.Json;
using static Optimum.Server.RequestJson;

namespace Optimum.Server;

/// <summary>A validated POST /v1/completions request (OpenAI's subset, plus top_k and repetition_penalty).</summary>
public sealed record CompletionRequest(string Model, IReadOnlyList<string> Prompts, int MaxTokens, double Temperature, double TopP, int TopK,
    double RepetitionPenalty, IReadOnlyList<string> Stop, int? Seed, bool Stream);

/// <summary>Parses and checks a completions request body, naming the field at fault.</summary>
public static class CompletionParser
{
    public const int MaxPrompts = 8;
    public const int MaxStops = 4;

    public static CompletionRequest Parse(ReadOnlySpan<byte> body, ServerOptions o, ModelRegistry models)
    {
        using var doc = RequestJson.Parse(body);
        var root = doc.RootElement;
        string model = RequestJson.Model(root, models, ServedKind.Language);
        if (!root.TryGetProperty("prompt", out var p)) throw Bad("'prompt' is required.");
        List<string> prompts = p.ValueKind switch
        {
            JsonValueKind.String => [RequestJson.Text(p, "prompt")],
            JsonValueKind.Array when p.EnumerateArray().All(x => x.ValueKind == JsonValueKind.String) => p.EnumerateArray().Select((x, i) => RequestJson.Text(x, $"prompt[{i}]")).ToList(),
            _ => throw Type("prompt", "a string or an array of strings", p),
        };
        if (prompts.Count == 0 || prompts.Count > MaxPrompts) throw Range($"'prompt' must hold 1 to {MaxPrompts} prompts, got {prompts.Count}.");
        if (prompts.Any(x => x.Length == 0)) throw Range("'prompt' must not be empty.");

        int maxTokens = Int(root, "max_tokens", 16);
        if (maxTokens < 1 || maxTokens > o.MaxTokens) throw Range($"'max_tokens' must be in [1, {o.MaxTokens}], got {maxTokens}.");
        double temperature = Number(root, "temperature", 1);
        if (temperature is < 0 or > 2) throw Range($"'temperature' must be in [0, 2], got {temperature}.");
        double topP = Number(root, "top_p", 1);
        if (topP is <= 0 or > 1) throw Range($"'top_p' must be in (0, 1], got {topP}.");
        int topK = Int(root, "top_k", 0);
        if (topK < 0) throw Range($"'top_k' must be >= 0, got {topK}.");
        double rep = Number(root, "repetition_penalty", 1);
        if (rep is <= 0 or > 10) throw Range($"'repetition_penalty' must be in (0, 10], got {rep}.");
        int n = Int(root, "n", 1);
        if (n != 1) throw Range($"'n' must be 1 (one choice per prompt), got {n}.");
        int? seed = root.TryGetProperty("seed", out var s) && s.ValueKind != JsonValueKind.Null ? Int(root, "seed", 0) : null;
        bool stream = root.TryGetProperty("stream", out var st) && st.ValueKind != JsonValueKind.Null
            ? st.ValueKind is JsonValueKind.True or JsonValueKind.False ? st.GetBoolean() : throw Type("stream", "true or false", st)
            : false;
        if (stream && prompts.Count > 1) throw Range("'stream' works with a single prompt.");
        List<string> stop = [];
        if (root.TryGetProperty("stop", out var sp) && sp.ValueKind != JsonValueKind.Null)
        {
            stop = sp.ValueKind switch
            {
                JsonValueKind.String => [RequestJson.Text(sp, "stop")],
                JsonValueKind.Array when sp.EnumerateArray().All(x => x.ValueKind == JsonValueKind.String) => sp.EnumerateArray().Select((x, i) => RequestJson.Text(x, $"stop[{i}]")).ToList(),
                _ => throw Type("stop", "a string or an array of strings", sp),
            };
            if (stop.Count > MaxStops || stop.Any(x => x.Length == 0 || x.Length > 64)) throw Range($"'stop' must hold at most {MaxStops} non-empty strings of at most 64 characters.");
        }
        return new CompletionRequest(model, prompts, maxTokens, temperature, topP, topK, rep, stop, seed, stream);
    }
}
