using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Server;

namespace Optimum.Cli;

/// <summary>How <c>bench soak</c> loads the service: its slots and queue, the clients, the tokens per completion, the share of clients that hang up.</summary>
public sealed record SoakLoad(double Seconds, double WarmupSeconds, int Clients, int MaxConcurrent, int Queue, int MaxTokens, double Disconnect, double Stream);

/// <summary>
/// <c>optimum-net bench soak</c>: the completions service on 127.0.0.1 with the bench GPT-2 at its queue limit for
/// --seconds (after --warmup seconds of the same load), clients streaming and hanging up at random (<see cref="ServiceSoak"/>).
/// One measurement per window of 10 s (requests by status, clean stream ends, client disconnects, RSS, managed heap), then
/// the whole run's with RSS and managed heap at the start and end. Exit 1 when the soak saw anything but 200s, 429s and
/// clean stream ends, or slots still taken afterwards.
/// </summary>
public static class BenchSoak
{
    public static int Run(BenchRun run, Gpt2Size size, SoakLoad load, TextWriter output)
    {
        if (load.Seconds <= 0 || load.WarmupSeconds < 0) throw new ArgumentException($"--seconds {load.Seconds} must be > 0 and --warmup {load.WarmupSeconds} >= 0.");
        if (load.Clients < 1 || load.MaxConcurrent < 1 || load.Queue < 0 || load.MaxTokens < 1)
            throw new ArgumentException($"--clients {load.Clients}, --max-concurrent {load.MaxConcurrent} and --max-tokens {load.MaxTokens} must be >= 1, --queue {load.Queue} >= 0.");
        if (load.Disconnect is < 0 or > 1 || load.Stream is < 0 or > 1) throw new ArgumentException($"--disconnect {load.Disconnect} and --stream {load.Stream} are shares in [0, 1].");
        int tokenizerVocab = Gpt2Tokenizer.Create().VocabSize;
        if (size.Vocab < tokenizerVocab)
            throw new ArgumentException($"bench soak sends text through the GPT-2 tokenizer, so --vocab must be at least its {tokenizerVocab} tokens, not {size.Vocab}.");
        var report = new BenchReport(run.Json, output);
        var dir = Path.Combine(run.WorkDir, $"gpt2-serve-{size.Layers}x{size.Width}-v{size.Vocab}");
        ModelKinds.WritePreset(dir, size.Config(256), seed: 0);
        var app = OptimumServer.Build(new ServerOptions
        {
            Models = [new("bench", dir)], Device = run.Device.ToString(), Threads = Math.Max(1, run.Threads / load.MaxConcurrent), MaxConcurrent = load.MaxConcurrent, QueueLimit = load.Queue,
        }, ["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default=Warning"]);
        app.StartAsync().GetAwaiter().GetResult();
        try
        {
            var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromMinutes(5) };
            var options = new SoakOptions
            {
                Duration = TimeSpan.FromSeconds(load.Seconds), Warmup = TimeSpan.FromSeconds(load.WarmupSeconds), Clients = load.Clients, MaxTokens = load.MaxTokens,
                DisconnectShare = load.Disconnect, StreamShare = load.Stream, Capacity = load.MaxConcurrent + load.Queue,
            };
            var r = ServiceSoak.RunAsync(http, options, w => report.Add("soak-window", Fields(w).Prepend(new("t_s", w.Seconds)))).GetAwaiter().GetResult();
            report.Add("soak", new Dictionary<string, object>
            {
                ["seconds"] = r.Total.Seconds, ["clients"] = load.Clients, ["max_concurrent"] = load.MaxConcurrent, ["queue"] = load.Queue, ["max_tokens"] = load.MaxTokens,
                ["layers"] = size.Layers, ["width"] = size.Width, ["threads"] = run.Threads,
            }.Concat(Fields(r.Total).Where(f => f.Key is not ("rss_mb" or "managed_mb"))).Concat(new Dictionary<string, object>
            {
                ["rss_start_mb"] = r.RssStartMb, ["rss_end_mb"] = r.RssEndMb, ["rss_peak_mb"] = r.RssPeakMb,
                ["managed_start_mb"] = r.ManagedStartMb, ["managed_end_mb"] = r.ManagedEndMb,
                ["slots_free_after"] = r.SlotsFreeAfter ?? false, ["failures"] = r.Failures.Count,
            }));
            report.Print();
            foreach (var f in r.Failures) Console.Error.WriteLine($"soak: {f}");
            return r.Failures.Count == 0 ? 0 : 1;
        }
        finally
        {
            app.StopAsync().GetAwaiter().GetResult();
            ((IDisposable)app).Dispose();
        }
    }

    /// <summary>A window's (or the run's) counts as bench fields: requests by status (200, 429, anything else), stream ends, disconnects, memory.</summary>
    private static IEnumerable<KeyValuePair<string, object>> Fields(SoakCounts c)
    {
        yield return new("requests", c.Statuses.Values.Sum());
        yield return new("status_200", c.Statuses.GetValueOrDefault(200));
        yield return new("status_429", c.Statuses.GetValueOrDefault(429));
        yield return new("status_other", c.Statuses.Where(s => s.Key is not (200 or 429)).Sum(s => s.Value));
        yield return new("clean_stream_ends", c.CleanStreamEnds);
        yield return new("complete_answers", c.CompleteAnswers);
        yield return new("client_disconnects", c.ClientDisconnects);
        yield return new("broken_streams", c.BrokenStreams);
        yield return new("transport_errors", c.TransportErrors);
        yield return new("rss_mb", c.RssMb);
        yield return new("managed_mb", c.ManagedMb);
    }
}
