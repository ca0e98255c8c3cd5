using Microsoft.ML.OnnxRuntime;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Hub.Lora;
using Optimum.Onnx.Lora;
using Optimum.Onnx.Proto;

namespace Optimum.Inference.Lora;

/// <summary>What a served LoRA adapter is: its folder and PEFT settings, and the adapted modules.</summary>
public sealed record AdapterInfo(string Dir, LoraConfig Config, IReadOnlyList<LoraModule> Modules)
{
    /// <summary>The targets as adapter_config.json gives them (a list, or one regex).</summary>
    public IReadOnlyList<string> Targets => Config.TargetModulesRegex is { } re ? [re] : Config.TargetModules;
}

/// <summary>
/// One base causal LM folder whose weights are loaded once, into <see cref="SharedWeights"/>, and served as the base and as
/// any number of LoRA adapters (PEFT folders) over it: each adapter is a session over the base's decoder graph with the
/// adapter's branches added (<see cref="AdapterGraph"/>) and the base weights from the shared buffer, so an adapter costs
/// its own A and B and its session's working memory, not a copy of the base.
/// <code>
/// using var host = AdapterHost.Open("models/gpt2-mini");
/// using var lm = host.OpenAdapter("runs/lora/adapter");
/// var text = new TextGenerator(lm, Gpt2Tokenizer.Create()).Complete("Call me", new GenerationOptions { MaxNewTokens = 20 });
/// </code>
/// Thread-safe. The host and every model it opened are disposed by the caller, in any order: the shared buffer goes with the last.
/// </summary>
public sealed class AdapterHost : IDisposable
{
    private readonly SharedWeights _weights;
    private readonly byte[] _graph;
    private readonly SessionSettings _settings;

    private AdapterHost(string dir, SharedWeights weights, byte[] graph, SessionSettings settings) =>
        (BaseDir, _weights, _graph, _settings) = (dir, weights, graph, settings);

    /// <summary>
    /// Loads the base folder's weights (model.safetensors) into one shared buffer; a folder without a KV-cache decoder is refused.
    /// <paramref name="sharePrePacked"/>: see <see cref="SharedWeights(string, bool)"/>.
    /// </summary>
    public static AdapterHost Open(string baseDir, SessionSettings? settings = null, bool sharePrePacked = true)
    {
        if (!Directory.Exists(baseDir)) throw new DirectoryNotFoundException($"Base model folder '{baseDir}' does not exist.");
        var path = CausalLm.InferencePath(baseDir);
        var graph = File.ReadAllBytes(path);
        Parse(graph, path);
        return new AdapterHost(baseDir, new SharedWeights(baseDir, sharePrePacked), graph, settings ?? new SessionSettings());
    }

    public string BaseDir { get; }
    /// <summary>The shared base weights (bytes held once, whatever the number of models opened).</summary>
    public SharedWeights Weights => _weights;

    /// <summary>The base model itself over the shared weights; dispose it.</summary>
    public CausalLm OpenBase() => Open(Parse(_graph, BaseDir), null);

    /// <summary>
    /// Reads the PEFT adapter folder <paramref name="adapterDir"/> (adapter_config.json, adapter_model.safetensors) and opens
    /// the base with it; dispose the result. A missing folder or file, a target that matches no linear layer of the base, or
    /// a tensor whose shape does not fit its base module is refused naming the file and tensor.
    /// </summary>
    public CausalLm OpenAdapter(string adapterDir)
    {
        var (model, info) = AdapterModel(adapterDir, out _);
        return Open(model, info);
    }

    /// <summary>The base's decoder graph with <paramref name="adapterDir"/>'s LoRA branches (parameters still graph inputs) and the adapter read.</summary>
    public (ModelProto Model, AdapterInfo Info) AdapterModel(string adapterDir, out LoraAdapter adapter)
    {
        if (!Directory.Exists(adapterDir)) throw new DirectoryNotFoundException($"Adapter folder '{adapterDir}' does not exist.");
        var config = LoraAdapter.ReadConfig(adapterDir);
        var model = Parse(_graph, BaseDir);
        var source = $"adapter '{adapterDir}' over '{BaseDir}'";
        var modules = AdapterGraph.Modules(model.Graph, _weights.Parameters, config, source);
        adapter = LoraAdapter.Load(adapterDir, modules, config);
        AdapterGraph.Apply(model, _weights.Parameters, adapter, source);
        return (model, new AdapterInfo(adapterDir, config, modules));
    }

    private CausalLm Open(ModelProto model, AdapterInfo? info)
    {
        using var options = _settings.CreateOptions();
        return new CausalLm(BaseDir, () => _weights.Open(model, options), _weights.Release, info, _settings);
    }

    private static ModelProto Parse(byte[] bytes, string path)
    {
        try { return ModelProto.Parser.ParseFrom(bytes); }
        catch (Google.Protobuf.InvalidProtocolBufferException e) { throw new InvalidDataException($"'{path}' is not a readable ONNX model (truncated or corrupted?): {e.Message}", e); }
    }

    /// <summary>Gives up the host's hold on the shared weights (models still open keep them).</summary>
    public void Dispose() => _weights.Dispose();
}
