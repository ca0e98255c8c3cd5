using Optimum.Inference.Diffusion;
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
    /// <summary>Samples images with a diffusion UNet ("image-generation").</summary>
    ImageGeneration,
}

public static class ModelTaskNames
{
    /// <summary>The name used on the wire and in messages.</summary>
    public static string WireName(this ModelTask t) => t switch
    {
        ModelTask.CausalLm => "causal-lm",
        ModelTask.Seq2Seq => "seq2seq",
        ModelTask.Forecasting => "forecaster",
        ModelTask.ImageGeneration => "image-generation",
        _ => throw new ArgumentOutOfRangeException(nameof(t), t, null),
    };
}

/// <summary>
/// A model folder loaded for inference by its kind: a text generator (causal or seq2seq), a forecaster or an image generator.
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

    /// <summary>An image generator (owned).</summary>
    public LoadedModel(string dir, ImageGenerator images)
    {
        (Dir, Images, _owner) = (dir, images, images);
        Task = ModelTask.ImageGeneration;
    }

    public string Dir { get; }
    public ModelTask Task { get; }
    /// <summary>Set for language models.</summary>
    public TextGenerator? Generator { get; }
    /// <summary>Set for forecasting models.</summary>
    public Forecaster? Forecaster { get; }
    /// <summary>Set for diffusion models: sample size, channels and classes for /v1/models are on it.</summary>
    public ImageGenerator? Images { get; }

    public void Dispose() => _owner.Dispose();
}
