using Optimum.Core;
using System.Diagnostics;
using Optimum.Distributed;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Training;
using Optimum.Data;

namespace Optimum.Cli;

/// <summary>
/// <c>optimum-net bench zero</c>: ZeRO-1 step time at N = 1 and N = 2 ranks for the bench GPT-2 with a
/// fixed global batch, the share of the step spent in collectives, and the optimizer-state bytes per
/// rank. Each N runs under mpirun when it is installed (a worker process per rank), else as in-process
/// threads. A step is one <see cref="Trainer"/> update; the trainer's own loop times it, so the
/// warm-up steps are dropped from its history. Peak memory is that of the process running rank 0
/// (with threads, the one process holding every rank).
/// </summary>
public static class BenchZero
{
    private static readonly int[] Ranks = [1, 2];

    public static int Run(BenchRun run, Gpt2Size size, bool worker, TextWriter output)
    {
        var report = new BenchReport(run.Json || worker, output);
        if (worker)
        {
            using var mpi = MpiCommunicator.LaunchedByMpirun ? new MpiCommunicator() : null;
            var r = Measure(run, size, mpi ?? (ICommunicator)new SingleProcess());
            if (r is not null) report.AddSpeed("zero1", r);
            return 0;
        }
        foreach (var n in Ranks)
            if (size.Batch % n != 0) throw new ArgumentException($"--batch {size.Batch} is the global batch and must divide evenly over {n} ranks.");
        var mpirun = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, "mpirun")).FirstOrDefault(File.Exists);
        foreach (var n in Ranks)
        {
            if (mpirun is null) report.AddSpeed("zero1", new InProcessWorld(n).Run(c => Measure(run, size, c))[0]!);
            else report.AddJson(RunWorkers(mpirun, n, run, size));
        }
        report.Print();
        return 0;
    }

    /// <summary>Runs <c>bench zero --worker</c> on <paramref name="n"/> ranks under mpirun and returns rank 0's JSON line.</summary>
    private static string RunWorkers(string mpirun, int n, BenchRun run, Gpt2Size size)
    {
        var self = Path.Combine(AppContext.BaseDirectory, "optimum-net.dll");
        var psi = new ProcessStartInfo(mpirun, ["--allow-run-as-root", "--oversubscribe", "--bind-to", "none", "-np", $"{n}", "dotnet", self, "bench", "zero", "--worker",
            "--warmup", $"{run.Warmup}", "--steps", $"{run.Steps}", "--threads", $"{run.Threads}", "--device", $"{run.Device}", "--layers", $"{size.Layers}", "--width", $"{size.Width}",
            "--heads", $"{size.Heads}", "--seq", $"{size.Seq}", "--vocab", $"{size.Vocab}", "--batch", $"{size.Batch}"])
        { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        psi.Environment["TERM"] = "dumb";
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stderr = p.StandardError.ReadToEndAsync();
        var text = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return text.Split('\n').LastOrDefault(l => l.StartsWith('{'))
            ?? throw new InvalidOperationException($"bench zero at N={n} printed no result (exit {p.ExitCode}): {stderr.Result}");
    }

    /// <summary>One ZeRO-1 training run on this rank; rank 0 returns the measurement, the others null.</summary>
    private static Dictionary<string, object>? Measure(BenchRun run, Gpt2Size size, ICommunicator comm)
    {
        var cfg = size.Config(size.Seq);
        var dir = size.TrainFolder(run);
        if (comm.Rank == 0) ModelKinds.Write(dir, cfg);
        comm.Barrier();
        var ps = ModelFolder.ReadParameters(dir);
        int steps = run.Warmup + run.Steps;
        var rng = new Random(0);
        var tokens = Enumerable.Range(0, size.Seq * size.Batch * steps * 2).Select(_ => rng.Next(size.Vocab)).ToArray();
        var options = new TrainerOptions
        {
            ModelDir = dir, OutputDir = Path.Combine(run.WorkDir, $"zero-{comm.Size}"), Steps = steps, BatchSize = size.Batch / comm.Size, Lr = 3e-4, Warmup = 0,
            Schedule = ScheduleKind.Constant, ClipNorm = 1, EvalEvery = 0, EvalAtStart = false, EvalSamples = 1, SaveEvery = 0, Export = false,
            Session = (run with { Threads = Math.Max(1, run.Threads / comm.Size) }).Session(), Overwrite = true,     // every bench run starts over
        };
        using var trainer = new Trainer(options, new LmData(tokens, size.Seq, 0.01), ModelKinds.Initialize(ps, cfg, 0), comm);
        var history = trainer.Run().History;
        if (comm.Rank != 0) return null;
        var t = StepTimes.FromHistory(run.Warmup, history.Select(m => m.StepSeconds).ToArray());
        var measured = history.Skip(run.Warmup).ToArray();
        double commSeconds = measured.Average(m => m.CommSeconds);
        var r = new Dictionary<string, object>
        {
            ["ranks"] = comm.Size, ["backend"] = comm.Backend, ["threads_per_rank"] = options.Session.IntraOpThreads,
            ["global_batch"] = size.Batch, ["seq"] = size.Seq, ["parameters"] = ps.Sum(p => p.Count),
        };
        t.AddTo(r);
        r["comm_ms"] = commSeconds * 1000;
        r["comm_share"] = commSeconds / t.Mean;
        r["optimizer_ms"] = measured.Average(m => m.OptimizerSeconds) * 1000;
        r["tokens_per_s"] = size.Batch * size.Seq / t.Mean;
        r["optimizer_state_bytes_per_rank"] = trainer.Optimizer.StateBytes;
        return r;
    }
}
