using Optimum.Core;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Cli.Tests;

/// <summary>
/// ZeRO-1 across two hosts (<see cref="TwoHosts"/>: network namespaces, TCP over a veth pair, an rsh agent):
/// the same weights as one process, checkpoints with shards from both hosts, a resume across hosts, and a clear
/// error (never a hang) when the hosts do not share the checkpoint folder. Skipped without mpirun, root or ip,
/// unless OPTIMUM_REQUIRE_MPI=1 (as CI sets), which makes that a failure.
/// </summary>
[Collection(MpirunCollection.Name)]
public sealed class TwoHostTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    private TwoHosts? _hosts;

    public void Dispose()
    {
        _hosts?.Dispose();
        Directory.Delete(_dir, true);
    }

    private TwoHosts Hosts() => _hosts = TwoHosts.Create(_dir, output);

    private string Out(string name) => Path.Combine(_dir, name);

    [SkippableFact]
    public void Mpirun_OneRankPerHost_MatchesOneProcess_AndResumesAcrossHosts()
    {
        var hosts = Hosts();
        var model = MpiRuns.Model(_dir);
        var data = MpiRuns.Data(_dir);
        var ps = ModelFolder.ReadParameters(model);
        long parameters = ps.Sum(p => p.Count);
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet", $"{MpiRuns.Cli} {MpiRuns.Train(model, data, Out("one"), 4)}");
        var (code, text) = MpiRuns.Exec(psi, output, "optimum-net train (one process)");
        Assert.True(code == 0, text);
        var one = MpiRuns.Final(Out("one"), ps);

        var received = new[] { hosts.ReceivedBytes(0), hosts.ReceivedBytes(1) };
        (code, text) = hosts.Mpirun(MpiRuns.Train(model, data, Out("two"), 2, "--save-every 4"));
        Assert.True(code == 0, text);
        Assert.Contains("ZeRO-1 over 2 ranks (mpi)", text);
        // The second rank's orted was started through the agent, for the second host.
        output.WriteLine($"rsh agent called with: {string.Join(" | ", hosts.AgentCalls.Select(l => l.Length > 60 ? l[..60] + "..." : l))}");
        Assert.Contains(hosts.AgentCalls, l => l.StartsWith(TwoHosts.Addresses[1] + " ", StringComparison.Ordinal) && l.Contains("orted"));
        // Each update moves at least half the gradients (reduce-scatter) and half the parameters (all-gather) each way.
        long floor = 8 * parameters * sizeof(float);
        for (int h = 0; h < 2; h++)
        {
            long crossed = hosts.ReceivedBytes(h) - received[h];
            output.WriteLine($"host {h} received {crossed:N0} bytes over {TwoHosts.Interfaces[h]} (8 updates of {parameters:N0} parameters: at least {floor:N0})");
            Assert.True(crossed >= floor, $"host {h} received {crossed:N0} bytes over its veth, expected at least {floor:N0}");
        }
        var two = MpiRuns.Final(Out("two"), ps);
        output.WriteLine($"two hosts vs one process: max relative difference {MpiRuns.MaxRelativeDiff(one, two):E2}");
        Assert.True(MpiRuns.MaxRelativeDiff(one, two) <= MpiRuns.Tolerance, $"two hosts differ from one process by {MpiRuns.MaxRelativeDiff(one, two):E2}");
        output.WriteLine($"losses, one process: {string.Join(", ", Losses(Out("one")).Select(l => l.ToString("F5")))}");
        output.WriteLine($"losses, two hosts:   {string.Join(", ", Losses(Out("two")).Select(l => l.ToString("F5")))}");
        Assert.Equal(Losses(Out("one")), Losses(Out("two")), (a, b) => Math.Abs(a - b) <= 1e-5 * Math.Max(1, Math.Abs(a)));

        // Both hosts wrote their optimizer shard into the step-4 checkpoint; resuming from it across hosts ends where one process did.
        var ckpt = Path.Combine(Out("two"), "checkpoints", "checkpoint-0000004");
        Assert.True(File.Exists(Path.Combine(ckpt, "optimizer-rank001-of-002.safetensors")), $"no rank 1 shard in {ckpt}");
        (code, text) = hosts.Mpirun(MpiRuns.Train(model, data, Out("resumed"), 2, $"--resume {ckpt}"));
        Assert.True(code == 0, text);
        Assert.Contains("at step 4 (2 rank(s) then, 2 now)", text);
        var resumed = MpiRuns.Final(Out("resumed"), ps);
        output.WriteLine($"resumed across hosts from step 4 vs one process: max relative difference {MpiRuns.MaxRelativeDiff(one, resumed):E2}");
        Assert.True(MpiRuns.MaxRelativeDiff(one, resumed) <= MpiRuns.Tolerance, $"the resumed run differs by {MpiRuns.MaxRelativeDiff(one, resumed):E2}");
        Assert.Equal(Losses(Out("one"))[4..], Losses(Out("resumed")), (a, b) => Math.Abs(a - b) <= 1e-5 * Math.Max(1, Math.Abs(a)));
    }

    [SkippableFact]
    public void Mpirun_AcrossHostsWithoutSharedStorage_StopsAtTheStartNamingTheFolder()
    {
        var hosts = Hosts();
        var outDir = Out("unshared");
        Directory.CreateDirectory(outDir);   // the second host sees an empty folder of its own here
        var (code, text) = hosts.Mpirun(MpiRuns.Train(MpiRuns.Model(_dir), MpiRuns.Data(_dir), outDir, 2), unshared: outDir, timeoutMs: 60_000);
        output.WriteLine(text);
        Assert.NotEqual(0, code);
        Assert.Contains($"The checkpoint folder '{Path.Combine(outDir, "checkpoints")}' is not shared by all 2 ranks", text);
        Assert.Contains("rank 1 cannot write there", text);
        Assert.Contains("storage every machine mounts at the same path", text);
        Assert.DoesNotContain("step      1/", text);
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(outDir, "checkpoints")));
    }

    /// <summary>The training losses of a run's metrics.jsonl, by step (from the step after the checkpoint for a resumed run).</summary>
    private static double[] Losses(string outDir) => File.ReadLines(Path.Combine(outDir, "metrics.jsonl"))
        .Select(l => System.Text.Json.JsonDocument.Parse(l).RootElement)
        .Where(e => e.TryGetProperty("loss", out _)).Select(e => e.GetProperty("loss").GetDouble()).ToArray();
}
