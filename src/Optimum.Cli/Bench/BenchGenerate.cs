using Optimum.Core;
using Optimum.Hub;
using Optimum.Inference;
using Optimum.Models;

namespace Optimum.Cli;

/// <summary>
/// <c>optimum-net bench generate</c>: batch-1 greedy generation of N new tokens after a P-token prompt on
/// the bench GPT-2, with the KV cache and without it (the whole sequence re-run for every token), and the
/// time to first token. A step is one whole generation of N tokens; EOS does not stop it.
/// Single-stream decoding reads every weight once per token, so it also prints the memory-bandwidth bound:
/// the read bandwidth measured in the same run over the bytes a token reads (see <see cref="BytesPerToken"/>),
/// and optionally runs Microsoft's onnxruntime-genai on the same exported decoder and weights.
/// </summary>
public static class BenchGenerate
{
    public static int Run(BenchRun run, Gpt2Size size, int prompt, int newTokens, string? genaiRef, TextWriter output)
    {
        var report = new BenchReport(run.Json, output);
        var cfg = size.Config(prompt + newTokens);
        var dir = Path.Combine(run.WorkDir, $"gpt2-gen-{size.Layers}x{size.Width}-v{size.Vocab}-p{cfg.NPositions}");
        ModelKinds.Write(dir, cfg);
        var ps = ModelFolder.ReadParameters(dir);
        var weights = ModelKinds.Initialize(ps, cfg, 0);
        // onnxruntime-genai reads the folder as exported: config.json, inference.onnx and model.safetensors.
        if (genaiRef is not null) HfWeights.Save(Path.Combine(dir, ModelFolder.WeightsFile), ps, weights);
        using var lm = new CausalLm(dir, weights, run.Session("gen-profile"));
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
        double rss = PeakMemory.TakeMegabytes();               // before the bandwidth buffer below
        double bandwidth = MemoryBandwidth.Measure(run.Threads);
        PeakMemory.TakeMegabytes();
        double bytes = BytesPerToken(ps, cfg, prompt, newTokens), bound = bandwidth / bytes;
        double ours = newTokens / cached.Mean;
        var genai = genaiRef is null ? null : RunGenai(genaiRef, dir, run, prompt, newTokens);

        var r = new Dictionary<string, object>
        {
            ["layers"] = size.Layers, ["width"] = size.Width, ["heads"] = size.Heads, ["vocab"] = size.Vocab, ["threads"] = run.Threads,
            ["prompt_tokens"] = prompt, ["new_tokens"] = newTokens,
        };
        cached.AddTo(r, "generation");
        r["kv_cache_tokens_per_s"] = ours;
        r["time_to_first_token_ms"] = StepTimes.Quantile(firstToken.Skip(run.Warmup), 0.5) * 1000;
        r["no_cache_generation_ms"] = uncached.Mean * 1000;
        r["no_cache_tokens_per_s"] = newTokens / uncached.Mean;
        r["cache_speedup"] = uncached.Mean / cached.Mean;
        r["read_bandwidth_gb_per_s"] = bandwidth / 1e9;
        r["bytes_read_per_token_mb"] = bytes / 1e6;
        r["bandwidth_bound_tokens_per_s"] = bound;
        r["fraction_of_bandwidth_bound"] = ours / bound;
        if (genai is { } g)
        {
            r["genai_tokens_per_s"] = g.TokensPerS;
            r["optimum_over_genai"] = ours / g.TokensPerS;
        }
        r["peak_rss_mb"] = rss;
        report.Add("generate", r);
        if (genai is { } ge)
        {
            // Both engines side by side (one table, one JSON line each): the figures issue #15 compares.
            foreach (var (engine, tps, ttft, mb) in new[] { ("optimum-net-ort", ours, (double)r["time_to_first_token_ms"], rss), (ge.Engine, ge.TokensPerS, ge.FirstTokenMs, ge.PeakRssMb) })
                report.Add("generate_vs_genai", new Dictionary<string, object>
                {
                    ["engine"] = engine, ["tokens_per_s"] = tps, ["time_to_first_token_ms"] = ttft, ["fraction_of_bandwidth_bound"] = tps / bound,
                    ["over_genai"] = tps / ge.TokensPerS, ["peak_rss_mb"] = mb,
                });
        }
        report.Print();
        return 0;
    }

    /// <summary>
    /// Bytes one decoding step reads, averaged over the generation: every parameter once in float32 (the tied wte once: its
    /// Gather reads one row, the LM head all of it; wpe only one row), plus the past keys and values of every layer at the
    /// mean cache length. Writes (present = past + the new position) and activations are left out: this is a lower bound on traffic.
    /// </summary>
    public static double BytesPerToken(IReadOnlyList<ParameterInfo> ps, Gpt2Config c, int prompt, int newTokens)
    {
        long weights = ps.Sum(p => p.Name.EndsWith("wpe.weight", StringComparison.Ordinal) ? c.NEmbd : p.Count);
        double meanPast = prompt + (newTokens - 1) / 2.0;
        return sizeof(float) * (weights + 2.0 * c.NLayer * meanPast * c.NEmbd);
    }

    private sealed record Genai(string Engine, double TokensPerS, double FirstTokenMs, double PeakRssMb);

    /// <summary>
    /// onnxruntime-genai's reference (../shared/tools/genai-ref) on the same folder, prompt length, new tokens and threads. Its peak
    /// RSS includes its start, where it embeds the weights into a copy of inference.onnx (as <see cref="CausalLm"/> does in memory).
    /// </summary>
    private static Genai RunGenai(string script, string dir, BenchRun run, int prompt, int newTokens)
    {
        var (result, rss) = ReferenceRun.Run("onnxruntime-genai", script, [Path.GetFullPath(dir), "--prompt", $"{prompt}", "--new-tokens", $"{newTokens}", "--threads", $"{run.Threads}"]);
        return new((string)result["engine"], result.Number("tokens_per_s"), result.Number("time_to_first_token_ms"), rss);
    }
}
