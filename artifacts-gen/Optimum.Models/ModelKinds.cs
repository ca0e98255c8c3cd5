namespace Optimum.Models;

/// <summary>
/// The registry of model kinds: the one place that maps a config.json <c>model_type</c> (or a typed
/// config) to its <see cref="IModelKind"/>, and the operations every kind shares through it: export of an
/// HF folder, presets, initial weights, HF export and loading for inference.
/// </summary>
public static class ModelKinds
{
    /// <summary>Every kind, in registration order. A new family is one folder and one line here.</summary>
    public static IReadOnlyList<IModelKind> All { get; } =
    [
        new Gpt2Kind(),
        new T5Kind(),
        new TimeSeriesKind(),
        new MlpKind(),
        new UNetKind(),
    ];

    /// <summary>Every model_type a kind reads.</summary>
    public static IEnumerable<string> ModelTypes => All.SelectMany(k => k.ModelTypes);

    /// <summary>The kind reading <paramref name="config"/>'s model_type; an unknown or missing type is refused naming the file.</summary>
    public static IModelKind For(HfConfig config)
    {
        var type = config.ModelType ?? throw new InvalidDataException(
            $"{config.Source}: model_type is missing or not a string (a diffusers config names its _class_name instead; known: {string.Join(", ", ModelTypes)}).");
        var key = config.Json["model_type"] is null ? "_class_name" : "model_type";
        return All.FirstOrDefault(k => k.ModelTypes.Contains(type))
            ?? throw new InvalidDataException($"{config.Source}: {key} '{type}' is not a known model kind (known: {string.Join(", ", ModelTypes)}).");
    }

    /// <summary>The kind whose typed config <paramref name="config"/> is.</summary>
    public static IModelKind For(object config) => All.FirstOrDefault(k => k.ConfigType == config.GetType())
        ?? throw new ArgumentException($"{config.GetType().Name} is not the config of a registered model kind.", nameof(config));

    /// <summary>A model folder's kind and typed config.</summary>
    public static (IModelKind Kind, object Config) Read(string modelDir)
    {
        var cfg = ModelFolder.ReadConfig(modelDir);
        var kind = For(cfg);
        return (kind, kind.ReadConfig(cfg));
    }

    /// <summary>Writes config.json and the graphs of a model folder for a typed config (no weights).</summary>
    public static void Write(string dir, object config) => For(config).Write(dir, config);

    /// <summary>Initial weights for a typed config, deterministic in the seed and the parameter order.</summary>
    public static float[][] Initialize(IReadOnlyList<ParameterInfo> parameters, object config, int seed) => For(config).Initialize(parameters, config, seed);

    /// <summary>Writes a model folder with weights initialised from <paramref name="seed"/> (all of it or, on failure, nothing).</summary>
    public static void WritePreset(string outDir, object config, int seed = 0)
    {
        var kind = For(config);
        AtomicFolder.Write(outDir, tmp =>
        {
            kind.Write(tmp, config);
            Artifacts.WriteWeights(tmp, null, ps => kind.Initialize(ps, config, seed));
        });
    }

    /// <summary>
    /// <c>optimum-net export</c>: an HF folder (config.json, model.safetensors) of any kind to a model folder with
    /// the graphs and the weights (HF names, F32), plus the files its kind reads beside them (a UNet's
    /// scheduler_config.json). Without model.safetensors the weights are initialised from
    /// <paramref name="seed"/>. Returns checkpoint tensors that were not used.
    /// </summary>
    public static IReadOnlyList<string> Export(string hfDir, string outDir, int seed = 0)
    {
        var hf = HfConfig.Load(Path.Combine(hfDir, ModelFolder.ConfigFile));
        var kind = For(hf);
        var config = kind.ReadConfig(hf);
        // Everything goes into a temporary folder first: a refused file or corrupted weights leave outDir as it was.
        IReadOnlyList<string> unused = [];
        AtomicFolder.Write(outDir, tmp =>
        {
            kind.ImportFiles(hfDir, tmp);
            // The config passed validation; a graph that still cannot be built is the config's doing: say which file.
            try { kind.Write(tmp, config); }
            catch (GraphBuildException e) { throw new InvalidDataException($"{hf.Source}: the {hf.ModelType} graphs cannot be built from this config: {e.Message}", e); }
            unused = Artifacts.WriteWeights(tmp, hfDir, ps => kind.Initialize(ps, config, seed));
        });
        return unused;
    }

    /// <summary>
    /// Writes an HF folder that <c>from_pretrained</c> loads for a typed config: config.json (HF keys only) and
    /// model.safetensors (F32, HF names).
    /// </summary>
    public static void ExportHf(string outDir, object config, IReadOnlyList<ParameterInfo> parameters, IReadOnlyList<float[]> weights) =>
        HfWeights.SaveFolder(outDir, For(config).ToHf(config), parameters, weights);

    /// <summary>Weights of a model folder: its model.safetensors, or its kind's initialisation from <paramref name="seed"/>.</summary>
    public static float[][] InitialWeights(string modelDir, int seed, Action<string>? log = null)
    {
        var ps = ModelFolder.ReadParameters(modelDir);
        var path = Path.Combine(modelDir, ModelFolder.WeightsFile);
        if (File.Exists(path))
        {
            log?.Invoke($"weights: {path}");
            var w = HfWeights.Load(path, ps, out var unused);
            foreach (var u in unused) log?.Invoke($"warning: '{u}' in {path} is not a parameter of the model");
            return w;
        }
        var hf = ModelFolder.ReadConfig(modelDir);
        var kind = For(hf);
        log?.Invoke($"weights: {hf.ModelType} initialisation from seed {seed} (no {ModelFolder.WeightsFile} in {modelDir})");
        return kind.Initialize(ps, kind.ReadConfig(hf), seed);
    }

    /// <summary>Loads a model folder with weights for inference (text generation or forecasting); the caller disposes it.</summary>
    public static LoadedModel Load(string modelDir, SessionSettings? settings = null) => Read(modelDir).Kind.Load(modelDir, settings);

    /// <summary>A model folder opened as the shared base of LoRA adapters, by its kind (see <see cref="IModelKind.OpenAdapters"/>); the caller disposes it.</summary>
    public static Inference.Lora.AdapterSet OpenAdapters(string modelDir, SessionSettings? settings = null) => Read(modelDir).Kind.OpenAdapters(modelDir, settings);

    /// <summary>The tokenizer datasets for <paramref name="modelDir"/> are made with (<see cref="Preprocessor"/>); refused for kinds that do not train on tokenized text.</summary>
    public static IDocumentTokenizer DocumentTokenizer(string modelDir)
    {
        var (kind, _) = Read(modelDir);
        return kind.DocumentTokenizer(modelDir)
            ?? throw new ArgumentException($"'{modelDir}' is a {kind.ModelTypes[0]} model, which does not train on documents tokenized ahead; give a causal LM folder (e.g. models/gpt2-mini) as --tokenizer.");
    }

    /// <summary>Built-in configs for <c>export --preset</c>, by name.</summary>
    public static IReadOnlyDictionary<string, object> Presets { get; } = new SortedDictionary<string, object>(StringComparer.Ordinal)
    {
        ["gpt2-mini"] = Gpt2Kind.Mini,
    };

    /// <summary>The default model folders committed under models/, by folder name (graphs and config; no weights).</summary>
    public static IReadOnlyDictionary<string, object> Defaults { get; } = new SortedDictionary<string, object>(StringComparer.Ordinal)
    {
        ["gpt2-mini"] = Gpt2Kind.Mini,
        ["mlp-digits"] = new MlpConfig(),
    };
}
