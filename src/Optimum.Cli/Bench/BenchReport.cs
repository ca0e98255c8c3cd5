using Optimum.Core;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Optimum.Cli;

/// <summary>
/// A bench's measurements. With --json each one is written as soon as it is made, one JSON object per
/// line with its kind in "bench" (what scripts read); otherwise <see cref="Print"/> writes them as
/// tables, consecutive measurements of one kind side by side.
/// </summary>
public sealed class BenchReport(bool json, TextWriter output)
{
    private static readonly JsonSerializerOptions Json = new() { NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals };
    private readonly List<Dictionary<string, object>> _all = [];

    /// <summary>
    /// A speed measurement: adds <c>peak_rss_mb</c>, the process's peak resident memory during it (see <see cref="PeakMemory"/>),
    /// and returns that figure.
    /// </summary>
    public double AddSpeed(string bench, IReadOnlyDictionary<string, object> fields)
    {
        double mb = PeakMemory.TakeMegabytes();
        Add(bench, fields.Append(new("peak_rss_mb", mb)));
        return mb;
    }

    /// <summary>A measurement as it is: a detail row (an op type of a profile) or a measurement a worker process made.</summary>
    public void Add(string bench, IEnumerable<KeyValuePair<string, object>> fields)
    {
        var m = new Dictionary<string, object> { ["bench"] = bench };
        foreach (var (k, v) in fields) if (k != "bench") m[k] = v;
        _all.Add(m);
        if (!json) return;
        output.WriteLine(JsonSerializer.Serialize(m, Json));
        output.Flush();
    }

    /// <summary>Adds one measurement from its JSON line (as <see cref="Add"/> writes it) and returns its fields.</summary>
    public IReadOnlyDictionary<string, object> AddJson(string line)
    {
        var fields = Parse(line);
        Add(fields.TryGetValue("bench", out var b) ? (string)b : "?", fields);
        return fields;
    }

    /// <summary>The fields of a JSON line (another program's measurement): strings, longs, doubles, booleans, other values as raw JSON.</summary>
    public static Dictionary<string, object> Parse(string line)
    {
        using var doc = JsonDocument.Parse(line);
        return doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.ValueKind switch
        {
            JsonValueKind.String => p.Value.GetString()!,
            JsonValueKind.Number => p.Value.TryGetInt64(out var l) ? l : (object)p.Value.GetDouble(),
            JsonValueKind.True or JsonValueKind.False => p.Value.GetBoolean(),
            _ => p.Value.GetRawText(),
        });
    }

    /// <summary>
    /// Writes the tables (nothing with --json). A group of measurements of one kind is a table with a
    /// row per field and a column per measurement, unless it has more measurements than fields (the op
    /// types of a profile): then a row per measurement.
    /// </summary>
    public void Print()
    {
        if (json) return;
        for (int i = 0; i < _all.Count;)
        {
            int j = i + 1;
            while (j < _all.Count && _all[j]["bench"].Equals(_all[i]["bench"]) && _all[j].Keys.SequenceEqual(_all[i].Keys)) j++;
            var group = _all[i..j];
            var keys = group[0].Keys.Where(k => k != "bench").ToArray();
            output.WriteLine($"{group[0]["bench"]}:");
            var rows = group.Count > keys.Length
                ? group.Select(m => keys.Select(k => Format(k, m[k])).ToArray()).Prepend(keys).ToArray()
                : keys.Select(k => group.Select(m => Format(k, m[k])).Prepend(k).ToArray()).ToArray();
            var widths = Enumerable.Range(0, rows[0].Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
            foreach (var r in rows)
                output.WriteLine("  " + string.Join("  ", r.Select((cell, c) => c == 0 ? cell.PadRight(widths[c]) : cell.PadLeft(widths[c]))).TrimEnd());
            i = j;
        }
    }

    private static string Format(string key, object value) => value switch
    {
        double d when key.Contains("share") || key.StartsWith("fraction", StringComparison.Ordinal) => d.ToString("P1", CultureInfo.InvariantCulture),
        double d => d.ToString(Math.Abs(d) >= 100 ? "N0" : Math.Abs(d) >= 1 ? "F2" : "G3", CultureInfo.InvariantCulture),
        int or long => Convert.ToInt64(value).ToString("N0", CultureInfo.InvariantCulture),
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "",
    };
}

/// <summary>
/// The process's peak resident memory (VmHWM of /proc/self/status, which Process.PeakWorkingSet64 reads
/// on Linux). Taking it also resets the peak (writing 5 to /proc/self/clear_refs), so each speed
/// measurement reports the peak since the previous one; where the kernel does not allow the reset the
/// figure is the peak since the process started.
/// </summary>
public static class PeakMemory
{
    /// <summary>
    /// Peak resident memory of another running process (VmHWM of /proc/PID/status), in MB; 0 once it has exited or where
    /// there is no /proc. Polled while a child runs, the last reading is its peak (the figure never falls).
    /// </summary>
    public static double OfProcessMegabytes(int pid)
    {
        try
        {
            foreach (var line in File.ReadLines($"/proc/{pid}/status"))
                if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    return long.Parse(line["VmHWM:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024 / 1e6;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        return 0;
    }

    public static double TakeMegabytes()
    {
        using var self = Process.GetCurrentProcess();
        double mb = self.PeakWorkingSet64 / 1e6;
        try { File.WriteAllText("/proc/self/clear_refs", "5"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }     // no reset: the peak stays since process start
        return mb;
    }
}
