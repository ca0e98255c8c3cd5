using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace Optimum.Server;

/// <summary>How a <see cref="ServiceSoak"/> runs.</summary>
public sealed record SoakOptions
{
    /// <summary>How long clients send requests, after <see cref="Warmup"/>.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(90);
    /// <summary>The same load before the measured run, not counted: the starting memory is taken after it, once pools, threads and arenas have grown to the load.</summary>
    public TimeSpan Warmup { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>Clients sending back to back; more than the service's slots plus queue places keeps it at its queue limit (some 429s).</summary>
    public int Clients { get; init; } = 8;
    /// <summary>Most tokens a completion asks for (each request draws 1 to this).</summary>
    public int MaxTokens { get; init; } = 32;
    /// <summary>Share of requests that stream (server-sent events); the others take the whole completion.</summary>
    public double StreamShare { get; init; } = 0.8;
    /// <summary>Share of requests the client abandons: a stream after a random number of events, a plain request after a random delay.</summary>
    public double DisconnectShare { get; init; } = 0.3;
    /// <summary>The served language model to ask (null: the service's default).</summary>
    public string? Model { get; init; }
    public string? ApiKey { get; init; }
    /// <summary>Generation slots plus queue places of the service: afterwards that many requests at once must all get 200 (no slot leaked); 0 skips the check.</summary>
    public int Capacity { get; init; }
    /// <summary>Memory and counts are reported per window of this length.</summary>
    public TimeSpan Window { get; init; } = TimeSpan.FromSeconds(10);
    public int Seed { get; init; } = 1;
}

/// <summary>Counts of one window of a soak (or of all of it), and this process's memory at its end.</summary>
public sealed record SoakCounts(double Seconds, IReadOnlyDictionary<int, long> Statuses, long CleanStreamEnds, long CompleteAnswers, long ClientDisconnects,
    long BrokenStreams, long TransportErrors, double RssMb, double ManagedMb);

/// <summary>
/// What a soak saw. <see cref="Failures"/> lists what must not happen (a status other than 200 or 429, a stream that
/// ended without [DONE] or with an error event, an answer that is not a completion, a transport error the client did not
/// cause, slots still taken afterwards); memory is this process's resident set (RSS) and managed heap after a full collection.
/// </summary>
public sealed record SoakResult(SoakCounts Total, IReadOnlyList<SoakCounts> Windows, double RssStartMb, double RssEndMb, double RssPeakMb,
    double ManagedStartMb, double ManagedEndMb, bool? SlotsFreeAfter, IReadOnlyList<string> Failures);

/// <summary>
/// A soak of the completions service over HTTP: <see cref="SoakOptions.Clients"/> clients send completions back to back
/// for <see cref="SoakOptions.Duration"/>, most of them streaming, and hang up at random points (while queued, mid-stream,
/// mid-answer). Every answer must be a 200 (a complete stream or completion, unless the client hung up) or a 429; the
/// service must be healthy afterwards with all its slots free; and the memory of this process, where the service runs
/// (as in the bench and the tests), should stay flat: RSS and managed heap at the start (after warm-up) and end.
/// </summary>
public static class ServiceSoak
{
    public static async Task<SoakResult> RunAsync(HttpClient http, SoakOptions o, Action<SoakCounts>? onWindow = null, CancellationToken cancel = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(o.Clients, 1, nameof(o.Clients));
        ArgumentOutOfRangeException.ThrowIfLessThan(o.MaxTokens, 1, nameof(o.MaxTokens));
        var failures = new List<string>();
        await Load(http, o, o.Warmup, new Tally(), null, failures, cancel);
        var (rssStart, managedStart) = Memory();
        var total = new Tally();
        var (windows, rssPeak, seconds) = await Load(http, o, o.Duration, total, onWindow, failures, cancel);
        rssPeak = Math.Max(rssPeak, rssStart);

        bool? slotsFree = o.Capacity > 0 ? await SlotsFree(http, o, failures, cancel) : null;
        using (var health = await http.GetAsync("healthz", cancel))
            if ((int)health.StatusCode != 200) failures.Add($"GET /healthz after the soak: {(int)health.StatusCode}");
        var (rssEnd, managedEnd) = Memory();
        rssPeak = Math.Max(rssPeak, rssEnd);
        return new SoakResult(total.Counts(seconds, rssEnd, managedEnd), windows, rssStart, rssEnd, rssPeak, managedStart, managedEnd, slotsFree, failures);
    }

    /// <summary>The clients for <paramref name="duration"/> (then their requests in flight): windows of counts, the highest RSS seen, the seconds it took.</summary>
    private static async Task<(List<SoakCounts> Windows, double RssPeak, double Seconds)> Load(HttpClient http, SoakOptions o, TimeSpan duration, Tally total,
        Action<SoakCounts>? onWindow, List<string> failures, CancellationToken cancel)
    {
        var window = new Tally();
        var windows = new List<SoakCounts>();
        double rssPeak = 0;
        var clock = Stopwatch.StartNew();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        stop.CancelAfter(duration);
        var all = Task.WhenAll(Enumerable.Range(0, o.Clients).Select(c => Task.Run(() => Client(http, o, c, stop.Token, total, window, failures))));
        while (!all.IsCompleted)
        {
            await Task.WhenAny(all, Task.Delay(o.Window, CancellationToken.None));
            double rss = Rss();
            rssPeak = Math.Max(rssPeak, rss);
            var w = window.TakeCounts(clock.Elapsed.TotalSeconds, rss, GC.GetTotalMemory(false) / 1e6);
            windows.Add(w);
            onWindow?.Invoke(w);
        }
        await all;
        return (windows, rssPeak, clock.Elapsed.TotalSeconds);
    }

    /// <summary>One client: requests back to back until <paramref name="stop"/>; after a 429 it waits 20 to 100 ms (a client spinning on 429s would only burn the CPU the service needs).</summary>
    private static async Task Client(HttpClient http, SoakOptions o, int id, CancellationToken stop, Tally total, Tally window, List<string> failures)
    {
        var rng = new Random(HashCode.Combine(o.Seed, id));
        void Fail(string what)
        {
            lock (failures) if (failures.Count < 100) failures.Add(what);
        }
        while (!stop.IsCancellationRequested)
        {
            bool stream = rng.NextDouble() < o.StreamShare;
            bool leave = rng.NextDouble() < o.DisconnectShare;
            int tokens = rng.Next(1, o.MaxTokens + 1);
            // Where to hang up: after that many events of a stream, or after a delay (queued or generating) for a plain request.
            int afterEvents = rng.Next(0, tokens + 1);
            using var hangUp = new CancellationTokenSource();
            if (leave && !stream) hangUp.CancelAfter(TimeSpan.FromMilliseconds(rng.Next(0, 50)));
            using var request = Request(o, tokens, stream, seed: rng.Next());
            int status = 0;
            try
            {
                using var r = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, hangUp.Token);
                status = (int)r.StatusCode;
                Add(total, window, t => t.Status(status));
                if (status == 429)
                {
                    await r.Content.ReadAsStringAsync(CancellationToken.None);
                    await Task.Delay(rng.Next(20, 100), CancellationToken.None);
                    continue;
                }
                if (status != 200) { Fail($"status {status}: {Clip(await r.Content.ReadAsStringAsync(CancellationToken.None))}"); continue; }
                if (!stream)
                {
                    var text = await r.Content.ReadAsStringAsync(hangUp.Token);
                    if (IsCompletion(text)) Add(total, window, t => Interlocked.Increment(ref t.Complete));
                    else Fail($"a 200 that is not a completion: {Clip(text)}");
                    continue;
                }
                using var reader = new StreamReader(await r.Content.ReadAsStreamAsync(CancellationToken.None));
                int events = 0;
                bool done = false;
                while (await reader.ReadLineAsync(CancellationToken.None) is { } line)
                {
                    if (line.Length == 0) continue;
                    if (leave && events >= afterEvents) break;
                    if (line == "data: [DONE]") { done = true; break; }
                    // An error event is an object with "error" at its top; a piece of text that reads "error" is not one.
                    if (line.StartsWith("data: {\"error\"", StringComparison.Ordinal)) { Fail($"an error event: {Clip(line)}"); break; }
                    events++;
                }
                if (leave && !done) Add(total, window, t => Interlocked.Increment(ref t.Disconnects));      // disposing the response hangs up
                else if (done) Add(total, window, t => Interlocked.Increment(ref t.Clean));
                else { Add(total, window, t => Interlocked.Increment(ref t.Broken)); Fail($"a stream that ended after {events} events without [DONE]"); }
            }
            catch (OperationCanceledException) when (hangUp.IsCancellationRequested)
            {
                Add(total, window, t => Interlocked.Increment(ref t.Disconnects));
            }
            catch (Exception e) when (e is HttpRequestException or IOException or OperationCanceledException)
            {
                // Not the client's doing (that is caught above): the connection failed, or the request outlived HttpClient.Timeout.
                Add(total, window, t => Interlocked.Increment(ref t.Errors));
                Fail($"transport error{(status > 0 ? $" after status {status}" : "")}: {e.Message}");
            }
        }
    }

    /// <summary>Capacity requests at once after the run: all 200 unless a slot or queue place was never given back (tried three times, a second apart, as slots of just-abandoned requests free up).</summary>
    private static async Task<bool> SlotsFree(HttpClient http, SoakOptions o, List<string> failures, CancellationToken cancel)
    {
        int[] statuses = [];
        for (int attempt = 0; attempt < 3; attempt++)
        {
            await Task.Delay(TimeSpan.FromSeconds(1), cancel);
            statuses = await Task.WhenAll(Enumerable.Range(0, o.Capacity).Select(async i =>
            {
                using var r = await http.SendAsync(Request(o, 1, stream: false, seed: i), cancel);
                return (int)r.StatusCode;
            }));
            if (statuses.All(s => s == 200)) return true;
        }
        failures.Add($"{o.Capacity} requests at once after the soak (its slots plus queue places): {string.Join(", ", statuses.GroupBy(s => s).Select(g => $"{g.Key} x {g.Count()}"))}");
        return false;
    }

    private static HttpRequestMessage Request(SoakOptions o, int maxTokens, bool stream, int seed)
    {
        var body = new Dictionary<string, object> { ["prompt"] = "Call me Ishmael. Some years ago", ["max_tokens"] = maxTokens, ["stream"] = stream, ["seed"] = seed };
        if (o.Model is not null) body["model"] = o.Model;
        var m = new HttpRequestMessage(HttpMethod.Post, "v1/completions") { Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json") };
        if (o.ApiKey is not null) m.Headers.Authorization = new AuthenticationHeaderValue("Bearer", o.ApiKey);
        return m;
    }

    private static bool IsCompletion(string text)
    {
        try
        {
            using var doc = JsonDocument.Parse(text);
            return doc.RootElement.GetProperty("choices")[0].GetProperty("text").ValueKind == JsonValueKind.String;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or IndexOutOfRangeException) { return false; }
    }

    /// <summary>RSS and managed heap in MB after a full, compacting collection (what is left is what is held).</summary>
    private static (double Rss, double Managed) Memory()
    {
        System.Runtime.GCSettings.LargeObjectHeapCompactionMode = System.Runtime.GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Forced, blocking: true, compacting: true);
        return (Rss(), GC.GetTotalMemory(false) / 1e6);
    }

    private static double Rss()
    {
        using var self = Process.GetCurrentProcess();
        return self.WorkingSet64 / 1e6;
    }

    private static void Add(Tally total, Tally window, Action<Tally> add)
    {
        add(total);
        add(window);
    }

    private static string Clip(string s) => s.Length > 200 ? s[..200] + "..." : s;

    /// <summary>Thread-safe counts.</summary>
    private sealed class Tally
    {
        private readonly Dictionary<int, long> _statuses = [];
        public long Clean, Complete, Disconnects, Broken, Errors;

        public void Status(int status)
        {
            lock (_statuses) _statuses[status] = _statuses.GetValueOrDefault(status) + 1;
        }

        public SoakCounts Counts(double seconds, double rssMb, double managedMb)
        {
            lock (_statuses)
                return new(seconds, new Dictionary<int, long>(_statuses), Interlocked.Read(ref Clean), Interlocked.Read(ref Complete), Interlocked.Read(ref Disconnects),
                    Interlocked.Read(ref Broken), Interlocked.Read(ref Errors), rssMb, managedMb);
        }

        /// <summary>The counts so far, then zero (a window's).</summary>
        public SoakCounts TakeCounts(double seconds, double rssMb, double managedMb)
        {
            lock (_statuses)
            {
                var c = new SoakCounts(seconds, new Dictionary<int, long>(_statuses), Interlocked.Exchange(ref Clean, 0), Interlocked.Exchange(ref Complete, 0),
                    Interlocked.Exchange(ref Disconnects, 0), Interlocked.Exchange(ref Broken, 0), Interlocked.Exchange(ref Errors, 0), rssMb, managedMb);
                _statuses.Clear();
                return c;
            }
        }
    }
}
