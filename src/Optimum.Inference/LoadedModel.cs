using Optimum.Inference.Forecasting;

namespace Optimum.Inference;

/// <summary>What a served model does: the endpoint and the wire name (<c>/v1/models</c>' "kind").</summary>
public enum ModelTask
{
    /// <summary>Continues a prompt ("causal-lm").</summary>
    CausalLm,
    /// <summary>Maps a source text to a target text ("seq2seq").</summary>
    Seq2Seq,
    /// <summary>Probabilistic forecasts of series ("forecaster").</summary>
    Forecasting,
}

public static class ModelTaskNames
{
    /// <summary>The name used on the wire and in messages.</summary>
    public static string WireName(this ModelTask t) => t switch
    {
        ModelTask.CausalLm => "causal-lm",
        ModelTask.Seq2Seq => "seq2seq",
        ModelTask.Forecasting => "forecaster",
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, null),
    };
}

/// <summary>
/// A model folder loaded for inference by its kind: a text generator (causal or seq2seq) or a forecaster.
/// Owns the sessions behind it; dispose it.
/// </summary>
public sealed class LoadedModel : IDisposable
{
    private readonly IDisposable _owner;

    /// <summary>A language model: <paramref name="owner"/> holds the sessions behind <paramref name="generator"/>.</summary>
    public LoadedModel(string dir, TextGenerator generator, IDisposable owner)
    {
        (Dir, Generator, _owner) = (dir, generator, owner);
        Task = generator.Task;
    }

    /// <summary>A forecaster (owned).</summary>
    public LoadedModel(string dir, Forecaster forecaster)
    {
        (Dir, Forecaster, _owner) = (dir, forecaster, forecaster);
        Task = ModelTask.Forecasting;
    }

    public string Dir { get; }
    public ModelTask Task { get; }
    /// <summary>Set for language models.</summary>
    public TextGenerator? Generator { get; }
    /// <summary>Set for forecasting models.</summary>
    public Forecaster? Forecaster { get; }

    public void Dispose() => _owner.Dispose();
}
