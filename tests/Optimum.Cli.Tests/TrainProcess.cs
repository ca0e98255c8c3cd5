using System.Diagnostics;
using Optimum.Core;
using Optimum.Models;
using Optimum.Tests;

namespace Optimum.Cli.Tests;

/// <summary>
/// <c>optimum-net train</c> as a child process (alone or under <c>mpirun -np N</c>) on a 1-layer, 8-wide GPT-2 and 40,000
/// characters of Moby-Dick, with its output read line by line, so tests can act while it runs (kill it, start another).
/// </summary>
internal sealed class TrainProcess : IDisposable
{
    private readonly Process _p;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly List<(double At, string Text)> _lines = [];
    private bool _ended;

    private TrainProcess(Process p)
    {
        _p = p;
        p.OutputDataReceived += (_, e) => Line(e.Data);
        p.ErrorDataReceived += (_, e) => Line(e.Data);
        p.EnableRaisingEvents = true;
        p.Exited += (_, _) => { lock (_lines) { _ended = true; Monitor.PulseAll(_lines); } };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        p.StandardInput.Close();
    }

    private void Line(string? line)
    {
        if (line is null) return;
        lock (_lines)
        {
            _lines.Add((_clock.Elapsed.TotalSeconds, line));
            Monitor.PulseAll(_lines);
        }
    }

    public static string Cli => Path.Combine(AppContext.BaseDirectory, "optimum-net.dll");

    public static string? Mpirun { get; } = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':')
        .Select(d => Path.Combine(d, "mpirun")).FirstOrDefault(File.Exists);

    /// <summary>Starts <c>optimum-net <paramref name="args"/></c>, under <c>mpirun -np <paramref name="mpiRanks"/></c> when that is above 0.</summary>
    public static TrainProcess Start(string args, int mpiRanks = 0)
    {
        var psi = mpiRanks == 0
            ? new ProcessStartInfo("dotnet", $"{Cli} {args}")
            : new ProcessStartInfo(Mpirun!, $"--allow-run-as-root --oversubscribe -np {mpiRanks} dotnet {Cli} {args}");
        psi.RedirectStandardOutput = psi.RedirectStandardError = psi.RedirectStandardInput = true;
        psi.UseShellExecute = false;
        psi.Environment["TERM"] = "dumb";
        psi.Environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none";
        return new TrainProcess(Process.Start(psi)!);
    }

    /// <summary>Runs to the end (at most <paramref name="timeoutMs"/>); returns the exit code and everything it printed.</summary>
    public static (int Code, string Output) Run(string args, int mpiRanks = 0, int timeoutMs = 180_000)
    {
        using var p = Start(args, mpiRanks);
        return (p.WaitForExit(timeoutMs), p.Output);
    }

    public int Id => _p.Id;
    public bool HasExited => _p.HasExited;
    public string Output { get { lock (_lines) return string.Join('\n', _lines.Select(l => l.Text)); } }
    /// <summary>Seconds since the start.</summary>
    public double Elapsed => _clock.Elapsed.TotalSeconds;

    /// <summary>
    /// Waits for a line that <paramref name="match"/> accepts; returns when it came (seconds since the start), or null when
    /// the process ended without it. Past <paramref name="timeoutMs"/> the process is killed and it throws.
    /// </summary>
    public double? WaitForLine(Func<string, bool> match, int timeoutMs = 120_000)
    {
        var deadline = _clock.Elapsed.TotalMilliseconds + timeoutMs;
        lock (_lines)
        {
            for (int seen = 0; ; )
            {
                for (; seen < _lines.Count; seen++)
                    if (match(_lines[seen].Text)) return _lines[seen].At;
                if (_ended || _p.HasExited) return null;
                var left = deadline - _clock.Elapsed.TotalMilliseconds;
                if (left <= 0) break;
                Monitor.Wait(_lines, TimeSpan.FromMilliseconds(Math.Min(left, 200)));
            }
        }
        Kill();
        throw new TimeoutException($"optimum-net printed no such line within {timeoutMs / 1000} s:\n{Output}");
    }

    /// <summary>Waits until the job printed its "model:" line (it holds the output folder and has its data, weights and session); false when it ended first.</summary>
    public bool WaitUntilStarted() => WaitForLine(l => l.StartsWith("model: ", StringComparison.Ordinal)) is not null;

    /// <summary>Waits up to <paramref name="timeoutMs"/> for the exit; true when it ended (then <see cref="WaitForExit"/> gives the code).</summary>
    public bool TryWaitForExit(int timeoutMs) => _p.WaitForExit(timeoutMs);

    /// <summary>Waits for the exit (and the last output lines); returns the exit code. A process past the timeout is killed and throws.</summary>
    public int WaitForExit(int timeoutMs = 180_000)
    {
        if (!_p.WaitForExit(timeoutMs))
        {
            Kill();
            throw new TimeoutException($"optimum-net did not end within {timeoutMs / 1000} s:\n{Output}");
        }
        _p.WaitForExit();                                                               // drains the redirected output
        return _p.ExitCode;
    }

    /// <summary>SIGKILL to the process and every process under it (mpirun's ranks), then waits for it.</summary>
    public void Kill()
    {
        try { _p.Kill(entireProcessTree: true); }
        catch (InvalidOperationException) { }                                          // it had ended
        // Bounded: an orphaned child holding the output pipe would keep an unbounded wait for the end of the output waiting.
        _p.WaitForExit(30_000);
    }

    public void Dispose()
    {
        if (!_p.HasExited) Kill();
        _p.Dispose();
    }

    /// <summary>Process ids whose command line contains <paramref name="text"/> (e.g. an output folder: orphaned ranks).</summary>
    public static int[] ProcessesWith(string text) => Directory.GetDirectories("/proc")
        .Select(d => int.TryParse(Path.GetFileName(d), out var pid) ? pid : -1).Where(pid => pid > 0 && pid != Environment.ProcessId)
        .Where(pid =>
        {
            try { return File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ').Contains(text, StringComparison.Ordinal); }
            catch (IOException) { return false; }
            catch (UnauthorizedAccessException) { return false; }
        }).ToArray();

    /// <summary>Writes the tiny GPT-2 (dropout 0.1, so resumes must also reproduce the dropout masks) and the text under <paramref name="dir"/>.</summary>
    public static (string Model, string Data) TinyJob(string dir)
    {
        var model = Path.Combine(dir, "model");
        ModelKinds.Write(model, new Gpt2Config
        {
            VocabSize = 50257, NPositions = 32, NEmbd = 8, NLayer = 1, NHead = 2, EmbdPdrop = 0.1, AttnPdrop = 0.1, ResidPdrop = 0.1,
        });
        var data = Path.Combine(dir, "text.txt");
        File.WriteAllText(data, File.ReadAllText(Repo.Path("samples", "data", "moby-dick.txt"))[..40_000]);
        return (model, data);
    }

    /// <summary>The train command of the tiny job, with AdamW (the default): its moments must resume exactly too.</summary>
    public static string TrainArgs(string model, string data, string outDir, long steps, string extra = "") =>
        $"train --model {model} --data {data} --out {outDir} --steps {steps} --batch-size 2 --seq-len 16 --lr 0.01 --warmup 2 " +
        $"--schedule cosine --clip 0.5 --eval-every 10 --eval-samples 8 --seed 3 --threads 1 {extra}";
}
