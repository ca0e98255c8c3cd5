using System.Text.Json;
using Optimum.Core;
using Optimum.Inference.Diffusion;
using static Optimum.Server.RequestJson;

namespace Optimum.Server;

/// <summary>
/// A validated POST /v1/images/generations request: <see cref="Labels"/> holds one label per image (null for
/// unconditional sampling); <see cref="Seed"/> was drawn when the request gave none.
/// </summary>
public sealed record ImageRequest(string Model, int Count, IReadOnlyList<int>? Labels, int Steps, double Guidance, SamplerKind Scheduler, double Eta, long Seed)
{
    /// <summary>The generator's options (images per UNet run: its default).</summary>
    public ImageGenerationOptions Options => new()
    {
        Scheduler = Scheduler, Steps = Steps, Eta = Eta, GuidanceScale = Guidance, Labels = Labels, Seed = Seed, Count = Count,
    };
}

/// <summary>
/// Parses and checks an image generation request body, naming the field at fault: 400 for malformed JSON and wrong
/// types, 404 for an unknown model, 422 for values the model cannot take. The checks are
/// <see cref="ImageGenerator.Generate"/>'s, made here so that they name the request's fields.
/// </summary>
public static class ImageParser
{
    public const int DefaultCount = 1;
    public const int DefaultSteps = 50;

    public static ImageRequest Parse(ReadOnlySpan<byte> body, ServerOptions o, ModelRegistry models)
    {
        using var doc = RequestJson.Parse(body);
        var root = doc.RootElement;
        string model = Model(root, models, ServedKind.ImageGenerator);
        models.TryGetImageGenerator(model, out var served);
        var g = served.Model;

        // Types first (400), then values (422).
        if (Given(root, "count") && Given(root, "n")) throw Bad("Give 'count' or OpenAI's 'n', not both.");
        string countField = Given(root, "n") ? "n" : "count";
        int? count = Given(root, countField) ? Int(root, countField, 0) : null;
        if (Given(root, "label") && Given(root, "labels")) throw Bad("Give 'label' (one for every image) or 'labels' (one per image), not both.");
        List<int>? labels = null;
        string labelField = Given(root, "labels") ? "labels" : "label";
        if (root.TryGetProperty("label", out var l) && l.ValueKind != JsonValueKind.Null) labels = [Label(l, "label")];
        if (root.TryGetProperty("labels", out var ls) && ls.ValueKind != JsonValueKind.Null)
        {
            if (ls.ValueKind != JsonValueKind.Array) throw Type("labels", "an array of class labels (integers), one per image", ls);
            labels = ls.EnumerateArray().Select((x, i) => Label(x, $"labels[{i}]")).ToList();
        }
        int steps = Int(root, "steps", DefaultSteps);
        double? guidance = Given(root, "guidance") ? Number(root, "guidance", 1) : null;
        double eta = Number(root, "eta", 0);
        string scheduler = EnumNames.Name(SamplerKind.Ddim);
        if (root.TryGetProperty("scheduler", out var sc) && sc.ValueKind != JsonValueKind.Null)
            scheduler = sc.ValueKind == JsonValueKind.String ? RequestJson.Text(sc, "scheduler") : throw Type("scheduler", $"a string ({string.Join(" or ", EnumNames.Names<SamplerKind>())})", sc);
        long? seed = null;
        if (root.TryGetProperty("seed", out var sd) && sd.ValueKind != JsonValueKind.Null)
            seed = sd.ValueKind == JsonValueKind.Number && sd.TryGetInt64(out var s) ? s : throw Type("seed", "an integer", sd);
        if (root.TryGetProperty("response_format", out var rf) && rf.ValueKind != JsonValueKind.Null)
        {
            if (rf.ValueKind != JsonValueKind.String) throw Type("response_format", "a string", rf);
            var format = RequestJson.Text(rf, "response_format");
            if (format != "b64_json") throw Range($"'response_format' must be \"b64_json\" (PNG files in base64; this service keeps no files to link to), got \"{Clip(format)}\".");
        }

        if (labels is { Count: 0 }) throw Range("'labels' is empty; give one label per image, or leave it out for unconditional images.");
        int n = count ?? labels?.Count ?? DefaultCount;
        if (count is null && n > o.MaxImages) throw Range($"'labels' asks for {n} images; a request takes at most {o.MaxImages}.");
        if (n < 1 || n > o.MaxImages) throw Range($"'{countField}' must be in [1, {o.MaxImages}], got {n}.");
        if (labels is not null)
        {
            if (!g.IsClassConditional)
                throw Range($"Model '{model}' is unconditional (no num_class_embeds); it takes no '{labelField}'.");
            if (labels.Count != 1 && labels.Count != n)
                throw Range($"'labels' holds {labels.Count} labels for {n} images ('{countField}'); give one label per image.");
            for (int i = 0; i < labels.Count; i++)
                if (labels[i] < 0 || labels[i] >= g.ClassCount)
                    throw Range($"'{(labelField == "label" ? "label" : $"labels[{i}]")}' is {labels[i]}; model '{model}' takes labels in [0, {g.ClassCount}) ({g.NullLabel} is reserved as \"no label\").");
            if (labels.Count == 1) labels = Enumerable.Repeat(labels[0], n).ToList();
        }
        int maxSteps = g.Scheduler.NumTrainTimesteps;
        if (steps < 1 || steps > maxSteps) throw Range($"'steps' must be in [1, {maxSteps}] (the model's num_train_timesteps), got {steps}.");
        double w = guidance ?? (labels is not null ? ImageGenerationOptions.DefaultGuidance : 1);
        if (!double.IsFinite(w)) throw Range($"'guidance' must be a finite number, got {w}.");
        if (w != 1 && !g.IsClassConditional)
            throw Range($"'guidance' {w} needs a class-conditional model; model '{model}' is unconditional (use 1 or leave it out).");
        if (w != 1 && labels is null)
            throw Range($"'guidance' {w} needs a 'label' to guide towards (use 1 or leave it out for unconditional images).");
        SamplerKind kind;
        try { kind = EnumNames.Parse<SamplerKind>(scheduler, "'scheduler'"); }
        catch (ArgumentException e) { throw Range(e.Message, e); }
        if (!(eta >= 0 && eta <= 1)) throw Range($"'eta' must be in [0, 1] (0: deterministic DDIM), got {eta}.");
        if (eta != 0 && kind != SamplerKind.Ddim) throw Range($"'eta' {eta} is a DDIM setting; the {scheduler} scheduler takes 0.");
        // The schedule itself may refuse a step count (steps_offset past its end): its message, as the steps' fault.
        try { DiffusionScheduler.Create(kind, g.Scheduler, steps, eta); }
        catch (ArgumentException e) { throw Range($"'steps' {steps}: {e.Message}", e); }
        return new ImageRequest(model, n, labels, steps, w, kind, eta, seed ?? Random.Shared.Next());
    }

    private static bool Given(JsonElement root, string name) => root.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null;

    private static int Label(JsonElement x, string field) =>
        x.ValueKind == JsonValueKind.Number && x.TryGetInt32(out var k) ? k : throw Type(field, "an integer (a class label)", x);
}
