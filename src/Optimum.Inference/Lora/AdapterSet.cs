namespace Optimum.Inference.Lora;

/// <summary>
/// A base model folder opened for serving LoRA adapters over it, as its kind serves text: the base and each adapter as a
/// <see cref="LoadedModel"/> (a <see cref="TextGenerator"/> made by the kind's <c>generator</c>) over the one
/// <see cref="AdapterHost"/>. Dispose the set and every model it loaded (any order; the shared weights go with the last).
/// </summary>
public sealed class AdapterSet(AdapterHost host, Func<CausalLm, TextGenerator> generator) : IDisposable
{
    public AdapterHost Host { get; } = host;

    /// <summary>The base model over the shared weights; dispose it.</summary>
    public LoadedModel LoadBase() => Wrap(Host.OpenBase(), Host.BaseDir);

    /// <summary>The PEFT adapter folder <paramref name="adapterDir"/> over the base (see <see cref="AdapterHost.OpenAdapter"/>); dispose it.</summary>
    public LoadedModel LoadAdapter(string adapterDir) => Wrap(Host.OpenAdapter(adapterDir), adapterDir);

    private LoadedModel Wrap(CausalLm lm, string dir)
    {
        try { return new LoadedModel(dir, generator(lm), lm); }
        catch
        {
            lm.Dispose();
            throw;
        }
    }

    public void Dispose() => Host.Dispose();
}
