using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Runtime;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Optimum.Core;
using Optimum.Hub;
using Optimum.Hub.Lora;
using Optimum.Inference.Lora;
using Optimum.Models;
using Optimum.Onnx.Lora;
using Optimum.Onnx.Proto;
using Optimum.Server;

namespace Optimum.Cli;

/// <summary>
/// <c>optimum-net bench serve --adapters N</c>: resident memory and throughput of one process serving a GPT-2 base plus N
/// LoRA adapters over it (one copy of the base weights) against one process serving the N adapters merged into N model
/// folders. The bench writes the base (the --layers/--width/--heads/--vocab GPT-2, 1024 positions), N adapters (r 8,
/// lora_alpha 16, c_attn, random A and B) and their merged folders, then runs each layout in a child process of its own
/// (so neither inherits the other's heap): the server starts, each adapter answers one warm-up request, the resident memory
/// is read (after a full GC, so freed load buffers do not count), and --clients clients send --requests streaming requests
/// each, spread over the N models. Reported per layout: resident MB after start-up, peak RSS, tokens/s and p50 latency.
/// </summary>
public static class BenchServeAdapters
{
    private const string Prompt = "Call me Ishmael. Some years ago";
    private static readonly LoraConfig Lora = new() { R = 8, LoraAlpha = 16, TargetModules = ["c_attn"], TaskType = "CAUSAL_LM" };

    public static int Run(BenchRun run, Gpt2Size size, int adapters, int clients, int requests, int maxTokens, TextWriter output, string? worker)
    {
        if (adapters < 1) throw new ArgumentException($"--adapters {adapters} must be >= 1.");
        if (clients < 1 || requests < 1) throw new ArgumentException($"--clients {clients} and --requests {requests} must be >= 1.");
        var dir = Path.Combine(run.WorkDir, $"gpt2-adapters-{size.Layers}x{size.Width}-v{size.Vocab}");
        if (worker is not null) return Worker(run, dir, adapters, clients, requests, maxTokens, output, worker);
        Prepare(dir, size, adapters);
        var report = new BenchReport(run.Json, output);
        foreach (var layout in new[] { "adapters", "merged" })
        {
            var (fields, peak) = Child(layout, run, size, adapters, clients, requests, maxTokens);
            var m = new Dictionary<string, object>
            {
                ["layout"] = layout == "adapters" ? $"base and {adapters} adapters" : $"{adapters} merged models",
                ["layers"] = size.Layers, ["width"] = size.Width, ["vocab"] = size.Vocab, ["threads"] = run.Threads, ["models"] = adapters,
            };
            foreach (var k in new[] { "base_weights_mb", "rss_started_mb", "rss_after_mb", "tokens_per_s", "p50_ms", "ok", "failed" }) m[k] = fields[k];
            m["peak_rss_mb"] = peak;
            report.Add("serve-adapters", m);
        }
        report.Print();
        return 0;
    }

    /// <summary>The base folder, N adapter folders and their merged model folders (kept between runs of the same size).</summary>
    private static void Prepare(string dir, Gpt2Size size, int adapters)
    {
        var baseDir = Path.Combine(dir, "base");
        if (!File.Exists(Path.Combine(baseDir, ModelFolder.WeightsFile))) ModelKinds.WritePreset(baseDir, size.Config(1024), seed: 0);
        var ps = ModelFolder.ReadParameters(baseDir);
        var modules = AdapterGraph.Modules(ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(baseDir, ModelFolder.InferenceFile))).Graph, ps, Lora, baseDir);
        for (int i = 0; i < adapters; i++)
        {
            string adapterDir = Path.Combine(dir, $"adapter{i}"), merged = Path.Combine(dir, $"merged{i}");
            if (File.Exists(Path.Combine(merged, ModelFolder.WeightsFile))) continue;
            var rng = new Random(100 + i);
            var adapter = LoraAdapter.Create(Lora, modules, modules.Select(m => HfWeights.Normal(rng, Lora.R * m.In, 0.02)).ToArray(), modules.Select(m => HfWeights.Normal(rng, m.Out * Lora.R, 0.02)).ToArray());
            adapter.Save(adapterDir);
            var w = HfWeights.Load(Path.Combine(baseDir, ModelFolder.WeightsFile), ps, out _);
            adapter.Merge(ps, w);
            AtomicFolder.Write(merged, tmp =>
            {
                foreach (var f in Directory.GetFiles(baseDir).Where(f => Path.GetFileName(f) != ModelFolder.WeightsFile)) File.Copy(f, Path.Combine(tmp, Path.GetFileName(f)));
                HfWeights.Save(Path.Combine(tmp, ModelFolder.WeightsFile), ps, w);
            });
        }
    }

    /// <summary>Runs this bench as a worker for <paramref name="layout"/> in a child process; returns its result and peak RSS.</summary>
    private static (IReadOnlyDictionary<string, object> Fields, double PeakMb) Child(string layout, BenchRun run, Gpt2Size size, int adapters, int clients, int requests, int maxTokens)
    {
        string[] args =
        [
            "bench", "serve", "--adapters", $"{adapters}", "--layout", layout, "--threads", $"{run.Threads}", "--warmup", $"{run.Warmup}",
            "--layers", $"{size.Layers}", "--width", $"{size.Width}", "--heads", $"{size.Heads}", "--vocab", $"{size.Vocab}",
            "--clients", $"{clients}", "--requests", $"{requests}", "--max-tokens", $"{maxTokens}", "--device", $"{run.Device}", "--json",
        ];
        return ReferenceRun.RunSelf($"bench serve --adapters worker ({layout})", args);
    }

    private static double ResidentMb()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                return long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024 / 1e6;
        return 0;
    }

    private static int Worker(BenchRun run, string dir, int adapters, int clients, int requests, int maxTokens, TextWriter output, string layout)
    {
        var baseDir = Path.Combine(dir, "base");
        var names = Enumerable.Range(0, adapters).Select(i => $"m{i}").ToArray();
        var options = new ServerOptions { Threads = run.Threads, MaxConcurrent = 16, QueueLimit = clients * 2 + 16, ContinuousBatching = true };
        if (layout == "adapters")
        {
            options.Models = [new("base", baseDir)];
            options.Adapters = [.. names.Select((n, i) => new ServedAdapter(n, Path.Combine(dir, $"adapter{i}"), "base"))];
        }
        else if (layout == "merged") options.Models = [.. names.Select((n, i) => new ServedModel(n, Path.Combine(dir, $"merged{i}")))];
        else throw new ArgumentException($"--layout '{layout}' is not adapters or merged.");
        var app = OptimumServer.Build(options, ["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default=Warning"]);
        app.StartAsync().GetAwaiter().GetResult();
        try
        {
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromMinutes(10) };
            string Body(string model, bool stream) => $"{{\"model\": \"{model}\", \"prompt\": \"{Prompt}\", \"max_tokens\": {maxTokens}, \"temperature\": 0{(stream ? ", \"stream\": true" : "")}}}";
            var perRequest = new Dictionary<string, long>();
            foreach (var n in names)
                for (int i = 0; i < Math.Max(1, run.Warmup); i++)
                {
                    using var warm = http.PostAsync("/v1/completions", new StringContent(Body(n, false), System.Text.Encoding.UTF8, "application/json")).GetAwaiter().GetResult().EnsureSuccessStatusCode();
                    using var usage = JsonDocument.Parse(warm.Content.ReadAsStringAsync().GetAwaiter().GetResult());
                    perRequest[n] = usage.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt64();
                }
            double started = ResidentMb();
            var latencies = new ConcurrentBag<double>();
            int failures = 0;
            long generated = 0;
            var clock = Stopwatch.StartNew();
            Task.WhenAll(Enumerable.Range(0, clients).Select(async c =>
            {
                for (int i = 0; i < requests; i++)
                {
                    var model = names[(c + i) % names.Length];
                    var t = Stopwatch.GetTimestamp();
                    using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(Body(model, true), System.Text.Encoding.UTF8, "application/json") };
                    using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                    var text = await response.Content.ReadAsStringAsync();
                    if (!response.IsSuccessStatusCode || !text.Contains("data: [DONE]", StringComparison.Ordinal)) { Interlocked.Increment(ref failures); continue; }
                    latencies.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
                    Interlocked.Add(ref generated, perRequest[model]);
                }
            })).GetAwaiter().GetResult();
            double seconds = clock.Elapsed.TotalSeconds;
            var weightsMb = ModelFolder.ReadParameters(baseDir).Sum(p => p.Count) * sizeof(float) / 1e6;
            new BenchReport(true, output).Add("serve-adapters-worker", new Dictionary<string, object>
            {
                ["layout"] = layout, ["base_weights_mb"] = weightsMb, ["rss_started_mb"] = started, ["rss_after_mb"] = ResidentMb(),
                ["tokens_per_s"] = generated / seconds, ["p50_ms"] = StepTimes.Quantile(latencies, 0.5), ["ok"] = latencies.Count, ["failed"] = failures,
            });
            return failures == 0 ? 0 : 1;
        }
        finally
        {
            app.StopAsync().GetAwaiter().GetResult();
            ((IDisposable)app).Dispose();
        }
    }
}
