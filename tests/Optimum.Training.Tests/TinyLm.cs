using Optimum.Core;
using Optimum.Data;
using Optimum.Models;

namespace Optimum.Training.Tests;

/// <summary>The tiny GPT-2 (vocabulary 61, 2 layers, width 16) and token stream that the trainer's tests share.</summary>
internal static class TinyLm
{
    /// <summary>The config; <paramref name="dropout"/> sets embedding and residual dropout (attention dropout stays 0).</summary>
    public static Gpt2Config Config(double dropout = 0) => new()
    {
        VocabSize = 61, NPositions = 16, NEmbd = 16, NLayer = 2, NHead = 2, EmbdPdrop = dropout, AttnPdrop = 0, ResidPdrop = dropout,
    };

    /// <summary>The model folder <paramref name="root"/>/<paramref name="name"/> of <paramref name="config"/>, written on first use.</summary>
    public static string Folder(string root, Gpt2Config config, string name = "gpt2")
    {
        var dir = Path.Combine(root, name);
        if (!Directory.Exists(dir)) ModelKinds.Write(dir, config);
        return dir;
    }

    /// <summary>3,000 tokens, mostly a cycle of step 5 with 20% random ones, in windows of 12 (10% validation).</summary>
    public static LmData Data()
    {
        var rng = new Random(2);
        return new LmData(Enumerable.Range(0, 3000).Select(i => rng.NextDouble() < 0.2 ? rng.Next(61) : (i * 5) % 61).ToArray(), 12, 0.1);
    }
}
