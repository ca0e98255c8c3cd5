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
        var line = p.ExitCode == 0 ? stdout.Split('\n').LastOrDefault(l => l.TrimStart().StartsWith('{')) : null;
        if (line is null)
            throw new InvalidDataException($"The {what} run ({exe} {string.Join(' ', args)}) {(p.ExitCode != 0 ? $"failed (exit {p.ExitCode})" : "printed no result")}: {stderr.Result.Trim()} {stdout.Trim()}");
        return (BenchReport.Parse(line), rss);
    }

    /// <summary>Runs this command line again (a bench's worker in a fresh process, so its peak RSS is its own) with <paramref name="args"/>.</summary>
    public static (IReadOnlyDictionary<string, object> Result, double PeakRssMb) RunSelf(string what, IEnumerable<string> args)
    {
        var exe = Environment.ProcessPath ?? "dotnet";
        string[] prefix = Path.GetFileNameWithoutExtension(exe) == "dotnet" ? [System.Reflection.Assembly.GetEntryAssembly()!.Location] : [];
        return RunProcess(what, exe, [.. prefix, .. args]);
    }

    /// <summary>A numeric field of a reference's result, whether it printed it as an integer or not.</summary>
    public static double Number(this IReadOnlyDictionary<string, object> result, string key) =>
        result.TryGetValue(key, out var v) ? Convert.ToDouble(v, System.Globalization.CultureInfo.InvariantCulture)
            : throw new InvalidDataException($"The reference's result has no '{key}' (it has: {string.Join(", ", result.Keys)}).");
}
