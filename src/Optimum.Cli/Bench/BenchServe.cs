using Optimum.Core;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Server;

namespace Optimum.Cli;

/// <summary>
/// <c>optimum-net bench serve</c>: the completions service on 127.0.0.1 with the bench GPT-2 under a
/// fixed number of concurrent clients: p50/p99 latency, time to first token (p50/p99), requests/s and generated
/// tokens/s. After --warmup requests one at a time (at least one: its usage gives the tokens of each greedy
/// completion), each client sends --requests streaming requests back to back; the unit timed is a request, so there
/// is no --steps. With continuous batching (the default) the service decodes up to 16 completions in one batch on
/// all threads; without, two completions run at once with half the threads each.
/// </summary>
public static class BenchServe
{
    public static int Run(BenchRun run, Gpt2Size size, int clients, int requests, int maxTokens, TextWriter output, bool batching = true)
    {
        if (clients < 1 || requests < 1) throw new ArgumentException($"--clients {clients} and --requests {requests} must be >= 1.");
        int tokenizerVocab = Gpt2Tokenizer.Create().VocabSize;
        if (size.Vocab < tokenizerVocab)
            throw new ArgumentException($"bench serve sends text through the GPT-2 tokenizer, so --vocab must be at least its {tokenizerVocab} tokens, not {size.Vocab}.");
        var report = new BenchReport(run.Json, output);
        var dir = Path.Combine(run.WorkDir, $"gpt2-serve-{size.Layers}x{size.Width}-v{size.Vocab}");
        ModelKinds.WritePreset(dir, size.Config(256), seed: 0);
        var options = batching
            ? new ServerOptions { Models = [new("bench", dir)], Threads = run.Threads, MaxConcurrent = 16, QueueLimit = clients * 2, ContinuousBatching = true }
            : new ServerOptions { Models = [new("bench", dir)], Threads = Math.Max(1, run.Threads / 2), MaxConcurrent = 2, QueueLimit = clients * 2, ContinuousBatching = false };
        var app = OptimumServer.Build(options,
            ["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default=Warning"]);
        app.StartAsync().GetAwaiter().GetResult();
        try
        {
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromMinutes(5) };
            var body = $"{{\"prompt\": \"Call me Ishmael. Some years ago\", \"max_tokens\": {maxTokens}, \"temperature\": 0}}";
            var streamed = body[..^1] + ", \"stream\": true}";
            long perRequest = 0;
            for (int i = 0; i < Math.Max(1, run.Warmup); i++)
            {
                using var warm = http.PostAsync("/v1/completions", new StringContent(body, System.Text.Encoding.UTF8, "application/json")).GetAwaiter().GetResult().EnsureSuccessStatusCode();
                using var usage = JsonDocument.Parse(warm.Content.ReadAsStringAsync().GetAwaiter().GetResult());
                perRequest = usage.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt64();    // greedy: every request the same
            }
            var latencies = new ConcurrentBag<double>();
            var firstTokens = new ConcurrentBag<double>();
            int failures = 0;
            long generated = 0;
            var clock = Stopwatch.StartNew();
            Task.WhenAll(Enumerable.Range(0, clients).Select(async _ =>
            {
                for (int i = 0; i < requests; i++)
                {
                    var t = Stopwatch.GetTimestamp();
                    using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(streamed, System.Text.Encoding.UTF8, "application/json") };
                    using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                    if (!response.IsSuccessStatusCode) { Interlocked.Increment(ref failures); continue; }
                    using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
                    bool first = true, done = false;
                    while (await reader.ReadLineAsync() is { } line)
                    {
                        if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                        if (first) { firstTokens.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds); first = false; }
                        if (line == "data: [DONE]") { done = true; break; }
                        if (line.Contains("\"error\"", StringComparison.Ordinal)) break;
                    }
                    if (!done) { Interlocked.Increment(ref failures); continue; }
                    latencies.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
                    Interlocked.Add(ref generated, perRequest);
                }
            })).GetAwaiter().GetResult();
            double seconds = clock.Elapsed.TotalSeconds;
            report.AddSpeed("serve", new Dictionary<string, object>
            {
                ["layers"] = size.Layers, ["width"] = size.Width, ["heads"] = size.Heads, ["vocab"] = size.Vocab, ["threads"] = run.Threads,
                ["batching"] = batching, ["clients"] = clients, ["requests"] = clients * requests, ["warmup_requests"] = run.Warmup, ["max_tokens"] = maxTokens,
                ["ok"] = latencies.Count, ["failed"] = failures, ["p50_ms"] = StepTimes.Quantile(latencies, 0.5), ["p99_ms"] = StepTimes.Quantile(latencies, 0.99),
                ["ttft_p50_ms"] = StepTimes.Quantile(firstTokens, 0.5), ["ttft_p99_ms"] = StepTimes.Quantile(firstTokens, 0.99),
                ["requests_per_s"] = latencies.Count / seconds, ["completion_tokens"] = generated, ["tokens_per_s"] = generated / seconds,
            });
            report.Print();
            return failures == 0 ? 0 : 1;
        }
        finally
        {
            app.StopAsync().GetAwaiter().GetResult();
            ((IDisposable)app).Dispose();
        }
    }
}
