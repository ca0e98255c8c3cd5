using Optimum.Distributed;
using Optimum.Tests;
using Xunit;

namespace Optimum.Training.Tests;

/// <summary>The output folder's lock and the refusal of another run's checkpoints (no training: the claim alone).</summary>
public sealed class RunFolderTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private TrainerOptions Options(string outDir) => new() { ModelDir = Path.Combine(_dir, "model"), OutputDir = Path.Combine(_dir, outDir) };

    /// <summary>An earlier run's files: two checkpoints (with a state file), metrics, a plot, final/ and hf/, and files of the caller's own.</summary>
    private string EarlierRun(string name, bool checkpoints = true)
    {
        var dir = Path.Combine(_dir, name);
        if (checkpoints)
            foreach (var step in new[] { 3, 6 })
            {
                var ck = Path.Combine(dir, "checkpoints", $"checkpoint-{step:D7}");
                Directory.CreateDirectory(ck);
                File.WriteAllText(Path.Combine(ck, Checkpoints.StateFile), "{}");
            }
        Directory.CreateDirectory(Path.Combine(dir, "final"));
        Directory.CreateDirectory(Path.Combine(dir, "hf"));
        Directory.CreateDirectory(Path.Combine(dir, "model"));
        File.WriteAllText(Path.Combine(dir, "metrics.jsonl"), "{\"step\": 1, \"loss\": 2.5}\n");
        File.WriteAllText(Path.Combine(dir, "loss.png"), "png");
        File.WriteAllText(Path.Combine(dir, "train.tsv"), "a\tb\n");
        return dir;
    }

    [Fact]
    public void ASecondClaim_IsRefusedNamingTheFolder_UntilTheFirstIsReleased()
    {
        var o = Options("run");
        var first = RunFolder.Claim(o);
        Assert.True(first.HoldsLock);
        var e = Assert.Throws<RunFolderException>(() => RunFolder.Claim(o));
        Assert.Contains($"Output folder '{o.OutputDir}' is in use by another training run", e.Message);
        Assert.Contains("choose another output folder (--out)", e.Message);
        // A resumed run is locked out the same way.
        Assert.Throws<RunFolderException>(() => RunFolder.Claim(o with { Resume = CheckpointRef.Latest }));
        first.Dispose();
        using var second = RunFolder.Claim(o);
        Assert.True(File.Exists(Path.Combine(o.OutputDir, RunFolder.LockFile)));
    }

    [Fact]
    public void InProcessRanks_AreAllRefused_AndOnlyRankZeroHoldsTheLock()
    {
        var o = Options("ranks");
        var held = new InProcessWorld(2).Run(c =>
        {
            using var claim = RunFolder.Claim(o, c);
            return claim.HoldsLock;
        });
        Assert.Equal([true, false], held);
        using var other = RunFolder.Claim(o);
        var errors = new InProcessWorld(2).Run(c =>
        {
            try { RunFolder.Claim(o, c).Dispose(); return ""; }
            catch (RunFolderException e) { return e.Message; }
        });
        Assert.Contains("is in use by another training run", errors[0]);
        Assert.Contains("Rank 0 refused output folder", errors[1]);
    }

    [Fact]
    public void ANewRun_RefusesAnotherRunsCheckpointsOrMetrics_AndTouchesNothing()
    {
        var dir = EarlierRun("old");
        var before = Directory.GetFileSystemEntries(dir, "*", SearchOption.AllDirectories).Order().ToArray();
        var e = Assert.Throws<RunFolderException>(() => RunFolder.Claim(Options("old")));
        Assert.Equal($"Output folder '{dir}' holds another run's checkpoints (checkpoint-0000003, checkpoint-0000006) and metrics.jsonl; " +
            "continue that run with --resume latest, start over with --overwrite (deletes them), " +
            "or choose another output folder (--out).", e.Message);
        Assert.Equal(before.Append(Path.Combine(dir, RunFolder.LockFile)).Order(), Directory.GetFileSystemEntries(dir, "*", SearchOption.AllDirectories).Order());

        // Only metrics (a run stopped before its first checkpoint): there is nothing to resume, so only --overwrite is offered.
        EarlierRun("nock", checkpoints: false);
        e = Assert.Throws<RunFolderException>(() => RunFolder.Claim(Options("nock")));
        Assert.Contains("holds another run's metrics.jsonl (and no checkpoint); start over with --overwrite", e.Message);

        // A metrics.jsonl without a trained step (a run that failed at its start) does not block the retry.
        var failed = Path.Combine(_dir, "failed");
        Directory.CreateDirectory(failed);
        File.WriteAllText(Path.Combine(failed, RunFolder.MetricsFile), "{\"step\": 0, \"val_loss\": 10.8}\n{\"st");
        RunFolder.Claim(Options("failed")).Dispose();

        // Resuming is what such a folder is for; a folder with only final/ (or nothing) is a new run's.
        RunFolder.Claim(Options("old") with { Resume = CheckpointRef.Latest }).Dispose();
        Directory.CreateDirectory(Path.Combine(_dir, "exported", "final"));
        RunFolder.Claim(Options("exported")).Dispose();
    }

    [Fact]
    public void Overwrite_DeletesTheEarlierRunsOutputsOnly_AndExcludesResume()
    {
        var dir = EarlierRun("again");
        var said = new List<string>();
        using (RunFolder.Claim(Options("again") with { Overwrite = true }, log: said.Add))
        {
            Assert.Equal([".train.lock", "model", "train.tsv"], Directory.GetFileSystemEntries(dir).Select(Path.GetFileName).Order());
            Assert.Equal($"starting over in '{dir}': deleted the earlier run's checkpoints, metrics.jsonl, loss.png, final, hf", Assert.Single(said));
        }
        var e = Assert.Throws<ArgumentException>(() => RunFolder.Claim(Options("again") with { Overwrite = true, Resume = CheckpointRef.Latest }));
        Assert.Contains("--overwrite starts over and --resume latest continues a run: give one of them", e.Message);
    }
}
