using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Server.Tests;

/// <summary>
/// <see cref="ServiceSoak"/> against the service on a real Kestrel, for a bounded time (10 s of warm-up, then 80 s;
/// OPTIMUM_SOAK_SECONDS sets another, `optimum-net bench soak --seconds N` runs longer ones): clients past the slots and
/// queue, most streaming, hanging up at random.
/// </summary>
[Collection(ModelFixture.Collection)]
public sealed class SoakTests(ModelFixture model, ITestOutputHelper output)
{
    private const int MaxConcurrent = 2, QueueLimit = 4;

    /// <summary>
    /// Memory growth allowed from the start (after 10 s of the same load, full GC) to the end (full GC). The service keeps
    /// nothing per request once it has answered, so the managed heap must come back to where it was, give or take its
    /// pools (Kestrel's buffers, HttpClient's connections, the metrics' series): measured here within 0.5 MB. RSS also holds
    /// what the GC and ONNX Runtime keep mapped once grown (heaps are not handed back to the system at once), and moves by
    /// 20 MB between collections under this load, so its bound is wider. A run answers about 400 requests (and 2,500 429s)
    /// on 2 busy cores: a leak of 20 KB per answer would fail the managed bound.
    /// </summary>
    private const double ManagedGrowthMb = 8, RssGrowthMb = 64;

    [Fact]
    public async Task Soak_AtTheQueueLimit_WithClientsHangingUp_Only200Or429AndCleanStreams_HealthyAndMemoryFlat()
    {
        double seconds = double.TryParse(Environment.GetEnvironmentVariable("OPTIMUM_SOAK_SECONDS"), System.Globalization.CultureInfo.InvariantCulture, out var s) ? s : 80;
        var app = OptimumServer.Build(["--urls", "http://127.0.0.1:0", $"--Optimum:Models:0={model.Dir}", "--Optimum:Threads=1",
            $"--Optimum:MaxConcurrent={MaxConcurrent}", $"--Optimum:QueueLimit={QueueLimit}"]);
        await app.StartAsync();
        await using var _ = app;
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(60) };

        var options = new SoakOptions
        {
            Duration = TimeSpan.FromSeconds(seconds), Clients = MaxConcurrent + QueueLimit + 2, MaxTokens = 32, Capacity = MaxConcurrent + QueueLimit,
        };
        var r = await ServiceSoak.RunAsync(http, options, w => output.WriteLine(Line(w)));
        var t = r.Total;
        output.WriteLine($"total {Line(t)}");
        output.WriteLine($"RSS {r.RssStartMb:F1} MB at the start (after warm-up), {r.RssEndMb:F1} MB at the end, peak {r.RssPeakMb:F1} MB; " +
            $"managed heap {r.ManagedStartMb:F1} -> {r.ManagedEndMb:F1} MB; slots free afterwards: {r.SlotsFreeAfter}");
        foreach (var f in r.Failures) output.WriteLine("FAIL " + f);

        Assert.Empty(r.Failures);
        Assert.All(t.Statuses.Keys, k => Assert.Contains(k, new[] { 200, 429 }));
        Assert.True(t.Statuses.GetValueOrDefault(200) > 0 && t.Statuses.GetValueOrDefault(429) > 0, "the soak should be answered and at its queue limit");
        Assert.True(t.CleanStreamEnds > 0 && t.ClientDisconnects > 0, "streams should end cleanly and clients hang up");
        Assert.Equal(0, t.BrokenStreams + t.TransportErrors);
        Assert.True(r.SlotsFreeAfter);
        Assert.True(r.ManagedEndMb - r.ManagedStartMb < ManagedGrowthMb, $"managed heap grew from {r.ManagedStartMb:F1} to {r.ManagedEndMb:F1} MB");
        Assert.True(r.RssEndMb - r.RssStartMb < RssGrowthMb, $"RSS grew from {r.RssStartMb:F1} to {r.RssEndMb:F1} MB");
    }

    private static string Line(SoakCounts c) =>
        $"{c.Seconds,6:F1} s: {string.Join(", ", c.Statuses.OrderBy(x => x.Key).Select(x => $"{x.Key} x {x.Value}"))}; clean stream ends {c.CleanStreamEnds}, " +
        $"complete answers {c.CompleteAnswers}, client disconnects {c.ClientDisconnects}, broken {c.BrokenStreams}, transport errors {c.TransportErrors}; " +
        $"RSS {c.RssMb:F1} MB, managed {c.ManagedMb:F1} MB";
}
