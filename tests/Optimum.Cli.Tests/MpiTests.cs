using System.Diagnostics;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;
using Optimum.Core;

namespace Optimum.Cli.Tests;

/// <summary>
/// ZeRO-1 over OpenMPI: `mpirun -np 2 optimum-net train` against one process, resumes across rank
/// counts, a failing rank, and the collectives. Skipped when mpirun is absent, unless
/// OPTIMUM_REQUIRE_MPI=1 (as CI sets), which turns a missing mpirun into a failure.
/// </summary>
[Collection(MpirunCollection.Name)]
public sealed class MpiTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private (int Code, string Out) Run(int ranks, string args, string? faultInject = null)
    {
        var psi = ranks == 0
            ? new ProcessStartInfo("dotnet", $"{MpiRuns.Cli} {args}")
            : new ProcessStartInfo(MpiRuns.Mpirun!, $"--allow-run-as-root --oversubscribe -np {ranks} dotnet {MpiRuns.Cli} {args}");
        psi.Environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none";
        if (faultInject is not null) psi.Environment["OPTIMUM_FAULT_INJECT"] = faultInject;
        return MpiRuns.Exec(psi, output, $"{(ranks == 0 ? "" : $"mpirun -np {ranks} ")}optimum-net {args}");
    }

    private static void RequireMpi() => MpiRuns.RequireMpi();
    private string Model() => MpiRuns.Model(_dir);
    private string Data() => MpiRuns.Data(_dir);
    private string Train(string model, string data, string outDir, int batch, string extra = "") =>
        MpiRuns.Train(model, data, Path.Combine(_dir, outDir), batch, extra);
    private float[][] Final(string outDir, IReadOnlyList<ParameterInfo> ps) => MpiRuns.Final(Path.Combine(_dir, outDir), ps);
    private static double MaxRelativeDiff(float[][] a, float[][] b) => MpiRuns.MaxRelativeDiff(a, b);

    [SkippableFact]
    public void Mpirun_TwoRanksMatchOneProcess_AndResumeAcrossRankCounts()
    {
        RequireMpi();
        var model = Model();
        var data = Data();
        var ps = ModelFolder.ReadParameters(model);
        Assert.Equal(0, Run(0, Train(model, data, "one", 4)).Code);
        var one = Final("one", ps);

        var (code, text) = Run(2, Train(model, data, "two", 2));
        Assert.True(code == 0, text);
        Assert.Contains("ZeRO-1 over 2 ranks (mpi)", text);
        var two = Final("two", ps);
        output.WriteLine($"N=2 vs N=1: {MaxRelativeDiff(one, two):E2}");
        Assert.True(MaxRelativeDiff(one, two) <= MpiRuns.Tolerance, $"N=2 differs by {MaxRelativeDiff(one, two):E2}");
        var ckpt = Directory.GetDirectories(Path.Combine(_dir, "two", "checkpoints")).Single();
        Assert.True(File.Exists(Path.Combine(ckpt, "optimizer-rank001-of-002.safetensors")));

        // Checkpoint at N=1, resume at N=2 ...
        Assert.Equal(130, Run(0, Train(model, data, "1to2", 4, "--stop-after 4")).Code);
        (code, text) = Run(2, Train(model, data, "1to2", 2, "--resume latest"));
        Assert.True(code == 0, text);
        Assert.Contains("1 rank(s) then, 2 now", text);
        Assert.True(MaxRelativeDiff(one, Final("1to2", ps)) <= MpiRuns.Tolerance, "resume N=1 -> N=2");
        // ... and at N=2, resume at N=1.
        Assert.Equal(130, Run(2, Train(model, data, "2to1", 2, "--stop-after 4")).Code);
        (code, text) = Run(0, Train(model, data, "2to1", 4, "--resume latest"));
        Assert.True(code == 0, text);
        Assert.True(MaxRelativeDiff(one, Final("2to1", ps)) <= MpiRuns.Tolerance, "resume N=2 -> N=1");
    }

    [SkippableFact]
    public void Mpirun_AFailingRankStopsTheJobNamingIt_AndLeavesNoCheckpoint()
    {
        RequireMpi();
        var (code, text) = Run(2, Train(Model(), Data(), "fail", 2, "--save-every 2"), faultInject: "rank=1,checkpoint");
        Assert.NotEqual(0, code);
        Assert.Contains("rank 1 of 2: InvalidOperationException: fault injected while writing a checkpoint", text);
        var root = Path.Combine(_dir, "fail", "checkpoints");
        Assert.Empty(Directory.GetDirectories(root, "checkpoint-*"));
    }

    [SkippableFact]
    public void Mpirun_CollectivesAreCorrect_IncludingSplitCounts()
    {
        RequireMpi();
        var (code, text) = Run(3, "mpi-check --chunk 333");
        Assert.True(code == 0, text);
        Assert.Equal(3, text.Split('\n').Count(l => l.Contains("all collectives correct")));
    }
}
