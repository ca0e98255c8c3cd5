using System.Threading.RateLimiting;
using Optimum.Hub;
using Optimum.Inference;
using Optimum.Inference.Forecasting;
using Optimum.Core;
using Optimum.Models;

namespace Optimum.Server;

/// <summary>
/// The served models, loaded once at start-up; owns their sessions. Language models (config.json model_type
/// gpt2 or t5) serve /v1/completions; forecasters (time_series_transformer or informer) serve /v1/forecast.
/// </summary>
public sealed class ModelRegistry : IDisposable
{
    private readonly List<string> _names = [];
    private readonly Dictionary<string, TextGenerator> _generators = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ServedForecaster> _forecasters = new(StringComparer.Ordinal);
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
        foreach (var spec in o.Models)
        {
            var (name, path) = (spec.Name, spec.Folder);
            if (_names.Contains(name)) throw new InvalidOperationException($"Two models are named '{name}'; name them with name=path.");
            var model = ModelKinds.Load(path, new SessionSettings { IntraOpThreads = o.Threads });
            _owned.Add(model);
            if (model.Forecaster is { } forecaster)
            {
                var f = new ServedForecaster(forecaster, o.QueueLimit);
                _owned.Add(f.Turn);
                _forecasters[name] = f;
            }
            else _generators[name] = model.Generator!;
            _names.Add(name);
        }
    }

    public long Created { get; }
    /// <summary>Every served model, in the order they were configured.</summary>
    public IReadOnlyList<string> Names => _names;
    /// <summary>The first language model: /v1/completions without "model" uses it (null when only forecasters are served).</summary>
    public string? DefaultGenerator => _names.FirstOrDefault(_generators.ContainsKey);
    /// <summary>The first forecaster: /v1/forecast without "model" uses it (null when none is served).</summary>
    public string? DefaultForecaster => _names.FirstOrDefault(_forecasters.ContainsKey);
    public bool Contains(string name) => _generators.ContainsKey(name) || _forecasters.ContainsKey(name);
    public bool IsForecaster(string name) => _forecasters.ContainsKey(name);
    /// <summary>"causal-lm", "seq2seq" or "forecaster".</summary>
    public string KindOf(string name) => (_forecasters.ContainsKey(name) ? ModelTask.Forecasting : _generators[name].Task).WireName();
    public bool TryGet(string name, out TextGenerator generator) => _generators.TryGetValue(name, out generator!);
    public bool TryGetForecaster(string name, out ServedForecaster forecaster) => _forecasters.TryGetValue(name, out forecaster!);

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
    }
}

/// <summary>
/// A forecaster and its turn: a <see cref="Forecaster"/> runs one call at a time, so its requests wait for
/// the single permit of <see cref="Turn"/> (at most the server's queue limit of them; more get 429).
/// The registry disposes the model and the turn.
/// </summary>
public sealed class ServedForecaster(Forecaster model, int queueLimit)
{
    public Forecaster Model { get; } = model;
    public ConcurrencyLimiter Turn { get; } = new(new ConcurrencyLimiterOptions { PermitLimit = 1, QueueLimit = queueLimit, QueueProcessingOrder = QueueProcessingOrder.OldestFirst });
}
