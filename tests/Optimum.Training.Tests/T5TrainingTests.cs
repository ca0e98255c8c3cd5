using Optimum.Distributed;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Optimum.Data;
using Xunit;
using Optimum.Core;

namespace Optimum.Training.Tests;

/// <summary>T5 through the same trainer: learning a toy mapping, and ZeRO-1 over two ranks.</summary>
public sealed class T5TrainingTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private static readonly T5Config Tiny = new()
    {
        VocabSize = 16, DModel = 16, DKv = 8, NumHeads = 2, DFf = 32, NumLayers = 1, NumDecoderLayers = 1,
        RelativeAttentionNumBuckets = 8, RelativeAttentionMaxDistance = 16, DropoutRate = 0, MaxLength = 16,
    };

    /// <summary>Reverse a short sequence of symbols 3..12; EOS = 1.</summary>
    private static Seq2SeqData Data()
    {
        var rng = new Random(5);
        var pairs = Enumerable.Range(0, 400).Select(_ =>
        {
            var s = Enumerable.Range(0, rng.Next(2, 6)).Select(_ => rng.Next(3, 13)).ToArray();
            return (Source: s.Append(1).ToArray(), Target: s.Reverse().Append(1).ToArray());
        }).ToArray();
        return new Seq2SeqData(pairs, 0.1);
    }

    private TrainerOptions Options(string outDir, int batch, long steps, string optimizer) => new()
    {
        ModelDir = Path.Combine(_dir, "model"), OutputDir = Path.Combine(_dir, outDir), Steps = steps, BatchSize = batch, Lr = optimizer == "sgd" ? 0.05 : 1e-2,
        Warmup = 5, Schedule = ScheduleKind.Linear, ClipNorm = 1, EvalEvery = 0, EvalSamples = 32, SaveEvery = 0, Seed = 1, Export = false,
        Optimizer = new OptimizerConfig { Kind = EnumNames.Parse<OptimizerKind>(optimizer, "optimizer"), Momentum = 0.9 }, Session = new SessionSettings { IntraOpThreads = 1 },
    };

    /// <summary>--precision fp16 on T5 (encoder, decoder and cross attention in float16): the losses track fp32's, with device state too.</summary>
    [Fact]
    public void T5_Fp16_TracksFp32_WithAndWithoutDeviceState()
    {
        ModelKinds.Write(Path.Combine(_dir, "model"), Tiny);
        var init = ModelKinds.Initialize(ModelFolder.ReadParameters(Path.Combine(_dir, "model")), Tiny, 3);
        TrainResult Run(string name, TrainingPrecision p, bool device)
        {
            using var t = new Trainer(Options(name, 8, 4, "adamw") with { Warmup = 1, Precision = p, LossScaling = new LossScalerOptions { InitScale = 1024 }, StateOnDevice = device }, Data(), init);
            return t.Run();
        }
        var fp32 = Run("fp32", TrainingPrecision.Fp32, false);
        foreach (var device in new[] { false, true })
        {
            var fp16 = Run(device ? "fp16-device" : "fp16", TrainingPrecision.Fp16, device);
            Assert.Equal(0, fp16.SkippedSteps);
            for (int i = 0; i < 4; i++)
                Assert.True(Math.Abs(fp16.History[i].Loss - fp32.History[i].Loss) <= 1e-3 * fp32.History[i].Loss, $"step {i + 1}: {fp16.History[i].Loss} vs {fp32.History[i].Loss}");
        }
    }

    [Fact]
    public void T5_LearnsAToyMapping_AndZero1MatchesOneRank()
    {
        ModelKinds.Write(Path.Combine(_dir, "model"), Tiny);
        var ps = ModelFolder.ReadParameters(Path.Combine(_dir, "model"));
        var init = ModelKinds.Initialize(ps, Tiny, 3);
        TrainResult learned;
        using (var t = new Trainer(Options("learn", 16, 150, "adamw"), Data(), init))
            learned = t.Run();
        Assert.True(learned.Evals[^1].ValidationLoss < 0.5 * learned.Evals[0].ValidationLoss,
            $"validation loss {learned.Evals[0].ValidationLoss:F3} -> {learned.Evals[^1].ValidationLoss:F3}");

        float[][] one;
        using (var t = new Trainer(Options("one", 8, 6, "sgd"), Data(), init))
        {
            t.Run();
            one = t.Store.Export();
        }
        var two = new InProcessWorld(2).Run(c =>
        {
            using var t = new Trainer(Options("two", 4, 6, "sgd"), Data(), init, c);
            t.Run();
            return t.Store.Export();
        })[0];
        // Relative to |a| floored at 1e-2: values near zero compare absolutely (as in the MPI tests).
        double worst = Diff.MaxRelative(one, two, floor: 1e-2);
        Assert.True(worst <= 1e-6, $"T5 ZeRO-1 over 2 ranks differs by {worst:E2}");
    }
}
