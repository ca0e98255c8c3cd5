using System.Diagnostics;

namespace Optimum.Cli;

/// <summary>
/// A reference program run by a bench in the same run (the TorchSharp reference, onnxruntime-genai): its script prints one
/// JSON line as its result. Its peak resident memory is read from /proc while it runs (the run.sh scripts exec the program,
/// so the process is the reference itself once its build is done).
/// </summary>
public static class ReferenceRun
{
    /// <summary>Runs <c>bash <paramref name="script"/> <paramref name="args"/></c>; returns the fields of its last JSON line and its peak RSS in MB.</summary>
    public static (IReadOnlyDictionary<string, object> Result, double PeakRssMb) Run(string what, string script, IEnumerable<string> args)
    {
        if (!File.Exists(script)) throw new FileNotFoundException($"The {what} reference '{script}' does not exist.", script);
        return RunProcess(what, "bash", [script, .. args]);
    }

    /// <summary>Runs <paramref name="exe"/> with <paramref name="args"/>; returns the fields of its last JSON line and its peak RSS in MB (polled).</summary>
    public static (IReadOnlyDictionary<string, object> Result, double PeakRssMb) RunProcess(string what, string exe, IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo(exe, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        double rss = 0;
        using var done = new CancellationTokenSource();
        var poll = Task.Run(async () =>
        {
            while (!done.IsCancellationRequested)
            {
                rss = Math.Max(rss, PeakMemory.OfProcessMegabytes(p.Id));
                try { await Task.Delay(100, done.Token); } catch (OperationCanceledException) { }
            }
        });
        var stderr = p.StandardError.ReadToEndAsync();
        var stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        done.Cancel();
        poll.Wait();
        var line = stdout.Split('\n').LastOrDefault(l => l.TrimStart().StartsWith('{'))
            ?? throw new InvalidDataException($"The {what} run ({exe} {string.Join(' ', args)}) printed no result (exit {p.ExitCode}): {stderr.Result}");
        return (BenchReport.Parse(line), rss);
    }

    /// <summary>A numeric field of a reference's result, whether it printed it as an integer or not.</summary>
    public static double Number(this IReadOnlyDictionary<string, object> result, string key) =>
        result.TryGetValue(key, out var v) ? Convert.ToDouble(v, System.Globalization.CultureInfo.InvariantCulture)
            : throw new InvalidDataException($"The reference's result has no '{key}' (it has: {string.Join(", ", result.Keys)}).");
}
