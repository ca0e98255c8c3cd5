using Optimum.Hub;
using Optimum.Inference;
using Optimum.Training;

namespace Optimum.Server;

/// <summary>The served models, loaded once at start-up; owns their sessions.</summary>
public sealed class ModelRegistry : IDisposable
{
    private readonly Dictionary<string, (TextGenerator Generator, CausalLm Lm)> _models = new(StringComparer.Ordinal);

    public ModelRegistry(ServerOptions o)
    {
        o.Validate();
        var tokenizer = Gpt2Tokenizer.Create();
        foreach (var spec in o.Models)
        {
            var (name, path) = spec.Contains('=') ? (spec[..spec.IndexOf('=')], spec[(spec.IndexOf('=') + 1)..]) : (Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(spec))), spec);
            if (_models.ContainsKey(name)) throw new InvalidOperationException($"Two models are named '{name}'; name them with name=path.");
            var lm = new CausalLm(path, settings: new SessionSettings { IntraOpThreads = o.Threads });
            _models[name] = (new TextGenerator(lm, tokenizer), lm);
        }
        Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    }

    public long Created { get; }
    public IReadOnlyCollection<string> Names => _models.Keys;
    public string Default => _models.Keys.First();
    public bool TryGet(string name, out TextGenerator generator)
    {
        var ok = _models.TryGetValue(name, out var m);
        generator = m.Generator;
        return ok;
    }

    public void Dispose()
    {
        foreach (var (_, lm) in _models.Values) lm.Dispose();
    }
}
