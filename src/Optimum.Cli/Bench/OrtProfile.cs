using Optimum.Core;
using System.Text.Json;

namespace Optimum.Cli;

/// <summary>Where the time of a bench's ORT runs went, from the JSON traces ORT writes when profiling is on.</summary>
public static class OrtProfile
{
    /// <summary>
    /// Moves the traces a session's EndProfiling returned into the work dir and adds the first one's 20 op
    /// types with the most kernel time as "profile" rows: kernel milliseconds per <paramref name="unit"/>
    /// (the trace covers <paramref name="count"/> of them) and share of all kernel time. A bench that profiles two
    /// sessions names their tables apart with <paramref name="bench"/>.
    /// </summary>
    public static void Report(BenchReport report, BenchRun run, IReadOnlyList<string> traces, int count, string unit, string bench = "profile")
    {
        var kept = traces.Select(t => MoveInto(t, run.WorkDir)).ToArray();
        using var doc = JsonDocument.Parse(File.ReadAllBytes(kept[0]));
        var byOp = new Dictionary<string, double>();
        foreach (var e in doc.RootElement.EnumerateArray())
        {
            if (!e.TryGetProperty("cat", out var cat) || cat.GetString() != "Node") continue;
            if (!e.TryGetProperty("name", out var name) || !name.GetString()!.EndsWith("_kernel_time", StringComparison.Ordinal)) continue;
            var op = e.GetProperty("args").TryGetProperty("op_name", out var o) ? o.GetString()! : "?";
            byOp[op] = byOp.GetValueOrDefault(op) + e.GetProperty("dur").GetDouble();     // microseconds
        }
        double total = byOp.Values.Sum();
        foreach (var (op, us) in byOp.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal).Take(20))
            report.Add(bench, new Dictionary<string, object> { ["op_type"] = op, [$"ms_per_{unit}"] = us / 1000 / count, ["share"] = us / total });
    }

    /// <summary>
    /// ORT takes the trace's path prefix when profiling is switched on, and SessionSettings.CreateOptions
    /// sets the prefix after that, so traces land in the working directory (the repository root) instead
    /// of under the work dir. Until that is fixed in Optimum.Training, move them; afterwards this is a no-op.
    /// </summary>
    private static string MoveInto(string trace, string dir)
    {
        var target = Path.Combine(dir, Path.GetFileName(trace));
        if (Path.GetFullPath(trace) != Path.GetFullPath(target)) File.Move(trace, target, overwrite: true);
        return target;
    }
}
