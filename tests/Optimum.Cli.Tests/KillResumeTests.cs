using System.Diagnostics;
using System.Text.Json;
using Optimum.Tests;
using Optimum.Training;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>
/// A kill campaign: <c>train</c> is SIGKILLed at seeded-random moments (loading, stepping, writing a checkpoint,
/// exporting) and resumed with <c>--resume latest</c> each time, until it completes; its final weights, last checkpoint
/// (parameters, every optimizer shard, trainer state) and logged losses must equal an uninterrupted run's bit for bit.
/// On two in-process ranks, and on two MPI ranks (mpirun's whole process tree is killed; no rank may outlive it).
/// ONNX Runtime runs on one thread per rank (--threads 1), so every run computes the same sums in the same order.
/// </summary>
[Collection(MpirunCollection.Name)]
public sealed class KillResumeTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void InProcessRanks_KilledAtRandomMomentsAndResumed_EndBitIdenticalToAnUninterruptedRun() => Campaign(mpiRanks: 0, "--ranks 2", steps: 30, killsWanted: 8, seed: 1);

    [SkippableFact]
    public void Mpirun_KilledAtRandomMomentsAndResumed_EndBitIdenticalToAnUninterruptedRun()
    {
        if (TrainProcess.Mpirun is null)
        {
            if (Environment.GetEnvironmentVariable("OPTIMUM_REQUIRE_MPI") == "1")
                Assert.Fail("OPTIMUM_REQUIRE_MPI=1 but mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev).");
            Skip.If(true, "mpirun is not installed");
        }
        // Fewer steps: each collective between two processes costs more than between two threads, and each start more.
        Campaign(mpiRanks: 2, "", steps: 16, killsWanted: 6, seed: 2);
    }

    private void Campaign(int mpiRanks, string ranks, long steps, int killsWanted, int seed)
    {
        var (model, data) = TrainProcess.TinyJob(_dir);
        Assert.True(steps < 40, "under 40 steps every step prints its progress line, which the kills follow");
        string Args(string outDir, string more = "") => TrainProcess.TrainArgs(model, data, outDir, steps, $"--save-every 2 --keep 2 {ranks} {more}");

        // The uninterrupted run; its pace sets the spread of the kill delays: the start (to the first step) and a step
        // (with its share of checkpoints, evaluations and the export).
        var reference = Path.Combine(_dir, "reference");
        double startup, perStep;
        using (var run = TrainProcess.Start(Args(reference), mpiRanks))
        {
            var first = run.WaitForLine(l => l.StartsWith("step      1/", StringComparison.Ordinal)) ?? throw new InvalidOperationException(run.Output);
            Assert.True(run.WaitForExit() == 0, run.Output);
            (startup, perStep) = (first, (run.Elapsed - first) / (steps - 1));
        }
        output.WriteLine($"uninterrupted: {startup:F2} s to step 1, then {perStep:F3} s per step");

        // The campaign: until killsWanted kills, each attempt is killed at a seeded-random moment: one in five during its
        // start (before the lock, loading data, building the session, reading the checkpoint, the first step), the others
        // a random time (up to two steps: as often while writing a checkpoint as not) after one of the next steps;
        // then one runs to its end. The moments follow the run's progress, not the clock, so a slower machine kills as
        // often; an attempt that ends before its moment (killed late in the last step) ends the campaign.
        var outDir = Path.Combine(_dir, "killed");
        var root = Path.Combine(outDir, "checkpoints");
        var rng = new Random(seed);
        int kills = 0, resumes = 0, restarts = 0, duringCheckpoint = 0;
        for (int attempt = 0; ; attempt++)
        {
            Assert.True(attempt < 60, $"no end after {attempt} attempts");
            var latest = Checkpoints.Latest(root);
            long from = latest is null ? 0 : Checkpoints.ReadState(latest).Step;
            // A run killed before its first checkpoint left only metrics: it starts over (--resume latest has nothing to load).
            var more = latest is not null ? "--resume latest" : attempt > 0 ? "--overwrite" : "";
            if (latest is not null) resumes++;
            else if (attempt > 0) restarts++;
            bool toTheEnd = kills >= killsWanted;
            bool early = !toTheEnd && (from == steps || rng.NextDouble() < 0.2);            // resumed after its last step: only its start is left
            long after = Math.Min(steps, from + 1 + rng.NextInt64(Math.Max(1, steps / 4)));  // up to a quarter of the run on: kills spread over it
            double delay = rng.NextDouble() * (early ? startup : 2 * perStep);
            string when = toTheEnd ? "never" : early ? $"{delay:F2} s after its start" : $"{delay:F2} s after step {after}";
            var started = DateTime.UtcNow;
            using var run = TrainProcess.Start(Args(outDir, more), mpiRanks);
            double? at = toTheEnd ? null : early ? 0 : run.WaitForLine(l => l.StartsWith($"step {after,6}/", StringComparison.Ordinal));
            if (at is null || run.TryWaitForExit((int)Math.Max(0, (at.Value + delay - run.Elapsed) * 1000)))
            {
                int code = run.WaitForExit();
                Assert.True(code == 0, $"attempt {attempt} ({more}) exited {code}:\n{run.Output}");
                output.WriteLine($"attempt {attempt,2}: {more,-15} at step {from,2}, kill {when}: completed");
                break;
            }
            run.Kill();
            kills++;
            // A checkpoint being written when the kill came is left as its temporary folder (never listed, removed by the next save).
            bool partial = Directory.Exists(root) && Directory.GetDirectories(root, ".checkpoint-*.tmp").Any(d => Directory.GetLastWriteTimeUtc(d) >= started);
            if (partial) duringCheckpoint++;
            output.WriteLine($"attempt {attempt,2}: {more,-15} at step {from,2}, kill {when}: killed{(partial ? " while writing a checkpoint" : "")}");
            AssertNoProcessLeft(outDir);
        }
        AssertNoProcessLeft(outDir);
        output.WriteLine($"{kills} kills ({duringCheckpoint} while writing a checkpoint), {resumes} resumes, {restarts} restarts before a first checkpoint");
        Assert.True(kills >= 1, "no attempt was killed");

        AssertSameBytes(Path.Combine(reference, "final", "model.safetensors"), Path.Combine(outDir, "final", "model.safetensors"));
        var last = $"checkpoint-{steps:D7}";
        var files = Directory.GetFiles(Path.Combine(reference, "checkpoints", last)).Select(Path.GetFileName).Order().ToArray();
        Assert.Equal(files, Directory.GetFiles(Path.Combine(root, last)).Select(Path.GetFileName).Order());
        foreach (var f in files) AssertSameBytes(Path.Combine(reference, "checkpoints", last, f!), Path.Combine(root, last, f!));
        Assert.Equal(Logged(reference), Logged(outDir));
    }

    private static void AssertSameBytes(string expected, string actual) =>
        Assert.True(File.ReadAllBytes(expected).AsSpan().SequenceEqual(File.ReadAllBytes(actual)), $"'{actual}' differs from the uninterrupted run's '{expected}'");

    /// <summary>metrics.jsonl without its timings: every step's loss, gradient norm and learning rate, and every validation loss, in order.</summary>
    private static string[] Logged(string outDir) => File.ReadAllLines(Path.Combine(outDir, "metrics.jsonl")).Select(l =>
    {
        var e = JsonDocument.Parse(l).RootElement;
        return string.Join(' ', new[] { "step", "loss", "grad_norm", "lr", "val_loss" }.Where(k => e.TryGetProperty(k, out _)).Select(k => $"{k}={e.GetProperty(k).GetRawText()}"));
    }).ToArray();

    /// <summary>No process of the job (a rank orphaned by the kill, still holding the lock) outlives it.</summary>
    private static void AssertNoProcessLeft(string outDir)
    {
        var clock = Stopwatch.StartNew();
        int[] left;
        while ((left = TrainProcess.ProcessesWith(outDir)).Length > 0 && clock.Elapsed.TotalSeconds < 10) Thread.Sleep(50);
        Assert.True(left.Length == 0, $"processes of the killed job are still running: {string.Join(", ", left)}");
    }
}
