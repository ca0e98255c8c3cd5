using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Server.Tests;

/// <summary>
/// Clients that trickle their headers or bodies (slowloris) against the service on a real Kestrel: they never hold the
/// one generation slot (a normal request beside them gets 200, not 429), and the server closes their connections.
/// The limits are set small so the test is quick; the bounds on when a connection closes are liveness bounds, not timings.
/// </summary>
[Collection(ModelFixture.Collection)]
public sealed class SlowClientTests(ModelFixture model, ITestOutputHelper output)
{
    /// <summary>How long a trickling client keeps going before it gives up on the server closing it.</summary>
    private static readonly TimeSpan GiveUp = TimeSpan.FromSeconds(40);

    private static async Task<(WebApplication App, Uri Address)> Start(params string[] settings)
    {
        var app = OptimumServer.Build(["--urls", "http://127.0.0.1:0", .. settings]);
        await app.StartAsync();
        return (app, new Uri(app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First()));
    }

    /// <summary>What happened to one trickling connection: the status the server answered (-1: none), whether the server closed it, after how long.</summary>
    private sealed record Trickled(string What, int Status, bool ClosedByServer, double Seconds);

    /// <summary>
    /// Sends <paramref name="head"/> at once, then <paramref name="drip"/> one byte every <paramref name="every"/> (nothing when empty) until the server
    /// answers or closes the connection (or <see cref="GiveUp"/> passes: not closed by the server).
    /// </summary>
    private static async Task<Trickled> Trickle(Uri address, string what, string head, string drip, TimeSpan every)
    {
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(address.Host, address.Port);
        var stream = tcp.GetStream();
        var clock = Stopwatch.StartNew();
        var received = new StringBuilder();
        var reading = Task.Run(async () =>
        {
            var buffer = new byte[4096];
            try
            {
                int n;
                while ((n = await stream.ReadAsync(buffer)) > 0) received.Append(Encoding.ASCII.GetString(buffer, 0, n));
            }
            catch (IOException) { }                                              // reset: closed all the same
        });
        try
        {
            await stream.WriteAsync(Encoding.ASCII.GetBytes(head));
            for (int i = 0; !reading.IsCompleted && clock.Elapsed < GiveUp; i++)
            {
                if (drip.Length > 0) await stream.WriteAsync(Encoding.ASCII.GetBytes(drip[i % drip.Length].ToString()));
                await Task.WhenAny(reading, Task.Delay(every));
            }
        }
        catch (IOException) { }                                                  // the server closed it while we wrote
        bool closed = await Task.WhenAny(reading, Task.Delay(GiveUp)) == reading;
        var m = System.Text.RegularExpressions.Regex.Match(received.ToString(), @"^HTTP/1\.1 (\d{3})");
        return new(what, m.Success ? int.Parse(m.Groups[1].Value) : -1, closed, clock.Elapsed.TotalSeconds);
    }

    private static string Head(int contentLength) =>
        $"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {contentLength}\r\n\r\n";

    private const string HeaderTrickle = "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    private const string Body = "{\"prompt\": \"Call me Ishmael, said the slow client\", \"max_tokens\": 3}";

    [Fact]
    public async Task TricklingClients_HoldNoGenerationSlot_AndTheServerClosesThem()
    {
        // One slot and no queue: a trickler holding the slot would make the normal requests 429.
        var (app, address) = await Start($"--Optimum:Models:0={model.Dir}", "--Optimum:Threads=1", "--Optimum:MaxConcurrent=1", "--Optimum:QueueLimit=0",
            "--Optimum:RequestHeadersTimeoutSeconds=1", "--Optimum:RequestBodyTimeoutSeconds=2");
        await using var _ = app;
        using var http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromSeconds(60) };
        var every = TimeSpan.FromMilliseconds(100);
        var slow = new List<Task<Trickled>>();
        for (int i = 0; i < 3; i++)
        {
            slow.Add(Trickle(address, "headers", HeaderTrickle, "abcdefgh", every));
            slow.Add(Trickle(address, "body", Head(Body.Length), Body, every));                         // 10 B/s
            slow.Add(Trickle(address, "body, none of it", Head(Body.Length), "", every));
        }
        // Normal requests while the tricklers are connected: each gets the one slot.
        var statuses = new List<HttpStatusCode>();
        for (int i = 0; i < 6; i++)
        {
            await Task.Delay(250);
            using var r = await http.PostAsync("/v1/completions", new StringContent(Body, Encoding.UTF8, "application/json"));
            statuses.Add(r.StatusCode);
        }
        var done = await Task.WhenAll(slow);
        foreach (var t in done) output.WriteLine($"{t.What}: {(t.Status < 0 ? "no answer" : t.Status.ToString())}, {(t.ClosedByServer ? "closed by the server" : "still open")} after {t.Seconds:F1} s");
        output.WriteLine($"normal requests meanwhile: {string.Join(", ", statuses.Select(s => (int)s))}");

        Assert.All(statuses, s => Assert.Equal(HttpStatusCode.OK, s));
        Assert.All(done, t => Assert.True(t.ClosedByServer, $"{t.What}: the server did not close the connection within {GiveUp.TotalSeconds} s"));
        // A body that does not arrive in time is a 408 problem; headers that do not arrive get Kestrel's 408 or just a close.
        Assert.All(done.Where(t => t.What.StartsWith("body")), t => Assert.Equal(408, t.Status));
        Assert.All(done.Where(t => t.What == "headers"), t => Assert.Contains(t.Status, new[] { -1, 408 }));
        using var after = await http.PostAsync("/v1/completions", new StringContent(Body, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
    }

    [Fact]
    public async Task ABodyBelowTheMinimumRate_IsCutOffByKestrel()
    {
        // The body's own deadline far away: what cuts the trickle is Kestrel's minimum rate (100 B/s after its 5 s grace).
        var (app, address) = await Start($"--Optimum:Models:0={model.Dir}", "--Optimum:Threads=1", "--Optimum:MaxConcurrent=1", "--Optimum:QueueLimit=0",
            "--Optimum:RequestBodyTimeoutSeconds=600", "--Optimum:MinRequestBodyBytesPerSecond=100");
        await using var _ = app;
        var t = await Trickle(address, "body", Head(Body.Length), Body, TimeSpan.FromMilliseconds(100));
        output.WriteLine($"{t.What}: {t.Status}, closed by the server: {t.ClosedByServer}, after {t.Seconds:F1} s");
        Assert.True(t.ClosedByServer);
        Assert.Equal(408, t.Status);
    }

    [Fact]
    public void ApplyLimits_SetsKestrelsLimitsFromTheOptions_AndBuildAppliesThem()
    {
        var o = new ServerOptions { RequestHeadersTimeoutSeconds = 3, KeepAliveTimeoutSeconds = 7, MaxRequestHeadersBytes = 8192, MaxConnections = 50, MaxBodyBytes = 4096, MinRequestBodyBytesPerSecond = 300 };
        var limits = new KestrelServerOptions().Limits;
        OptimumServer.ApplyLimits(limits, o);
        Assert.Equal(TimeSpan.FromSeconds(3), limits.RequestHeadersTimeout);
        Assert.Equal(TimeSpan.FromSeconds(7), limits.KeepAliveTimeout);
        Assert.Equal(8192, limits.MaxRequestHeadersTotalSize);
        Assert.Equal(50, limits.MaxConcurrentConnections);
        Assert.Equal(4096, limits.MaxRequestBodySize);
        Assert.Equal(300, limits.MinRequestBodyDataRate!.BytesPerSecond);
        OptimumServer.ApplyLimits(limits, new ServerOptions { MaxConnections = 0, MinRequestBodyBytesPerSecond = 0 });
        Assert.Null(limits.MaxConcurrentConnections);
        Assert.Null(limits.MinRequestBodyDataRate);

        using var app = OptimumServer.Build(new ServerOptions { Models = [new("tiny", model.Dir)], Threads = 1, RequestHeadersTimeoutSeconds = 4 });
        Assert.Equal(TimeSpan.FromSeconds(4), app.Services.GetRequiredService<IOptions<KestrelServerOptions>>().Value.Limits.RequestHeadersTimeout);
    }

    [Theory]
    [InlineData("RequestBodyTimeoutSeconds", "0")]
    [InlineData("RequestHeadersTimeoutSeconds", "-1")]
    [InlineData("KeepAliveTimeoutSeconds", "NaN")]
    [InlineData("MinRequestBodyBytesPerSecond", "-5")]
    [InlineData("MaxRequestHeadersBytes", "100")]
    [InlineData("MaxConnections", "-1")]
    public void InvalidLimits_FailAtStartNamingTheOption(string option, string value)
    {
        var e = Assert.Throws<InvalidOperationException>(() =>
        {
            using var app = OptimumServer.Build(["--urls", "http://127.0.0.1:0", $"--Optimum:Models:0={model.Dir}", $"--Optimum:{option}={value}"]);
        });
        Assert.Contains($"Optimum:{option}", e.Message);
    }
}
