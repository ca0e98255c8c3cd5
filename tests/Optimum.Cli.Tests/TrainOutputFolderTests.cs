using System.Diagnostics;
using System.Text.Json;
using Optimum.Tests;
using Optimum.Training;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>
/// One <c>train</c> at a time in an <c>--out</c>: a second run is refused while the first holds the folder, a killed run's
/// lock does not block the next, and a new run refuses another run's checkpoints unless told to resume or start over.
/// </summary>
[Collection(MpirunCollection.Name)]
public sealed class TrainOutputFolderTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private (int Code, string Output) Run(string args)
    {
        var (code, text) = TrainProcess.Run(args);
        output.WriteLine($"$ optimum-net {args}\n-> exit {code}\n{text}\n");
        return (code, text);
    }

    /// <summary>The steps of metrics.jsonl's training lines, in file order.</summary>
    private static long[] LoggedSteps(string outDir) => File.ReadAllLines(Path.Combine(outDir, "metrics.jsonl"))
        .Select(l => JsonDocument.Parse(l).RootElement).Where(e => e.TryGetProperty("loss", out _)).Select(e => e.GetProperty("step").GetInt64()).ToArray();

    private static bool LockedByAnother(string outDir)
    {
        try { using var f = new FileStream(Path.Combine(outDir, RunFolder.LockFile), FileMode.Open, FileAccess.ReadWrite, FileShare.None); return false; }
        catch (IOException e) when (e is not FileNotFoundException) { return true; }
    }

    /// <summary>The text with every run of white space as one space: progress lines are wrapped at the console's width.</summary>
    private static string Squash(string text) => string.Join(' ', text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));

    private static void Interrupt(int pid) => Process.Start("kill", $"-INT {pid}")!.WaitForExit();

    [Fact]
    public void ASecondRunIntoAFolderInUse_IsRefusedInOneLine_AndTheFirstKeepsOnlyItsOwnSteps()
    {
        var (model, data) = TrainProcess.TinyJob(_dir);
        var outDir = Path.Combine(_dir, "out");
        // A run long enough to be still running: stopped by Ctrl-C (SIGINT) once the second one has been refused.
        using var first = TrainProcess.Start(TrainProcess.TrainArgs(model, data, outDir, 100_000, "--save-every 0"));
        Assert.True(first.WaitUntilStarted() && !first.HasExited, first.Output);
        var (code, text) = Run(TrainProcess.TrainArgs(model, data, outDir, 30));
        Assert.Equal(1, code);
        var error = Assert.Single(text.Split('\n'), l => l.StartsWith("error: ", StringComparison.Ordinal));
        Assert.StartsWith($"error: Output folder '{outDir}' is in use by another training run", error);
        Assert.DoesNotContain("model: ", text);                                         // refused before opening anything
        Assert.False(first.HasExited, "the first run ended before the second was refused; the test needs it running");

        // At least one logged step before Ctrl-C (on a loaded machine the first step can take seconds), bounded.
        var deadline = DateTime.UtcNow.AddSeconds(120);
        while (!first.HasExited && DateTime.UtcNow < deadline && !(File.Exists(Path.Combine(outDir, "metrics.jsonl")) && File.ReadAllText(Path.Combine(outDir, "metrics.jsonl")).Contains("\"loss\"", StringComparison.Ordinal))) Thread.Sleep(100);
        Interrupt(first.Id);
        Assert.True(first.WaitForExit() == 130, first.Output);
        output.WriteLine(first.Output);
        var steps = LoggedSteps(outDir);
        Assert.NotEmpty(steps);
        Assert.Equal(Enumerable.Range(1, steps.Length).Select(i => (long)i), steps);     // every step once, in order: its own only
        Assert.Equal($"checkpoint-{steps.Length:D7}", Path.GetFileName(Assert.Single(Checkpoints.List(Path.Combine(outDir, "checkpoints")))));
    }

    [SkippableFact]
    public void UnderMpirun_AFolderInUse_IsRefusedOnEveryRank_InOneLineWithoutAnAbort()
    {
        if (TrainProcess.Mpirun is null)
        {
            if (Environment.GetEnvironmentVariable("OPTIMUM_REQUIRE_MPI") == "1") Assert.Fail("OPTIMUM_REQUIRE_MPI=1 but mpirun is not installed.");
            Skip.If(true, "mpirun is not installed");
        }
        var (model, data) = TrainProcess.TinyJob(_dir);
        var outDir = Path.Combine(_dir, "out");
        Directory.CreateDirectory(outDir);
        // This process holds the folder as a run would.
        using (new FileStream(Path.Combine(outDir, RunFolder.LockFile), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None))
        {
            var (code, text) = TrainProcess.Run(TrainProcess.TrainArgs(model, data, outDir, 4), mpiRanks: 2);
            output.WriteLine(text);
            Assert.NotEqual(0, code);
            Assert.Single(text.Split('\n'), l => l.StartsWith($"error: Output folder '{outDir}' is in use by another training run", StringComparison.Ordinal));
            Assert.DoesNotContain("MPI_ABORT", text);
            Assert.DoesNotContain("model: ", text);
        }
        Assert.Equal([RunFolder.LockFile], Directory.GetFileSystemEntries(outDir).Select(Path.GetFileName));
    }

    [Fact]
    public void TheLockOfAKilledRun_DoesNotBlockTheNext()
    {
        var (model, data) = TrainProcess.TinyJob(_dir);
        var outDir = Path.Combine(_dir, "out");
        var args = TrainProcess.TrainArgs(model, data, outDir, 100_000, "--save-every 2");
        using (var run = TrainProcess.Start(args))
        {
            var root = Path.Combine(outDir, "checkpoints");
            var clock = Stopwatch.StartNew();
            while (Checkpoints.Latest(root) is null && !run.HasExited && clock.Elapsed.TotalSeconds < 120) Thread.Sleep(20);
            Assert.False(run.HasExited, run.Output);
            Assert.True(LockedByAnother(outDir), "the running job does not hold the lock");
            run.Kill();
        }
        // The lock file stays, but the kernel released the lock with the process.
        Assert.True(File.Exists(Path.Combine(outDir, RunFolder.LockFile)));
        Assert.False(LockedByAnother(outDir));
        long at = long.Parse(Path.GetFileName(Checkpoints.Latest(Path.Combine(outDir, "checkpoints")))!["checkpoint-".Length..]);
        var (code, text) = Run(args + $" --resume latest --stop-after {at + 2}");
        Assert.True(code == 130, text);                                                   // --stop-after ends with 130 and a checkpoint
        Assert.Contains("resumed from", text);
        Assert.Contains($"at step {at} (1 rank(s) then", text);
        Assert.Equal(Enumerable.Range(1, (int)at + 2).Select(i => (long)i), LoggedSteps(outDir));
    }

    [Fact]
    public void ANewRunIntoAnotherRunsCheckpoints_IsRefused_UnlessItResumesOrStartsOver()
    {
        var (model, data) = TrainProcess.TinyJob(_dir);
        var outDir = Path.Combine(_dir, "out");
        Assert.Equal(0, Run(TrainProcess.TrainArgs(model, data, outDir, 4, "--save-every 2")).Code);
        string[] Files() => Directory.GetFiles(outDir, "*", SearchOption.AllDirectories).Order().Select(f => $"{f} {File.GetLastWriteTimeUtc(f):O}").ToArray();
        var before = Files();

        // Another run (6 steps) into it: refused naming the folder and the ways on; nothing changed.
        var (code, text) = Run(TrainProcess.TrainArgs(model, data, outDir, 6, "--save-every 2"));
        Assert.Equal(1, code);
        Assert.Contains($"error: Output folder '{outDir}' holds another run's checkpoints (checkpoint-0000002, checkpoint-0000004) and metrics.jsonl; " +
            "continue that run with --resume latest", text);
        Assert.Contains("start over with --overwrite", text);
        Assert.Equal(before, Files());
        var help = Squash(Run("train --help").Output);
        Assert.Contains("Output folder: checkpoints/, metrics.jsonl, loss.png, final/, hf/. One run at a time", help);
        Assert.Contains("--overwrite Start over in an --out that holds an earlier run", help);

        // --overwrite and --resume together: refused before anything.
        (code, text) = Run(TrainProcess.TrainArgs(model, data, outDir, 6, "--overwrite --resume latest"));
        Assert.Equal(1, code);
        Assert.Contains("error: --overwrite starts over and --resume latest continues a run: give one of them.", text);

        // --overwrite: the earlier run's checkpoints and metrics are gone; the new run's alone remain.
        (code, text) = Run(TrainProcess.TrainArgs(model, data, outDir, 6, "--save-every 2 --overwrite"));
        Assert.True(code == 0, text);
        Assert.Contains("deleted the earlier run's checkpoints, metrics.jsonl, loss.png, final, hf", Squash(text));
        var kept = Checkpoints.List(Path.Combine(outDir, "checkpoints"));
        Assert.Equal(["checkpoint-0000004", "checkpoint-0000006"], kept.Select(Path.GetFileName));
        Assert.All(kept, k => Assert.Equal(6, Checkpoints.ReadState(k).TotalSteps));
        Assert.Equal([1, 2, 3, 4, 5, 6], LoggedSteps(outDir));
    }
}
