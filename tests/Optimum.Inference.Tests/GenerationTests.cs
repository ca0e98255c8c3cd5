using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Optimum.Core;

namespace Optimum.Inference.Tests;

/// <summary>Generation over the KV-cache decoder: the gpt2-tiny fixture, strategies, batching, streaming.</summary>
public sealed class GenerationTests : IClassFixture<GenerationTests.Fixture>
{
    public sealed class Fixture : IDisposable
    {
        public readonly string Dir = Repo.TempDir();
        public readonly CausalLm Lm;
        public readonly IReadOnlyDictionary<string, SafeTensor> Expected;

        public Fixture()
        {
            var hf = Repo.Fixture("gpt2-tiny");
            ModelKinds.Export(hf, Path.Combine(Dir, "gpt2-tiny"));
            Lm = new CausalLm(Path.Combine(Dir, "gpt2-tiny"));
            Expected = SafeTensorsFile.ReadAll(Path.Combine(hf, "expected.safetensors"));
        }

        public void Dispose()
        {
            Lm.Dispose();
            Directory.Delete(Dir, true);
        }
    }

    private readonly Fixture _f;
    public GenerationTests(Fixture f) => _f = f;

    private int[] Prompt => _f.Expected["generate.prompt"].ToInt64s().Select(t => (int)t).ToArray();
    private IReadOnlyList<int> Run(GenerationOptions o, IReadOnlyList<int>? prompt = null) => Generator.Generate(_f.Lm, [prompt ?? Prompt], o)[0].Tokens;

    [Fact]
    public void Greedy_EqualsTransformersGenerate()
    {
        var expected = _f.Expected["generate.greedy"].ToInt64s().Skip(5).Select(t => (int)t);
        var r = Generator.Generate(_f.Lm, [Prompt], new GenerationOptions { MaxNewTokens = 12 })[0];
        Assert.Equal(expected, r.Tokens);
        Assert.Equal(FinishReason.Length, r.FinishReason);
    }

    [Fact]
    public void DecoderSteps_WithCache_EqualFullForwardLogits()
    {
        var ids = _f.Expected["input_ids"].ToInt64s();
        var full = _f.Expected["logits"].ToFloats();
        int V = _f.Lm.VocabSize;
        using var state = _f.Lm.Start();
        var first = state.Step(ids[..6], [0, 1, 2, 3, 4, 5], [1, 1, 1, 1, 1, 1], 1).ToArray();   // prompt of 6
        Assert.Equal(full.AsSpan(5 * V, V).ToArray(), first, new ToleranceComparer(1e-4));
        for (int t = 6; t < 16; t++)
        {
            var step = state.Step([ids[t]], [t], Enumerable.Repeat(1L, t + 1).ToArray(), 1).ToArray();
            Assert.Equal(full.AsSpan(t * V, V).ToArray(), step, new ToleranceComparer(1e-4));
        }
    }

    [Fact]
    public void LongGreedyGeneration_WithCache_EqualsRerunningTheWholeSequence()
    {
        // 50 new tokens, each step's present outputs chained into the next step's past inputs.
        var cached = Run(new GenerationOptions { MaxNewTokens = 50, EosTokenId = -1 });
        var seq = Prompt.Select(t => (long)t).ToList();
        for (int n = 0; n < 50; n++)
        {
            using var state = _f.Lm.Start();
            var logits = state.Step([.. seq], [.. Enumerable.Range(0, seq.Count).Select(p => (long)p)], [.. Enumerable.Repeat(1L, seq.Count)], 1);
            seq.Add(Sampling.ArgMax(logits));
        }
        Assert.Equal(seq.Skip(Prompt.Length).Select(t => (int)t), cached);
    }

    [Fact]
    public void ArgMax_IsTheFirstLargest_AsAScalarScan()
    {
        var rng = new Random(3);
        foreach (int n in new[] { 1, 7, 8, 17, 64, 1000, 50257 })
        {
            var v = Enumerable.Range(0, n).Select(_ => (float)Math.Round(rng.NextDouble() * 4, 1)).ToArray();   // many ties
            int best = 0;
            for (int k = 1; k < n; k++) if (v[k] > v[best]) best = k;
            Assert.Equal(best, Sampling.ArgMax(v));
        }
        Assert.Equal(0, Sampling.ArgMax([-0f, 0f, -1f]));
        Assert.Equal(1, Sampling.ArgMax([float.MinValue, 0f, -0f]));
    }

    private sealed class ToleranceComparer(double tol) : IEqualityComparer<float>
    {
        public bool Equals(float a, float b) => Math.Abs(a - b) <= tol;
        public int GetHashCode(float x) => 0;
    }

    [Fact]
    public void Sampling_IsReproducibleBySeed_AndTopKOneIsGreedy()
    {
        var greedy = Run(new GenerationOptions { MaxNewTokens = 12 });
        var a = Run(new GenerationOptions { MaxNewTokens = 12, Temperature = 1.5, Seed = 4 });
        Assert.Equal(a, Run(new GenerationOptions { MaxNewTokens = 12, Temperature = 1.5, Seed = 4 }));
        Assert.NotEqual(a, Run(new GenerationOptions { MaxNewTokens = 12, Temperature = 1.5, Seed = 5 }));
        Assert.NotEqual(greedy, a);
        Assert.Equal(greedy, Run(new GenerationOptions { MaxNewTokens = 12, Temperature = 1.5, TopK = 1, Seed = 9 }));
        Assert.Equal(greedy, Run(new GenerationOptions { MaxNewTokens = 12, Temperature = 1.0, TopP = 1e-6, Seed = 9 }));
    }

    [Fact]
    public void BeamSearchWithOneBeam_IsGreedy_AndMoreBeamsScoreAtLeastAsWell()
    {
        var greedy = Run(new GenerationOptions { MaxNewTokens = 10 });
        Assert.Equal(greedy, Run(new GenerationOptions { MaxNewTokens = 10, NumBeams = 1 }));
        var beam = Run(new GenerationOptions { MaxNewTokens = 10, NumBeams = 4 });
        Assert.Equal(10, beam.Count);
        Assert.True(LogProb(beam) >= LogProb(greedy) - 1e-4, $"beam {LogProb(beam)} < greedy {LogProb(greedy)}");
    }

    /// <summary>Sum of log-probabilities of <paramref name="tokens"/> after the prompt, by full forward.</summary>
    private double LogProb(IReadOnlyList<int> tokens)
    {
        using var state = _f.Lm.Start();
        var seq = Prompt.Concat(tokens).Select(t => (long)t).ToArray();
        double total = 0;
        var logits = state.Step(seq[..Prompt.Length], Enumerable.Range(0, Prompt.Length).Select(i => (long)i).ToArray(), Enumerable.Repeat(1L, Prompt.Length).ToArray(), 1).ToArray();
        for (int i = 0; i < tokens.Count; i++)
        {
            double max = logits.Max(), z = Math.Log(logits.Sum(v => Math.Exp(v - max))) + max;
            total += logits[tokens[i]] - z;
            int at = Prompt.Length + i;
            logits = state.Step([seq[at]], [at], Enumerable.Repeat(1L, at + 1).ToArray(), 1).ToArray();
        }
        return total;
    }

    [Fact]
    public void BatchOfPromptsOfDifferentLengths_EqualsEachPromptAlone()
    {
        int[][] prompts = [[5, 61, 2], [40, 7, 7, 93, 11, 0, 3], [100]];
        var o = new GenerationOptions { MaxNewTokens = 6 };
        var batched = Generator.Generate(_f.Lm, prompts, o);
        for (int i = 0; i < prompts.Length; i++) Assert.Equal(Run(o, prompts[i]), batched[i].Tokens);
        var sampled = Generator.Generate(_f.Lm, prompts, o with { Temperature = 1, Seed = 2 });
        Assert.Equal(Run(o with { Temperature = 1, Seed = 2 }, prompts[0]), sampled[0].Tokens);   // row r samples with seed + r
    }

    [Fact]
    public void RepetitionPenalty_FollowsHuggingFace()
    {
        float[] logits = [2f, -1f, 0.5f, 3f];
        Sampling.Penalise(logits, 2.0, [0, 1, 1]);
        Assert.Equal([1f, -2f, 0.5f, 3f], logits);
        var plain = Run(new GenerationOptions { MaxNewTokens = 12 });
        var penalised = Run(new GenerationOptions { MaxNewTokens = 12, RepetitionPenalty = 3 });
        Assert.True(penalised.Distinct().Count() >= plain.Distinct().Count());
    }

    [Fact]
    public void Eos_StopsAndIsNotReturned()
    {
        var o = new GenerationOptions { MaxNewTokens = 12, Temperature = 1.2, Seed = 1 };
        var free = Run(o);
        int at = Enumerable.Range(1, free.Count - 1).First(i => !free.Take(i).Contains(free[i]));   // a token's first appearance
        var r = Generator.Generate(_f.Lm, [Prompt], o with { EosTokenId = free[at] })[0];
        Assert.Equal(free.Take(at), r.Tokens);
        Assert.Equal(FinishReason.Eos, r.FinishReason);
    }

    [Fact]
    public void TooLongAPrompt_IsRefused()
    {
        var e = Assert.Throws<ArgumentException>(() => Run(new GenerationOptions { MaxNewTokens = 60 }));
        Assert.Contains("exceeds the model's 64 positions", e.Message);
    }
}

/// <summary>Beam search on a model whose next-token distribution is fixed, checked by hand.</summary>
public sealed class BeamSearchByHandTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>
    /// A 5-token GPT-2 in <paramref name="dir"/> whose next-token distribution is <paramref name="p"/> at every position, whatever
    /// the context: all weights 0 except ln_f.bias = e0 and wte[:, 0] = log p. The caller disposes it.
    /// </summary>
    internal static CausalLm FixedDistribution(string dir, double[] p)
    {
        var cfg = new Gpt2Config { VocabSize = p.Length, NPositions = 8, NEmbd = 4, NLayer = 1, NHead = 1, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0 };
        ModelKinds.Write(dir, cfg);
        var ps = ModelFolder.ReadParameters(dir);
        var w = ps.Select(q => new float[q.Count]).ToArray();
        int wte = ps.ToList().FindIndex(q => q.Name == "transformer.wte.weight");
        for (int t = 0; t < p.Length; t++) w[wte][t * 4] = (float)Math.Log(p[t]);
        w[ps.ToList().FindIndex(q => q.Name == "transformer.ln_f.bias")][0] = 1;
        return new CausalLm(dir, w);
    }

    [Fact]
    public void TwoBeams_EarlyStopping_PickTheHandComputedHypothesis()
    {
        double[] p = [0.5, 0.3, 0.1, 0.06, 0.04];
        using var lm = FixedDistribution(_dir, p);
        // Step 1 (from beam 0): 0 (log .5), eos=1 (log .3) -> finished "" with score -1.20/0^1 = -inf, 2 (log .1).
        // Step 2: [0,0] -1.39, [0]+eos -> finished [0] with -1.90/1, [0,2] -3.00: two finished -> stop.
        // Best finished: [0] (-1.90) over "" (-inf).
        var r = Generator.BeamSearch(lm, [3], new GenerationOptions { NumBeams = 2, EosTokenId = 1, EarlyStopping = true, MaxNewTokens = 5 });
        Assert.Equal([0], r.Tokens);
        Assert.Equal(FinishReason.Eos, r.FinishReason);
        // Without early stopping the search goes on while a live beam can still beat [0]'s -1.90:
        // [0,0] has -1.39 / 2 = -0.69 > -1.90, so it continues until max length, and [0,0,0,0,0]
        // (5 log .5 / 5 = -0.69) beats every finished hypothesis.
        var r2 = Generator.BeamSearch(lm, [3], new GenerationOptions { NumBeams = 2, EosTokenId = 1, MaxNewTokens = 5 });
        Assert.Equal([0, 0, 0, 0, 0], r2.Tokens);
    }
}
