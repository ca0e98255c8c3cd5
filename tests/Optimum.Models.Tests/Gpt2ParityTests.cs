using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;
using Optimum.Core;

namespace Optimum.Models.Tests;

/// <summary>GPT-2 against the real transformers library (../shared/fixtures/hf/gpt2-tiny).</summary>
public sealed class Gpt2ParityTests(ITestOutputHelper output)
{
    private static readonly string Dir = Repo.Fixture("gpt2-tiny");

    private static (Gpt2Harness H, IReadOnlyDictionary<string, SafeTensor> Expected) Load()
    {
        var cfg = Gpt2Config.FromHf(HfConfig.Load(Path.Combine(Dir, "config.json")));
        var probe = new Gpt2Harness(cfg);
        var weights = HfWeights.Load(Path.Combine(Dir, "model.safetensors"), probe.Parameters, out var unused);
        Assert.Empty(unused);
        return (new Gpt2Harness(cfg, weights), SafeTensorsFile.ReadAll(Path.Combine(Dir, "expected.safetensors")));
    }

    [Fact]
    public void TrainingGraph_MatchesLossAndEveryGradient()
    {
        var (h, e) = Load();
        using var _ = h;
        var ids = e["input_ids"].ToInt64s();
        var r = h.TrainModel.Run(h.LmFeeds(ids, 2));
        var lossRef = e["loss"].ToFloats()[0];
        var lossErr = Math.Abs(r["loss"][0] - lossRef);
        Assert.True(lossErr <= 1e-5 * Math.Abs(lossRef), $"loss {r["loss"][0]} vs {lossRef}");
        double maxAbs = 0, maxRel = 0;
        Assert.Equal(h.Parameters.Count, e.Keys.Count(k => k.StartsWith("grad.", StringComparison.Ordinal)));
        foreach (var p in h.Parameters)
        {
            var (a, rel) = Compare.Check("grad." + p.Name, r["grad." + p.Name], e["grad." + p.Name].ToFloats(), 1e-4, 1e-3);
            maxAbs = Math.Max(maxAbs, a);
            maxRel = Math.Max(maxRel, rel);
        }
        output.WriteLine($"PARITY gpt2 loss abs={lossErr:E2} rel={lossErr / Math.Abs(lossRef):E2}; gradients max_abs={maxAbs:E2} max_rel={maxRel:E2}");
    }

    [Fact]
    public void EvalGraph_MatchesLogitsAndLoss()
    {
        var (h, e) = Load();
        using var _ = h;
        var r = h.EvalModel.Run(h.LmFeeds(e["input_ids"].ToInt64s(), 2));
        var (a, rel) = Compare.Check("logits", r["logits"], e["logits"].ToFloats(), 1e-4, 0);
        Assert.True(Math.Abs(r["loss"][0] - e["loss"].ToFloats()[0]) <= 1e-5 * e["loss"].ToFloats()[0]);
        output.WriteLine($"PARITY gpt2 logits max_abs={a:E2} max_rel={rel:E2}");
    }

    [Fact]
    public void Decoder_TokenByTokenWithCache_MatchesFullForward()
    {
        var (h, e) = Load();
        using var _ = h;
        var ids = e["input_ids"].ToInt64s();
        var full = e["logits"].ToFloats();
        int B = 2, T = 16, V = h.Config.VocabSize;
        HostTensor[]? past = null;
        double maxAbs = 0;
        for (int t = 0; t < T; t++)
        {
            var step = new long[] { ids[t], ids[T + t] };
            var mask = Enumerable.Repeat(1L, B * (t + 1)).ToArray();
            var (logits, present) = h.Step(step, B, mask, [t, t], past);
            past = present;
            for (int b = 0; b < B; b++)
            {
                var expected = full.AsSpan((b * T + t) * V, V).ToArray();
                maxAbs = Math.Max(maxAbs, Compare.Check($"step {t} row {b}", logits.AsSpan(b * V, V).ToArray(), expected, 1e-4, 0).MaxAbs);
            }
        }
        output.WriteLine($"PARITY gpt2 kv-cache vs full logits max_abs={maxAbs:E2}");
    }

    [Fact]
    public void GreedyContinuation_EqualsTransformersGenerate()
    {
        var (h, e) = Load();
        using var _ = h;
        var prompt = e["generate.prompt"].ToInt64s();
        var expected = e["generate.greedy"].ToInt64s();
        var tokens = prompt.ToList();
        var (logits, past) = h.Step(prompt, 1, Enumerable.Repeat(1L, prompt.Length).ToArray(), Enumerable.Range(0, prompt.Length).Select(i => (long)i).ToArray(), null);
        int V = h.Config.VocabSize;
        for (int n = 0; n < expected.Length - prompt.Length; n++)
        {
            long next = Compare.ArgMax(logits.AsSpan(logits.Length - V, V));
            tokens.Add(next);
            if (tokens.Count == expected.Length) break;
            (logits, past) = h.Step([next], 1, Enumerable.Repeat(1L, tokens.Count).ToArray(), [tokens.Count - 1], past);
        }
        Assert.Equal(expected, tokens);
    }
}
