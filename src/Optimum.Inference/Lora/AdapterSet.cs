using Optimum.Core;

namespace Optimum.Inference.Lora;

/// <summary>
/// A base model folder opened for serving LoRA adapters over it, as its kind serves text: the base and each adapter as a
/// <see cref="LoadedModel"/> (a <see cref="TextGenerator"/> made by the kind's <c>generator</c>) over the one
/// <see cref="AdapterHost"/>. Dispose the set and every model it loaded (any order; the shared weights go with the last).
/// </summary>
/// <code>
/// using var set = AdapterSet.OpenGpt2("models/gpt2");
/// using var pirate = set.LoadAdapter("runs/pirate/adapter");
/// var text = pirate.Generator!.Complete("Call me", new GenerationOptions { MaxNewTokens = 20 }).Text;
/// </code>
public sealed class AdapterSet(AdapterHost host, Func<CausalLm, TextGenerator> generator) : IDisposable
{
    public AdapterHost Host { get; } = host;

    /// <summary>A GPT-2 base folder (KV-cache decoder, GPT-2's BPE) whose adapters generate text; dispose it.</summary>
    public static AdapterSet OpenGpt2(string baseDir, SessionSettings? settings = null)
    {
        var tokenizer = Optimum.Hub.Gpt2Tokenizer.Create();
        return new(AdapterHost.Open(baseDir, settings), lm => new TextGenerator(lm, tokenizer));
    }

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
