using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Optimum.Core;
using Optimum.Onnx;
using Optimum.Onnx.Lora;

namespace Optimum.Hub.Lora;

// PEFT's adapter folder: adapter_config.json and adapter_model.safetensors, as PeftModel.save_pretrained writes them.
public sealed partial class LoraAdapter
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";
    /// <summary>Prefix of PEFT's tensor keys: the LoRA model wraps the base model as <c>base_model.model</c>; the adapter name ("default") is dropped.</summary>
    public const string KeyPrefix = "base_model.model.";
    private const string ASuffix = ".lora_A.weight", BSuffix = ".lora_B.weight";

    /// <summary>The safetensors key of a graph parameter name: <c>base_model.model.&lt;module&gt;.lora_A.weight</c>.</summary>
    public static string Key(string parameterName) => KeyPrefix + parameterName;

    /// <summary>
    /// Writes <paramref name="dir"/>/adapter_config.json and adapter_model.safetensors (F32, PEFT's keys) that PEFT's
    /// <c>PeftModel.from_pretrained</c> loads, each atomically. fan_in_fan_out is written true when a module's base weight is
    /// stored (in, out), as PEFT sets it for GPT-2's Conv1D.
    /// </summary>
    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        var tensors = Tensors.Select(t => SafeTensor.FromFloats(Key(t.Parameter.Name), t.Values, t.Parameter.Shape));
        SafeTensorsFile.Write(Path.Combine(dir, WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        var json = ConfigJson(Config with { FanInFanOut = Config.FanInFanOut || Modules.Any(m => m.FanInFanOut) });
        AtomicFile.Write(Path.Combine(dir, ConfigFile), Encoding.UTF8.GetBytes(json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n"));
    }

    /// <summary>adapter_config.json's document of a config: PEFT's LoraConfig fields, keys sorted as PEFT writes them.</summary>
    public static JsonObject ConfigJson(LoraConfig c)
    {
        var fields = new SortedDictionary<string, JsonNode?>(StringComparer.Ordinal)
        {
            ["alpha_pattern"] = new JsonObject(),
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = c.BaseModelNameOrPath,
            ["bias"] = c.Bias,
            ["fan_in_fan_out"] = c.FanInFanOut,
            ["inference_mode"] = c.InferenceMode,
            ["init_lora_weights"] = true,
            ["layers_pattern"] = null,
            ["layers_to_transform"] = null,
            ["lora_alpha"] = c.LoraAlpha == Math.Floor(c.LoraAlpha) && Math.Abs(c.LoraAlpha) < 1e15 ? JsonValue.Create((long)c.LoraAlpha) : JsonValue.Create(c.LoraAlpha),
            ["lora_dropout"] = c.LoraDropout,
            ["modules_to_save"] = null,
            ["peft_type"] = "LORA",
            ["r"] = c.R,
            ["rank_pattern"] = new JsonObject(),
            ["revision"] = null,
            ["target_modules"] = c.TargetModulesRegex is { } re ? JsonValue.Create(re) : new JsonArray(c.TargetModules.Select(t => (JsonNode)t).ToArray()),
            ["task_type"] = c.TaskType,
            ["use_dora"] = false,
            ["use_rslora"] = c.UseRslora,
        };
        var o = new JsonObject();
        foreach (var (k, v) in fields) o[k] = v;
        return o;
    }

    /// <summary>
    /// Reads <paramref name="dir"/>/adapter_config.json. A file that is not a LoRA adapter, or asks for what this
    /// implementation does not do (DoRA, trained biases, rank or alpha patterns, modules_to_save, layers_to_transform),
    /// is refused naming the file and the field.
    /// </summary>
    public static LoraConfig ReadConfig(string dir)
    {
        var path = Path.Combine(dir, ConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no adapter config (a PEFT adapter folder holds {ConfigFile} and {WeightsFile}).", path);
        JsonObject o;
        try { o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e); }
        InvalidDataException Bad(string field, string what) => new($"{path}: {field} {what}");
        T Get<T>(string field, T fallback)
        {
            if (o[field] is not { } n) return fallback;
            try { return n.GetValue<T>(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException) { throw Bad(field, $"is {n.ToJsonString()}, expected a {typeof(T).Name}."); }
        }
        var type = Get<string?>("peft_type", null);
        if (type != "LORA") throw Bad("peft_type", $"is {(type is null ? "missing" : $"'{type}'")}; only LORA adapters are read.");
        if (Get("use_dora", false)) throw new NotSupportedException($"{path}: use_dora is true; DoRA adapters are not supported.");
        foreach (var field in new[] { "rank_pattern", "alpha_pattern" })
            if (o[field] is JsonObject p && p.Count > 0) throw new NotSupportedException($"{path}: {field} {p.ToJsonString()} is not supported (one r and lora_alpha for every module).");
        foreach (var field in new[] { "modules_to_save", "layers_to_transform", "layer_replication" })
            if (o[field] is { } v && !(v is JsonArray { Count: 0 })) throw new NotSupportedException($"{path}: {field} {v.ToJsonString()} is not supported.");
        var r = o["r"] is not null ? Get("r", 0) : throw Bad("r", "is missing.");
        if (r <= 0) throw Bad("r", $"is {r}; it must be a positive integer.");
        var targets = o["target_modules"];
        var config = new LoraConfig
        {
            R = r,
            LoraAlpha = Get("lora_alpha", 8.0),
            LoraDropout = Get("lora_dropout", 0.0),
            TargetModules = targets is JsonArray a ? a.Select((t, i) => t is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw Bad($"target_modules[{i}]", $"is {t?.ToJsonString() ?? "null"}, expected a module name.")).ToArray() : [],
            TargetModulesRegex = targets is JsonValue tv ? tv.TryGetValue<string>(out var re) ? re : throw Bad("target_modules", $"is {tv.ToJsonString()}, expected a list of names or a regex string.") : null,
            FanInFanOut = Get("fan_in_fan_out", false),
            Bias = Get("bias", "none"),
            UseRslora = Get("use_rslora", false),
            TaskType = Get<string?>("task_type", null),
            BaseModelNameOrPath = Get<string?>("base_model_name_or_path", null),
            InferenceMode = Get("inference_mode", false),
        };
        if (targets is null) throw Bad("target_modules", "is missing (PEFT's per-architecture defaults are not applied: name the modules).");
        try { config.Validate(); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException) { throw new InvalidDataException($"{path}: {e.Message}", e); }
        return config;
    }

    /// <summary>
    /// Reads a PEFT adapter folder for a model whose LoRA graph, built with <see cref="ReadConfig"/>'s config, has
    /// <paramref name="modules"/> (<see cref="LoraGraph.Modules"/>). Every module needs its A and B, of shapes (r, in)
    /// and (out, r) of that module; a key for a module the model does not adapt, a missing tensor, a shape that does not
    /// fit the base module, an r other than the config's, or a non-finite value is refused naming the file and the key.
    /// </summary>
    /// <param name="dir">The adapter folder.</param>
    /// <param name="modules">The model's LoRA modules for this adapter's config.</param>
    /// <param name="config">The folder's config when already read (else it is read).</param>
    public static LoraAdapter Load(string dir, IReadOnlyList<LoraModule> modules, LoraConfig? config = null)
    {
        config ??= ReadConfig(dir);
        var path = Path.Combine(dir, WeightsFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no adapter weights (a PEFT adapter folder holds {ConfigFile} and {WeightsFile}).", path);
        using var f = SafeTensorsFile.Open(path);
        var byName = modules.Select(m => m.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var key in f.Names)
        {
            var module = !key.StartsWith(KeyPrefix, StringComparison.Ordinal) ? null
                : key.EndsWith(ASuffix, StringComparison.Ordinal) ? key[KeyPrefix.Length..^ASuffix.Length]
                : key.EndsWith(BSuffix, StringComparison.Ordinal) ? key[KeyPrefix.Length..^BSuffix.Length] : null;
            if (module is null)
                throw new InvalidDataException($"{path}: tensor '{key}' is not a LoRA weight (PEFT's keys are '{KeyPrefix}<module>{ASuffix}' and '...{BSuffix}'; bias \"none\" saves nothing else).");
            if (!byName.Contains(module))
                throw new InvalidDataException($"{path}: tensor '{key}' is for module '{module}', which the model does not adapt with target_modules " +
                    $"{(config.TargetModulesRegex is { } re ? $"'{re}'" : "[" + string.Join(", ", config.TargetModules) + "]")} (adapted: {string.Join(", ", modules.Take(8).Select(m => m.Name))}{(modules.Count > 8 ? ", ..." : "")}).");
        }
        int r = config.R;
        float[] Read(string parameter, long dimR, long dimOther, bool rFirst, LoraModule m)
        {
            var key = Key(parameter);
            if (!f.Contains(key)) throw new InvalidDataException($"{path}: tensor '{key}' is missing (module '{m.Name}' needs both lora_A and lora_B).");
            var (type, shape) = f.Info(key);
            var want = rFirst ? new[] { dimR, dimOther } : [dimOther, dimR];
            if (shape.Length != 2)
                throw new InvalidDataException($"{path}: tensor '{key}' has shape [{string.Join(", ", shape)}]; it must be 2-D [{string.Join(", ", want)}].");
            long gotR = rFirst ? shape[0] : shape[1], gotOther = rFirst ? shape[1] : shape[0];
            if (gotOther != dimOther)
                throw new InvalidDataException($"{path}: tensor '{key}' has shape [{string.Join(", ", shape)}], which does not fit base module '{m.Name}' " +
                    $"({m.In} in, {m.Out} out): expected [{string.Join(", ", want)}].");
            if (gotR != dimR)
                throw new InvalidDataException($"{path}: tensor '{key}' has rank {gotR} (shape [{string.Join(", ", shape)}]), but {ConfigFile} says r = {r}.");
            if (type is not (DType.Float or DType.Float16 or DType.BFloat16 or DType.Double))
                throw new InvalidDataException($"{path}: tensor '{key}' is {type.Name()}; LoRA weights must be floating-point.");
            var values = f.Read(key).ToFloats();
            int bad = Array.FindIndex(values, v => !float.IsFinite(v));
            if (bad >= 0) throw new InvalidDataException($"{path}: tensor '{key}' holds {values[bad].ToString(CultureInfo.InvariantCulture)} at element {bad}; weights must be finite.");
            return values;
        }
        var a = modules.Select(m => Read(m.AName, r, m.In, rFirst: true, m)).ToArray();
        var b = modules.Select(m => Read(m.BName, r, m.Out, rFirst: false, m)).ToArray();
        return new LoraAdapter(config, modules, a, b);
    }
}
