using Optimum.Distributed;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Optimum.Data;
using Xunit;
using Xunit.Abstractions;
using Optimum.Core;

namespace Optimum.Training.Tests;

/// <summary>ZeRO-1 on the in-process backend: N = 1, 2, 3 against single-process training on the same global batch.</summary>
public sealed class Zero1Tests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private static readonly Gpt2Config Tiny = TinyLm.Config();
    private const int GlobalBatch = 6;

    private string Model() => TinyLm.Folder(_dir, Tiny, "model");

    private static LmData Data() => TinyLm.Data();

    private TrainerOptions Options(int ranks, string outDir, long steps = 8) => new()
    {
        ModelDir = Model(), OutputDir = Path.Combine(_dir, outDir), Steps = steps, BatchSize = GlobalBatch / ranks, Lr = 5e-3, Warmup = Math.Min(3, steps),
        Schedule = ScheduleKind.Linear, ClipNorm = 0.3, Optimizer = new OptimizerConfig { Kind = OptimizerKind.Sgd, Momentum = 0.9 }, EvalEvery = 4, EvalSamples = 12, SaveEvery = 0, Seed = 5, Export = false,
        Session = new SessionSettings { IntraOpThreads = 1 },
    };

    private float[][] Init() => ModelKinds.Initialize(ModelFolder.ReadParameters(Model()), Tiny, 1);

    private (float[][] Weights, TrainResult Result, long[] StateBytes) Train(int ranks, string outDir, long steps = 8, Func<TrainerOptions, TrainerOptions>? edit = null, CancellationToken cancel = default)
    {
        var o = edit is null ? Options(ranks, outDir, steps) : edit(Options(ranks, outDir, steps));
        var world = new InProcessWorld(ranks);
        var runs = world.Run(c =>
        {
            using var t = new Trainer(o, Data(), Init(), c);
            var r = t.Run(cancel);
            return (t.Store.Export(), r, t.Optimizer.StateBytes);
        });
        return (runs[0].Item1, runs[0].r, runs.Select(x => x.StateBytes).ToArray());
    }

    private static double NormRelativeDiff(float[][] a, float[][] b)
    {
        double worst = 0;
        for (int i = 0; i < a.Length; i++)
        {
            double d = 0, n = 0;
            for (int k = 0; k < a[i].Length; k++) { d += Math.Pow(a[i][k] - b[i][k], 2); n += Math.Pow(a[i][k], 2); }
            worst = Math.Max(worst, Math.Sqrt(d / Math.Max(n, 1e-30)));
        }
        return worst;
    }

    private static double MaxRelativeDiff(float[][] a, float[][] b) => Diff.MaxRelative(a, b, floor: 1e-3);

    /// <summary>
    /// SGD with momentum, clipping and a schedule: the data-parallel result equals single-process
    /// training within 1e-6 relative, element by element (only the order of float sums differs).
    /// AdamW divides by sqrt(v), which turns the rounding of near-zero gradients into visible
    /// differences of single elements, so there the whole tensors are compared (normwise).
    /// </summary>
    [Theory]
    [InlineData("sgd")]
    [InlineData("adamw")]
    public void Zero1_OneTwoThreeRanksMatchSingleProcessOnTheSameGlobalBatch(string optimizer)
    {
        TrainerOptions Edit(TrainerOptions o) => o with { Optimizer = new OptimizerConfig { Kind = EnumNames.Parse<OptimizerKind>(optimizer, "optimizer"), Momentum = 0.9 } };
        float[][] single;
        TrainResult singleResult;
        using (var t = new Trainer(Edit(Options(1, "single")), Data(), Init()))
        {
            singleResult = t.Run();
            single = t.Store.Export();
        }
        Assert.True(singleResult.History.Any(m => m.GradNorm > 0.3), "clipping never engaged");
        foreach (var n in new[] { 1, 2, 3 })
        {
            var (w, r, _) = Train(n, $"zero{n}-{optimizer}", edit: Edit);
            double elementwise = MaxRelativeDiff(single, w), normwise = NormRelativeDiff(single, w);
            output.WriteLine($"{optimizer} N={n}: max elementwise relative difference {elementwise:E2}, max normwise {normwise:E2}");
            if (optimizer == "sgd") Assert.True(elementwise <= 1e-6, $"N={n}: parameters differ by {elementwise:E2} (relative, elementwise)");
            else Assert.True(normwise <= 1e-4, $"N={n}: parameters differ by {normwise:E2} (relative, normwise)");
            Assert.Equal(singleResult.Evals[^1].ValidationLoss, r.Evals[^1].ValidationLoss, 4);
        }
    }

    /// <summary>
    /// fp16 under ZeRO-1: whether a step overflows depends on each micro-batch's backward pass, so the reference is one rank
    /// accumulating the same two micro-batches of 3. A scale that overflows on the first steps makes both ranks skip them together
    /// (the gradient norm they test is summed over the ranks), their scales halve alike, and the weights match the reference.
    /// </summary>
    [Fact]
    public void Zero1_Fp16_SkipsOverflowedStepsOnEveryRank_AndMatchesOneRankAccumulating()
    {
        TrainerOptions Fp16(TrainerOptions o) => o with { Precision = TrainingPrecision.Fp16, LossScaling = new LossScalerOptions { InitScale = Math.Pow(2, 23) } };
        var (single, one, _) = Train(1, "fp16-1", edit: o => Fp16(o) with { BatchSize = GlobalBatch / 2, GradAccum = 2 });
        int k = one.History.TakeWhile(m => m.Skipped).Count();
        Assert.InRange(k, 1, 6);
        var world = new InProcessWorld(2);
        var runs = world.Run(c =>
        {
            using var t = new Trainer(Fp16(Options(2, "fp16-2")), Data(), Init(), c);
            var r = t.Run();
            return (Weights: t.Store.Export(), Result: r, Scale: t.LossScaler!.Scale);
        });
        Assert.Equal(runs[0].Scale, runs[1].Scale);
        Assert.All(runs, x => Assert.Equal(one.History.Select(m => (m.Skipped, m.LossScale)), x.Result.History.Select(m => (m.Skipped, m.LossScale))));
        double elementwise = MaxRelativeDiff(single, runs[0].Weights);
        output.WriteLine($"fp16 ZeRO-1 N=2 vs N=1 accumulating: {k} skipped steps, max elementwise relative difference {elementwise:E2}");
        Assert.True(elementwise <= 1e-5, $"parameters differ by {elementwise:E2}");
    }

    [Fact]
    public void Resume_OnTheSameNumberOfRanks_IsBitExact()
    {
        TrainerOptions Adam(TrainerOptions o) => o with { Optimizer = new OptimizerConfig() };
        var (straight, _, _) = Train(2, "same-straight", steps: 8, Adam);
        var (_, r1, _) = Train(2, "same-split", steps: 8, o => Adam(o) with { StopAfter = 4 });
        Assert.True(r1.Interrupted);
        var (resumed, _, _) = Train(2, "same-split", steps: 8, o => Adam(o) with { Resume = CheckpointRef.Latest });
        Assert.Equal(0, MaxRelativeDiff(straight, resumed));
    }

    [Fact]
    public void OptimizerStatePerRank_IsCeilOfPOverNTimesEightBytes()
    {
        long p = ModelFolder.ReadParameters(Model()).Sum(q => q.Count);
        foreach (var n in new[] { 1, 2, 3 })
        {
            var (_, _, bytes) = Train(n, $"bytes{n}", steps: 1, o => o with { Optimizer = new OptimizerConfig { Kind = OptimizerKind.AdamW } });
            Assert.All(bytes, b => Assert.Equal((p + n - 1) / n * 8, b));
            output.WriteLine($"P = {p}, N = {n}: {bytes[0]} bytes of AdamW state per rank");
        }
    }

    [Fact]
    public void Resume_OnAnotherNumberOfRanks_ReshardsAndContinuesTheSameRun()
    {
        var (straight, _, _) = Train(1, "straight", steps: 10);
        foreach (var (first, second) in new[] { (2, 3), (3, 1), (1, 2) })
        {
            var outDir = $"resume{first}to{second}";
            var (_, r1, _) = Train(first, outDir, steps: 10, o => o with { StopAfter = 5 });
            Assert.True(r1.Interrupted);
            var (w, r2, _) = Train(second, outDir, steps: 10, o => o with { Resume = CheckpointRef.Latest });
            Assert.Equal(5, r2.History.Count);
            double diff = MaxRelativeDiff(straight, w);
            output.WriteLine($"N={first} then N={second}: max relative difference {diff:E2}");
            Assert.True(diff <= 1e-6, $"N={first} -> N={second}: {diff:E2}");
        }
    }

    private sealed class FailingData(IBatchSource inner, int failOnCall) : IBatchSource
    {
        private int _calls;
        public long TrainSamples => inner.TrainSamples;
        public long ValidationSamples => inner.ValidationSamples;
        public void FillTrain(ReadOnlySpan<int> samples, Batch batch)
        {
            if (++_calls == failOnCall) throw new IOException("disk read failed");
            inner.FillTrain(samples, batch);
        }
        public void FillValidation(long first, int count, Batch batch) => inner.FillValidation(first, count, batch);
    }

    [Fact]
    public void AFailingRank_StopsEveryRankNamingIt()
    {
        var o = Options(2, "failing") with { SaveEvery = 2 };
        var world = new InProcessWorld(2);
        var e = Assert.Throws<AggregateException>(() => world.Run(c =>
        {
            using var t = new Trainer(o, c.Rank == 1 ? new FailingData(Data(), 4) : Data(), Init(), c);
            return t.Run();
        }));
        Assert.Contains("Rank 1 of 2 failed: disk read failed", e.Message);
        // The checkpoint of step 2 is complete; nothing half-written is listed.
        Assert.Equal(["checkpoint-0000002"], Checkpoints.List(Path.Combine(_dir, "failing", "checkpoints")).Select(Path.GetFileName));
    }

    [Fact]
    public void InProcessCollectives_AreCorrect()
    {
        var world = new InProcessWorld(3);
        world.Run(c =>
        {
            var x = Enumerable.Range(0, 9).Select(i => (float)(i * (c.Rank + 1))).ToArray();
            c.AllReduceSum(x);
            Assert.Equal(Enumerable.Range(0, 9).Select(i => (float)(i * 6)), x);
            var recv = new float[3];
            c.ReduceScatterSum(Enumerable.Range(0, 9).Select(i => (float)i).ToArray(), recv);
            Assert.Equal(Enumerable.Range(3 * c.Rank, 3).Select(i => 3f * i), recv);
            var all = new float[6];
            all[2 * c.Rank] = c.Rank; all[2 * c.Rank + 1] = -c.Rank;
            c.AllGather(all);
            Assert.Equal([0f, 0f, 1f, -1f, 2f, -2f], all);
            Assert.Equal(4.5, c.AllReduceSum(c.Rank + 0.5));
            return 0;
        });
    }
}
