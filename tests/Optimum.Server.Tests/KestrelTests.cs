using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Server.Tests;

/// <summary>The service on a real Kestrel bound to 127.0.0.1: SSE, disconnects, shutdown, load.</summary>
[Collection(ModelFixture.Collection)]
public sealed class KestrelTests(ModelFixture model, ITestOutputHelper output) 
{
    private static async Task<(WebApplication App, HttpClient Client)> Start(params string[] settings)
    {
        var app = OptimumServer.Build(["--urls", "http://127.0.0.1:0", .. settings]);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return (app, new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(60) });
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    [Fact]
    public async Task Sse_StreamsEventsAsTheyAreGenerated()
    {
        var (app, c) = await Start($"--Optimum:Models:0={model.SlowDir}", "--Optimum:Threads=1");
        await using var _ = app;
        using var req = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = Json("{\"prompt\": \"Call me Ishmael.\", \"max_tokens\": 200, \"stream\": true, \"seed\": 1}") };
        using var r = await c.SendAsync(req, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", r.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await r.Content.ReadAsStreamAsync());
        var clock = Stopwatch.StartNew();
        double firstAt = -1;
        var text = new StringBuilder();
        string? finish = null;
        bool done = false;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length == 0) continue;
            Assert.StartsWith("data: ", line);
            var data = line["data: ".Length..];
            if (data == "[DONE]") { done = true; break; }
            if (firstAt < 0) firstAt = clock.Elapsed.TotalSeconds;
            var choice = JsonDocument.Parse(data).RootElement.GetProperty("choices")[0];
            text.Append(choice.GetProperty("text").GetString());
            if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finish = choice.GetProperty("finish_reason").GetString();
        }
        var total = clock.Elapsed.TotalSeconds;
        output.WriteLine($"first event after {firstAt * 1000:F0} ms, stream done after {total * 1000:F0} ms, {text.Length} characters");
        Assert.True(done);
        Assert.Equal("length", finish);
        Assert.True(firstAt < total / 2, "the first event arrived only at the end: the stream is buffered");
    }

    [Fact]
    public async Task ClientDisconnect_StopsTheGeneration()
    {
        var (app, c) = await Start($"--Optimum:Models:0={model.SlowDir}", "--Optimum:Threads=1");
        await using var _ = app;
        using (var req = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = Json("{\"prompt\": \"Call me\", \"max_tokens\": 1000, \"stream\": true}") })
        using (var r = await c.SendAsync(req, HttpCompletionOption.ResponseHeadersRead))
        {
            using var reader = new StreamReader(await r.Content.ReadAsStreamAsync());
            await reader.ReadLineAsync();     // one event, then hang up
        }
        string metrics = "";
        for (int i = 0; i < 50 && !metrics.Contains("finish_reason=\"cancelled\""); i++)
        {
            await Task.Delay(100);
            metrics = await c.GetStringAsync("/metrics");
        }
        Assert.Contains("finish_reason=\"cancelled\"", metrics);
        var tokens = System.Text.RegularExpressions.Regex.Match(metrics, @"optimum_tokens_generated_total\{[^}]*\} (\d+)");
        Assert.True(int.Parse(tokens.Groups[1].Value) < 1000, $"generation went on after the disconnect: {tokens.Value}");
    }

    [Fact]
    public async Task Shutdown_LetsInFlightRequestsFinish()
    {
        var (app, c) = await Start($"--Optimum:Models:0={model.SlowDir}", "--Optimum:Threads=1");
        var inflight = c.PostAsync("/v1/completions", Json("{\"prompt\": \"Call me\", \"max_tokens\": 600, \"temperature\": 0}"));
        await Task.Delay(300);
        var stopping = app.StopAsync();
        var r = await inflight;
        await stopping;
        await app.DisposeAsync();
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var body = await r.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(600, body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task BoundedLoad_EveryResponseIs200Or429_AndTheServerStaysHealthy()
    {
        var (app, c) = await Start($"--Optimum:Models:0={model.Dir}", "--Optimum:MaxConcurrent=2", "--Optimum:QueueLimit=8", "--Optimum:Threads=1");
        await using var _ = app;
        var statuses = new ConcurrentDictionary<HttpStatusCode, int>();
        var latencies = new ConcurrentBag<double>();
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, 32).Select(async client =>
        {
            for (int i = 0; i < 200; i++)
            {
                var t = Stopwatch.GetTimestamp();
                using var r = await c.PostAsync("/v1/completions", Json($"{{\"prompt\": \"Call me {client}\", \"max_tokens\": 2, \"seed\": {i}}}"));
                statuses.AddOrUpdate(r.StatusCode, 1, (_, n) => n + 1);
                if (r.StatusCode == HttpStatusCode.OK) latencies.Add(Stopwatch.GetElapsedTime(t).TotalMilliseconds);
            }
        }));
        output.WriteLine($"6400 requests in {clock.Elapsed.TotalSeconds:F1} s: {string.Join(", ", statuses.Select(kv => $"{(int)kv.Key} x {kv.Value}"))}; " +
            $"p50 {Percentile(latencies, 0.5):F1} ms, p99 {Percentile(latencies, 0.99):F1} ms");
        Assert.Equal(6400, statuses.Values.Sum());
        Assert.All(statuses.Keys, s => Assert.Contains(s, new[] { HttpStatusCode.OK, HttpStatusCode.TooManyRequests }));
        Assert.True(statuses.GetValueOrDefault(HttpStatusCode.OK) > 0);
        Assert.Equal(HttpStatusCode.OK, (await c.GetAsync("/healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await c.PostAsync("/v1/completions", Json("{\"prompt\": \"still there?\", \"max_tokens\": 3}"))).StatusCode);
    }

    [Fact]
    public async Task ARefusedOversizeBody_ClosesItsConnection_SoTheClientsNextRequestSucceeds()
    {
        var (app, c) = await Start($"--Optimum:Models:0={model.Dir}", "--Optimum:Threads=1");
        await using var _ = app;
        // Refused by its Content-Length, unread: Kestrel cannot take the rest to reuse the connection, so the answer says it closes.
        for (int i = 0; i < 3; i++)
        {
            using var big = await c.PostAsync("/v1/completions", Json("{\"prompt\": \"" + new string('a', 70_000) + "\"}"));
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, big.StatusCode);
            Assert.True(big.Headers.ConnectionClose, "a 413 before the body was read must close the connection");
            using var next = await c.PostAsync("/v1/completions", Json("{\"prompt\": \"Call me\", \"max_tokens\": 2}"));
            Assert.Equal(HttpStatusCode.OK, next.StatusCode);
        }
    }

    internal static double Percentile(IEnumerable<double> values, double q)
    {
        var s = values.Order().ToArray();
        return s.Length == 0 ? double.NaN : s[Math.Min(s.Length - 1, (int)(q * s.Length))];
    }
}
