using Optimum.Inference.Quantization;
using System.Threading.RateLimiting;
using Optimum.Hub;
using Optimum.Inference;
using Optimum.Inference.Diffusion;
using Optimum.Inference.Forecasting;
using Optimum.Inference.Lora;
using Optimum.Core;
using Optimum.Models;

namespace Optimum.Server;

/// <summary>The three kinds of route a served model can answer; a request for one kind never reaches a model of another.</summary>
public enum ServedKind
{
    /// <summary>/v1/completions: causal-lm or seq2seq.</summary>
    Language,
    /// <summary>/v1/forecast.</summary>
    Forecaster,
    /// <summary>/v1/images/generations.</summary>
    ImageGenerator,
}

/// <summary>
/// The served models, loaded once at start-up; owns their sessions. Language models (config.json model_type
/// gpt2 or t5) serve /v1/completions; forecasters (time_series_transformer or informer) serve /v1/forecast;
/// diffusion UNets (UNet2DModel) serve /v1/images/generations. LoRA adapters (<see cref="ServerOptions.Adapters"/>) are
/// served as language models of their own names over their base's one copy of the weights.
/// </summary>
public sealed class ModelRegistry : IDisposable
{
    private readonly List<string> _names = [];
    private readonly Dictionary<string, TextGenerator> _generators = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _precision = new(StringComparer.Ordinal);
    private readonly Dictionary<string, BatchScheduler> _schedulers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Served<Forecaster>> _forecasters = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Served<ImageGenerator>> _images = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (string Base, AdapterInfo Info)> _adapters = new(StringComparer.Ordinal);
    private readonly List<IDisposable> _owned = [];

    public ModelRegistry(ServerOptions o)
    {
        o.Validate();
        try { Load(o); }
        catch
        {
            // Models loaded before the one that failed hold native sessions: release them.
            foreach (var d in _owned) d.Dispose();
            throw;
        }
        Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    }

    private void Load(ServerOptions o)
    {
        var settings = new SessionSettings { IntraOpThreads = o.Threads, Device = ExecutionDevice.Parse(o.Device, $"{ServerOptions.Section}:{nameof(ServerOptions.Device)}") };
        settings.Device.EnsureAvailable();     // a configured device this build lacks fails the start once, before any model is read
        foreach (var spec in o.Models)
        {
            var (name, path) = (spec.Name, spec.Folder);
            if (_names.Contains(name)) throw new InvalidOperationException($"Two models are named '{name}'; name them with name=path.");
            var adapters = o.Adapters.Where(a => a.Base == name).ToArray();
            LoadedModel model;
            AdapterSet? set = null;
            string precision;
            try
            {
                // Read first, inside the try: a bad optimum.quantization section is named with the model.
                precision = ModelQuantizer.PrecisionOf(path).Wire();
                if (adapters.Length == 0) model = ModelKinds.Load(path, settings);
                else
                {
                    // The base's weights are loaded once, into the set, and shared by the base and every adapter over it.
                    set = ModelKinds.OpenAdapters(path, settings);
                    _owned.Add(set);
                    model = set.LoadBase();
                }
            }
            catch (Exception e) when (ExpectedErrors.Are(e))
            {
                throw new InvalidDataException($"Model '{name}' ('{path}') cannot be served: {e.Message}", e);
            }
            _owned.Add(model);
            _precision[name] = precision;
            if (model.Forecaster is { } forecaster)
            {
                CheckForecasts(forecaster, name, path);
                var f = new Served<Forecaster>(forecaster, o.QueueLimit);
                _owned.Add(f.Turn);
                _forecasters[name] = f;
            }
            else if (model.Images is { } images)
            {
                // Served images are PNGs: grayscale or RGB only (a latent-space UNet needs a VAE this service does not have).
                if (images.Channels is not (1 or 3))
                    throw new InvalidOperationException($"Model '{name}' ('{path}') makes images of {images.Channels} channels; /v1/images/generations returns PNGs, which take 1 (grayscale) or 3 (RGB).");
                var g = new Served<ImageGenerator>(images, o.QueueLimit);
                _owned.Add(g.Turn);
                _images[name] = g;
            }
            else AddGenerator(name, path, model, o);
            _names.Add(name);
            foreach (var a in adapters)
            {
                LoadedModel adapter;
                try { adapter = set!.LoadAdapter(a.Folder); }
                catch (Exception e) when (ExpectedErrors.Are(e))
                {
                    throw new InvalidDataException($"Adapter '{a.Name}' ('{a.Folder}') over '{name}' cannot be served: {e.Message}", e);
                }
                _owned.Add(adapter);
                AddGenerator(a.Name, a.Folder, adapter, o);
                _adapters[a.Name] = (name, adapter.Generator!.CausalModel!.Adapter!);
                _precision[a.Name] = _precision[name];
                _names.Add(a.Name);
            }
        }
    }

    private void AddGenerator(string name, string path, LoadedModel model, ServerOptions o)
    {
        var generator = model.Generator ?? throw new InvalidOperationException($"Model '{name}' ('{path}') is of kind '{model.Task.WireName()}', which this service does not serve.");
        // One batch of MaxConcurrent rows per model: the slots admit that many completions at once. A T5 folder
        // exported before its decoder took decoder_attention_mask generates one request per slot.
        var scheduler = !o.ContinuousBatching ? null
            : generator.CausalModel is { } lm ? new BatchScheduler(lm, o.MaxConcurrent)
            : generator.Seq2SeqModel is { MasksDecoder: true } t5 ? new BatchScheduler(t5, o.MaxConcurrent)
            : null;
        if (scheduler is not null)
        {
            _owned.Insert(_owned.Count - 1, scheduler);                 // disposed before the model it runs
            generator = generator.With(scheduler.Generate);
            _schedulers[name] = scheduler;
        }
        _generators[name] = generator;
    }

    /// <summary>
    /// A forecaster must forecast a plain series (ones, zero features) within float32: one that cannot has broken weights
    /// and is refused now, so that a forecast leaving float32's range later is the request's fault (a 422), not the model's.
    /// </summary>
    private static void CheckForecasts(Forecaster f, string name, string path)
    {
        var plain = new SeriesInput
        {
            Values = Enumerable.Repeat(1f, f.MinHistory).ToArray(),
            TimeFeatures = f.TimeFeatureCount > 0 ? new float[(f.MinHistory + f.PredictionLength) * f.TimeFeatureCount] : null,
            StaticCategorical = f.StaticCategoricalCount > 0 ? new long[f.StaticCategoricalCount] : null,
            StaticReal = f.StaticRealCount > 0 ? new float[f.StaticRealCount] : null,
        };
        try { f.Predict([plain], new ForecastOptions { Samples = 1 }); }
        catch (ForecastOverflowException e)
        {
            throw new InvalidOperationException($"Model '{name}' ('{path}') cannot forecast a plain series (ones) within float32, so its weights are broken: {e.Message}", e);
        }
    }

    public long Created { get; }
    /// <summary>Every served model, in the order they were configured.</summary>
    public IReadOnlyList<string> Names => _names;
    /// <summary>The first language model: /v1/completions without "model" uses it (null when none is served).</summary>
    public string? DefaultGenerator => _names.FirstOrDefault(_generators.ContainsKey);
    /// <summary>The first forecaster: /v1/forecast without "model" uses it (null when none is served).</summary>
    public string? DefaultForecaster => _names.FirstOrDefault(_forecasters.ContainsKey);
    /// <summary>The first image generator: /v1/images/generations without "model" uses it (null when none is served).</summary>
    public string? DefaultImageGenerator => _names.FirstOrDefault(_images.ContainsKey);
    /// <summary>The first served model of <paramref name="kind"/> (null when none is served).</summary>
    public string? DefaultOf(ServedKind kind) => kind switch
    {
        ServedKind.Language => DefaultGenerator,
        ServedKind.Forecaster => DefaultForecaster,
        _ => DefaultImageGenerator,
    };
    public bool Contains(string name) => _generators.ContainsKey(name) || _forecasters.ContainsKey(name) || _images.ContainsKey(name);
    /// <summary>The route kind of a served model.</summary>
    public ServedKind ServedKindOf(string name) =>
        _forecasters.ContainsKey(name) ? ServedKind.Forecaster : _images.ContainsKey(name) ? ServedKind.ImageGenerator
        : _generators.ContainsKey(name) ? ServedKind.Language : throw new KeyNotFoundException($"Model '{name}' is not served.");
    /// <summary>"causal-lm", "seq2seq", "forecaster" or "image-generation".</summary>
    public string KindOf(string name) => (_forecasters.ContainsKey(name) ? ModelTask.Forecasting
        : _images.ContainsKey(name) ? ModelTask.ImageGeneration : _generators[name].Task).WireName();
    /// <summary>The precision of a served model's matrix weights: "fp32", or "int8"/"int4" for a quantized folder.</summary>
    public string PrecisionOf(string name) => _precision[name];
    /// <summary>A LoRA adapter served over a base: the base's served name and the adapter's settings (false for other models).</summary>
    public bool TryGetAdapter(string name, out (string Base, AdapterInfo Info) adapter) => _adapters.TryGetValue(name, out adapter);
    public bool TryGet(string name, out TextGenerator generator) => _generators.TryGetValue(name, out generator!);
    /// <summary>The continuous batch a language model's completions share (none with batching off); owned by the registry.</summary>
    public bool TryGetScheduler(string name, out BatchScheduler scheduler) => _schedulers.TryGetValue(name, out scheduler!);
    public bool TryGetForecaster(string name, out Served<Forecaster> forecaster) => _forecasters.TryGetValue(name, out forecaster!);
    public bool TryGetImageGenerator(string name, out Served<ImageGenerator> images) => _images.TryGetValue(name, out images!);

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
    }
}

/// <summary>
/// A model that runs one request at a time and its turn: requests wait for the single permit of <see cref="Turn"/>
/// (at most the server's queue limit of them; more get 429). A <see cref="Forecaster"/> must (it takes one call at a
/// time); an <see cref="ImageGenerator"/> could run concurrently, but every UNet run already uses all of the model's
/// intra-op threads, so two requests at once would only share them and both finish late. The registry disposes the
/// model and the turn.
/// </summary>
public sealed class Served<TModel>(TModel model, int queueLimit)
{
    public TModel Model { get; } = model;
    public ConcurrencyLimiter Turn { get; } = new(new ConcurrencyLimiterOptions { PermitLimit = 1, QueueLimit = queueLimit, QueueProcessingOrder = QueueProcessingOrder.OldestFirst });
}
