using Optimum.Core;
using Optimum.Hub;
using Optimum.Inference;
using Optimum.Models;

namespace Optimum.Cli;

/// <summary>
/// <c>optimum-net bench generate</c>: batch-1 greedy generation of N new tokens after a P-token prompt on
/// the bench GPT-2, with the KV cache and without it (the whole sequence re-run for every token), and the
/// time to first token. A step is one whole generation of N tokens; EOS does not stop it.
/// </summary>
public static class BenchGenerate
{
    public static int Run(BenchRun run, Gpt2Size size, int prompt, int newTokens, TextWriter output)
    {
        var report = new BenchReport(run.Json, output);
        var cfg = size.Config(prompt + newTokens);
        var dir = Path.Combine(run.WorkDir, $"gpt2-gen-{size.Layers}x{size.Width}-v{size.Vocab}-p{cfg.NPositions}");
        ModelKinds.Write(dir, cfg);
        var ps = ModelFolder.ReadParameters(dir);
        using var lm = new CausalLm(dir, ModelKinds.Initialize(ps, cfg, 0), run.Session("gen-profile"));
        var rng = new Random(0);
        var ids = Enumerable.Range(0, prompt).Select(_ => rng.Next(size.Vocab)).ToArray();
        var greedy = new GenerationOptions { MaxNewTokens = newTokens, EosTokenId = -1 };

        var firstToken = new double[run.Warmup + run.Steps];
        var cached = StepTimes.Measure(run.Warmup, run.Steps, i =>
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            Generator.Generate(lm, [ids], greedy, (_, t) => { if (t.Count == 1) firstToken[i] = clock.Elapsed.TotalSeconds; return true; });
        });
        // The profile ends here: the runs without a cache below are not part of it. Each generation is one run per new token.
        if (run.Profile) OrtProfile.Report(report, run, [lm.EndProfiling()], (run.Warmup + run.Steps) * newTokens, "token");

        var uncached = StepTimes.Measure(run.Warmup, run.Steps, _ =>
        {
            var seq = ids.Select(t => (long)t).ToList();
            for (int n = 0; n < newTokens; n++)
            {
                using var state = lm.Start();
                var logits = state.Step([.. seq], Enumerable.Range(0, seq.Count).Select(p => (long)p).ToArray(), Enumerable.Repeat(1L, seq.Count).ToArray(), 1);
                int best = 0;
                for (int k = 1; k < logits.Length; k++) if (logits[k] > logits[best]) best = k;
                seq.Add(best);
            }
        });
        var r = new Dictionary<string, object>
        {
            ["layers"] = size.Layers, ["width"] = size.Width, ["heads"] = size.Heads, ["vocab"] = size.Vocab, ["threads"] = run.Threads,
            ["prompt_tokens"] = prompt, ["new_tokens"] = newTokens,
        };
        cached.AddTo(r, "generation");
        r["kv_cache_tokens_per_s"] = newTokens / cached.Mean;
        r["time_to_first_token_ms"] = StepTimes.Quantile(firstToken.Skip(run.Warmup), 0.5) * 1000;
        r["no_cache_generation_ms"] = uncached.Mean * 1000;
        r["no_cache_tokens_per_s"] = newTokens / uncached.Mean;
        r["cache_speedup"] = uncached.Mean / cached.Mean;
        report.AddSpeed("generate", r);
        report.Print();
        return 0;
    }
}
