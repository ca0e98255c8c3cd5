namespace Optimum.Models;

/// <summary>
/// One model family, everything the rest of the project needs of it: its typed config, its graphs and
/// model folder, initialisation, HF import/export, its training data and its inference loader. The CLI,
/// the trainer, the server and the benches find a kind through <see cref="ModelKinds"/> by config.json's
/// <c>model_type</c> and never branch on the type themselves. Implement <see cref="ModelKind{TConfig}"/>.
/// </summary>
public interface IModelKind
{
    /// <summary>The config.json <c>model_type</c> values this kind reads (e.g. "gpt2").</summary>
    IReadOnlyList<string> ModelTypes { get; }
    /// <summary>The typed config record (e.g. <see cref="Gpt2Config"/>).</summary>
    Type ConfigType { get; }
    /// <summary>What the training files are, for help and error messages (e.g. "text files").</summary>
    string TrainingData { get; }
    /// <summary>Throughput unit of its training progress ("tok/s", "windows/s").</summary>
    string ThroughputUnit { get; }
    /// <summary>Whether its training data is cut into windows of <see cref="DataOptions.SeqLen"/> tokens (causal LMs); other kinds refuse a sequence length.</summary>
    bool CutsWindows { get; }

    /// <summary>The typed config of an HF config.json; unsupported values are refused naming the field.</summary>
    object ReadConfig(HfConfig config);
    /// <summary>The HF config.json document of a typed config (unknown keys of its source kept).</summary>
    JsonObject ToHf(object config);
    /// <summary>Writes config.json and the graphs of a model folder (no weights).</summary>
    void Write(string dir, object config);
    /// <summary>On export, before <see cref="Write"/>: copies what the kind reads beside config.json from an HF/diffusers folder into the model folder (a UNet's scheduler_config.json); most kinds copy nothing.</summary>
    void ImportFiles(string hfDir, string modelDir);
    /// <summary>The inverse, when trained weights are written as an HF/diffusers folder: copies those files from the model folder into it.</summary>
    void ExportFiles(string modelDir, string hfDir);
    /// <summary>Initial weights in parameter order, as transformers initialises them, deterministic in the seed.</summary>
    float[][] Initialize(IReadOnlyList<ParameterInfo> parameters, object config, int seed);
    /// <summary>The training batches of <paramref name="options"/>' files, validated against the model; <paramref name="say"/> reports.</summary>
    IBatchSource OpenTrainingData(DataOptions options, object config, Action<string> say);
    /// <summary>Writes what inference needs of the data beside trained weights (e.g. series names); most kinds write nothing.</summary>
    void SaveDataFiles(IBatchSource data, string dir);
    /// <summary>The tokenizer that datasets for a model folder of this kind are made with (<c>optimum-net preprocess</c>), or null when the kind does not train on tokenized text.</summary>
    IDocumentTokenizer? DocumentTokenizer(string modelDir);
    /// <summary>Loads a model folder with weights for inference; the caller disposes the result.</summary>
    LoadedModel Load(string dir, SessionSettings? settings = null);
    /// <summary>
    /// Opens a model folder as the shared base of LoRA adapters (its weights loaded once, for the base and every adapter);
    /// the caller disposes the set. Kinds whose inference does not take adapters refuse naming the kind.
    /// </summary>
    Inference.Lora.AdapterSet OpenAdapters(string dir, SessionSettings? settings = null);
    /// <summary>The definition its training and eval graphs are built from (what LoRA runs transform), or null for a kind that does not expose it.</summary>
    Func<GraphBuilder, bool, ModelOutputs>? Define(object config);
}

/// <summary>The typed base of a model kind: implement the members over <typeparamref name="TConfig"/>.</summary>
public abstract class ModelKind<TConfig> : IModelKind where TConfig : class, IHfConfig<TConfig>
{
    public abstract IReadOnlyList<string> ModelTypes { get; }
    public Type ConfigType => typeof(TConfig);
    public virtual string TrainingData => "no training files (not trainable from the command line)";
    public virtual string ThroughputUnit => "tok/s";
    public virtual bool CutsWindows => false;

    public TConfig ReadConfig(HfConfig config) => TConfig.FromHf(config);
    public JsonObject ToHf(TConfig config) => config.ToHf();
    public abstract void Write(string dir, TConfig config);
    public abstract float[][] Initialize(IReadOnlyList<ParameterInfo> parameters, TConfig config, int seed);

    public virtual IBatchSource OpenTrainingData(DataOptions options, TConfig config, Action<string> say) =>
        throw new NotSupportedException($"{options.ModelDir}: {ModelTypes[0]} models cannot be trained from files here.");

    public virtual void SaveDataFiles(IBatchSource data, string dir) { }

    public virtual IDocumentTokenizer? DocumentTokenizer(string modelDir) => null;

    public virtual void ImportFiles(string hfDir, string modelDir) { }

    /// <summary>The training/eval definition (null: LoRA training is not offered for the kind).</summary>
    public virtual Func<GraphBuilder, bool, ModelOutputs>? Define(TConfig config) => null;

    public virtual void ExportFiles(string modelDir, string hfDir) { }

    public virtual LoadedModel Load(string dir, SessionSettings? settings = null) =>
        throw new NotSupportedException($"{dir}: {ModelTypes[0]} models have no inference loader (nothing to serve or generate).");

    public virtual Inference.Lora.AdapterSet OpenAdapters(string dir, SessionSettings? settings = null) =>
        throw new NotSupportedException($"{dir}: {ModelTypes[0]} models cannot serve LoRA adapters (gpt2 models can).");

    private TConfig Typed(object config) => config as TConfig
        ?? throw new ArgumentException($"A {ModelTypes[0]} model needs a {typeof(TConfig).Name}, got {config.GetType().Name}.", nameof(config));

    object IModelKind.ReadConfig(HfConfig config) => ReadConfig(config);
    JsonObject IModelKind.ToHf(object config) => ToHf(Typed(config));
    void IModelKind.Write(string dir, object config) => Write(dir, Typed(config));
    float[][] IModelKind.Initialize(IReadOnlyList<ParameterInfo> parameters, object config, int seed) => Initialize(parameters, Typed(config), seed);
    Func<GraphBuilder, bool, ModelOutputs>? IModelKind.Define(object config) => Define(Typed(config));
    IBatchSource IModelKind.OpenTrainingData(DataOptions options, object config, Action<string> say) => OpenTrainingData(options, Typed(config), say);
}
