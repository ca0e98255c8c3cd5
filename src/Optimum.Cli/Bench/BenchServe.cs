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
/// all threads; without, two completions run at once with half the threads each. With <c>--t5</c> the model is a T5 of
/// the same layers (encoder and decoder each), width, heads and vocabulary, behind a symbol tokenizer (source characters,
/// one target word per id, so every generated id is text) and the prompt is its source.
/// </summary>
public static class BenchServe
{
    private const string Prompt = "Call me Ishmael. Some years ago";

    public static int Run(BenchRun run, Gpt2Size size, int clients, int requests, int maxTokens, TextWriter output, bool batching = true, bool t5 = false)
    {
        if (clients < 1 || requests < 1) throw new ArgumentException($"--clients {clients} and --requests {requests} must be >= 1.");
        int tokenizerVocab = Gpt2Tokenizer.Create().VocabSize;
        if (!t5 && size.Vocab < tokenizerVocab)
            throw new ArgumentException($"bench serve sends text through the GPT-2 tokenizer, so --vocab must be at least its {tokenizerVocab} tokens, not {size.Vocab}.");
        var report = new BenchReport(run.Json, output);
        var dir = Path.Combine(run.WorkDir, $"{(t5 ? "t5" : "gpt2")}-serve-{size.Layers}x{size.Width}-v{size.Vocab}");
        if (t5) WriteT5(dir, size);
        else ModelKinds.WritePreset(dir, size.Config(256), seed: 0);
        var options = batching
            ? new ServerOptions { Models = [new("bench", dir)], Device = run.Device.ToString(), Threads = run.Threads, MaxConcurrent = 16, QueueLimit = clients * 2, ContinuousBatching = true }
            : new ServerOptions { Models = [new("bench", dir)], Device = run.Device.ToString(), Threads = Math.Max(1, run.Threads / 2), MaxConcurrent = 2, QueueLimit = clients * 2, ContinuousBatching = false };
        var app = OptimumServer.Build(options,
            ["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default=Warning"]);
        app.StartAsync().GetAwaiter().GetResult();
        try
        {
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromMinutes(5) };
            var body = $"{{\"prompt\": \"{Prompt}\", \"max_tokens\": {maxTokens}, \"temperature\": 0}}";
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
                ["model"] = t5 ? "t5" : "gpt2", ["layers"] = size.Layers, ["width"] = size.Width, ["heads"] = size.Heads, ["vocab"] = size.Vocab, ["threads"] = run.Threads,
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

    /// <summary>A T5 with <paramref name="size"/>'s layers (each stack), width, heads and vocabulary, untied random weights, and its tokenizer.</summary>
    private static void WriteT5(string dir, Gpt2Size size)
    {
        var sourceChars = new string(Prompt.Distinct().ToArray());
        int words = size.Vocab - 3 - sourceChars.Length;                       // specials (pad, eos, unk) and the source characters
        if (words < 1) throw new ArgumentException($"--vocab {size.Vocab} leaves no target words beside the {sourceChars.Length + 3} source symbols.");
        var tok = SymbolTokenizer.Build([(sourceChars, string.Join(' ', Enumerable.Range(0, words).Select(i => $"w{i}")))]);
        ModelKinds.WritePreset(dir, new T5Config
        {
            VocabSize = tok.VocabSize, DModel = size.Width, DKv = size.Width / size.Heads, NumHeads = size.Heads, DFf = 4 * size.Width,
            NumLayers = size.Layers, NumDecoderLayers = size.Layers, FeedForwardProj = "relu", DropoutRate = 0, MaxLength = 256,
            TieWordEmbeddings = false,              // as T5 v1.1; tied random embeddings make greedy echo decoder_start (pad: no text)
        }, seed: 0);
        tok.Save(dir);
    }
}
