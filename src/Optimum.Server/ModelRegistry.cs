using Optimum.Hub;
using Optimum.Inference;
using Optimum.Training;

namespace Optimum.Server;

/// <summary>The served models, loaded once at start-up; owns their sessions.</summary>
public sealed class ModelRegistry : IDisposable
{
    private readonly Dictionary<string, TextGenerator> _models = new(StringComparer.Ordinal);
    private readonly List<IDisposable> _owned = [];

    public ModelRegistry(ServerOptions o)
    {
        o.Validate();
        foreach (var spec in o.Models)
        {
            var (name, path) = spec.Contains('=') ? (spec[..spec.IndexOf('=')], spec[(spec.IndexOf('=') + 1)..]) : (Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(spec))), spec);
            if (_models.ContainsKey(name)) throw new InvalidOperationException($"Two models are named '{name}'; name them with name=path.");
            var settings = new SessionSettings { IntraOpThreads = o.Threads };
            var kind = ModelFolder.ReadConfig(path).ModelType;
            if (kind == "t5")
            {
                var lm = new Seq2SeqLm(path, settings: settings);
                _owned.Add(lm);
                var tok = PairTokenizers.Load(path);
                _models[name] = TextGenerator.ForSeq2Seq(lm, tok.EncodeSource, ids => tok.DecodeTarget(ids));
            }
            else
            {
                var lm = new CausalLm(path, settings: settings);
                _owned.Add(lm);
                _models[name] = new TextGenerator(lm, Gpt2Tokenizer.Create());
            }
        }
        Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    }

    public long Created { get; }
    public IReadOnlyCollection<string> Names => _models.Keys;
    public string Default => _models.Keys.First();
    public string KindOf(string name) => _models[name].Kind;
    public bool TryGet(string name, out TextGenerator generator) => _models.TryGetValue(name, out generator!);

    public void Dispose()
    {
        foreach (var d in _owned) d.Dispose();
    }
}
