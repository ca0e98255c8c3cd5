using Optimum.Distributed;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Optimum.Data;
using Xunit;
using Optimum.Core;

namespace Optimum.Training.Tests;

/// <summary>Informer and the Time Series Transformer through the trainer on windows of the unemployment series.</summary>
public sealed class TimeSeriesTrainingTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private static TimeSeriesConfig Config(string kind) => new()
    {
        ModelType = kind, PredictionLength = 6, ContextLength = 12, LagsSequence = [1, 2, 12], NumTimeFeatures = 2, TimeFeatures = "monthly",
        NumStaticCategoricalFeatures = 1, Cardinality = [14], EmbeddingDimension = [3], DModel = 16, EncoderLayers = 2, DecoderLayers = 1,
        EncoderFfnDim = 16, DecoderFfnDim = 16, Dropout = 0.1, AttentionDropout = 0, ActivationDropout = 0, EncoderLayerdrop = 0.1, DecoderLayerdrop = 0,
        AttentionType = "prob", SamplingFactor = 2, Distil = true,
    };

    private static TimeSeriesWindows Data(TimeSeriesConfig c) =>
        new(TimeSeriesFiles.ReadVegaUnemployment(Repo.Path("samples", "data", "unemployment-across-industries.json")), c.ContextLength, c.PredictionLength, c.LagsSequence,
            holdout: 12, minPast: c.ContextLength, seriesIdAsCategorical: true);

    private TrainerOptions Options(string model, string outDir, long steps, int batch = 16) => new()
    {
        ModelDir = Path.Combine(_dir, model), OutputDir = Path.Combine(_dir, outDir), Steps = steps, BatchSize = batch, Lr = 3e-3, Warmup = 2,
        Schedule = ScheduleKind.Cosine, ClipNorm = 1, EvalEvery = 0, EvalSamples = 0, SaveEvery = 0, Seed = 4, Export = false,
        Session = new SessionSettings { IntraOpThreads = 1 },
    };

    /// <summary>--precision fp16 rebuilds the informer's graphs with float16 products and a loss scale: the losses track fp32's (CPU: float32 products, see MixedPrecisionTrainingTests).</summary>
    [Fact]
    public void Informer_Fp16_TracksFp32()
    {
        var cfg = Config("informer");
        ModelKinds.Write(Path.Combine(_dir, "informer"), cfg);
        var init = ModelKinds.Initialize(ModelFolder.ReadParameters(Path.Combine(_dir, "informer")), cfg, 1);
        TrainResult Run(TrainingPrecision p)
        {
            using var t = new Trainer(Options("informer", EnumNames.Name(p), 4) with { Precision = p, LossScaling = new LossScalerOptions { InitScale = 1024 } }, Data(cfg), init);
            return t.Run();
        }
        var (fp32, fp16) = (Run(TrainingPrecision.Fp32), Run(TrainingPrecision.Fp16));
        Assert.Equal(0, fp16.SkippedSteps);
        for (int i = 0; i < 4; i++)
            Assert.True(Math.Abs(fp16.History[i].Loss - fp32.History[i].Loss) <= 1e-3 * Math.Abs(fp32.History[i].Loss), $"step {i + 1}: {fp16.History[i].Loss} vs {fp32.History[i].Loss}");
        Assert.True(Math.Abs(fp16.Evals[^1].ValidationLoss - fp32.Evals[^1].ValidationLoss) <= 1e-3 * Math.Abs(fp32.Evals[^1].ValidationLoss));
    }

    [Fact]
    public void Informer_Learns_UpdatesBatchNormStatistics_LeavesPositionTables_AndResumesExactly()
    {
        var cfg = Config("informer");
        ModelKinds.Write(Path.Combine(_dir, "informer"), cfg);
        var ps = ModelFolder.ReadParameters(Path.Combine(_dir, "informer"));
        Assert.Equal(["model.decoder.embed_positions.weight", "model.encoder.conv_layers.0.norm.running_mean", "model.encoder.conv_layers.0.norm.running_var", "model.encoder.embed_positions.weight"],
            ps.Where(p => !p.Trainable).Select(p => p.Name).Order(StringComparer.Ordinal));
        var init = ModelKinds.Initialize(ps, cfg, 1);
        float[][] learned;
        TrainResult r;
        using (var t = new Trainer(Options("informer", "learn", 60), Data(cfg), init))
        {
            r = t.Run();
            learned = t.Store.Export();
        }
        Assert.True(r.Evals[^1].ValidationLoss < r.Evals[0].ValidationLoss - 0.3, $"validation NLL {r.Evals[0].ValidationLoss:F3} -> {r.Evals[^1].ValidationLoss:F3}");
        int Index(string name) => ps.Select((p, i) => (p, i)).Single(x => x.p.Name == name).i;
        var mean = learned[Index("model.encoder.conv_layers.0.norm.running_mean")];
        var variance = learned[Index("model.encoder.conv_layers.0.norm.running_var")];
        Assert.True(mean.All(float.IsFinite) && mean.Any(v => Math.Abs(v) > 1e-3), "running_mean did not move");
        Assert.True(variance.All(v => v > 0) && variance.Any(v => Math.Abs(v - 1) > 1e-3), "running_var did not move");
        foreach (var table in new[] { "model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight" })
            Assert.Equal(init[Index(table)], learned[Index(table)]);

        // 8 steps straight vs 4 + resume + 4: dropout, LayerDrop and ProbSparse sampling are seeded per step, the buffers are checkpointed.
        float[][] straight, resumed;
        using (var t = new Trainer(Options("informer", "straight", 8) with { SaveEvery = 4 }, Data(cfg), init))
        {
            t.Run();
            straight = t.Store.Export();
        }
        using (var t = new Trainer(Options("informer", "resumed", 8) with { StopAfter = 4 }, Data(cfg), init)) t.Run();
        using (var t = new Trainer(Options("informer", "resumed", 8) with { Resume = CheckpointRef.Latest }, Data(cfg), init))
        {
            t.Run();
            resumed = t.Store.Export();
        }
        for (int i = 0; i < ps.Count; i++) Assert.Equal(straight[i], resumed[i]);
    }

    [Fact]
    public void Tst_Zero1OverTwoRanks_MatchesOneRank()
    {
        var cfg = Config("time_series_transformer") with { Dropout = 0, EncoderLayerdrop = 0 };
        ModelKinds.Write(Path.Combine(_dir, "tst"), cfg);
        var ps = ModelFolder.ReadParameters(Path.Combine(_dir, "tst"));
        var init = ModelKinds.Initialize(ps, cfg, 2);
        float[][] one;
        using (var t = new Trainer(Options("tst", "one", 5, 8), Data(cfg), init))
        {
            t.Run();
            one = t.Store.Export();
        }
        var two = new InProcessWorld(2).Run(c =>
        {
            using var t = new Trainer(Options("tst", "two", 5, 4), Data(cfg), init, c);
            t.Run();
            return t.Store.Export();
        })[0];
        double worst = Diff.MaxRelative(one, two, floor: 1e-2);
        Assert.True(worst <= 1e-4, $"TST ZeRO-1 over 2 ranks differs by {worst:E2}");
    }

    /// <summary>
    /// Informer over 2 ranks: each rank's BatchNorm sees its own half batch (as DDP without SyncBatchNorm) and the
    /// running statistics are averaged every step, so both ranks end with identical weights and buffers.
    /// </summary>
    [Fact]
    public void Informer_Zero1_KeepsRanksAndBatchNormStatisticsIdentical()
    {
        var cfg = Config("informer");
        ModelKinds.Write(Path.Combine(_dir, "informer"), cfg);
        var ps = ModelFolder.ReadParameters(Path.Combine(_dir, "informer"));
        var init = ModelKinds.Initialize(ps, cfg, 1);
        var ranks = new InProcessWorld(2).Run(c =>
        {
            using var t = new Trainer(Options("informer", "zero", 6, 8), Data(cfg), init, c);
            t.Run();
            return t.Store.Export();
        });
        int mean = ps.Select((p, i) => (p, i)).Single(x => x.p.Name.EndsWith("norm.running_mean", StringComparison.Ordinal)).i;
        Assert.True(ranks[0][mean].Any(v => Math.Abs(v) > 1e-4), "running_mean did not move");
        for (int i = 0; i < ps.Count; i++) Assert.Equal(ranks[0][i], ranks[1][i]);
    }

    /// <summary>Passes batches through, letting a test spoil the n-th training batch.</summary>
    private sealed class Tampered(IBatchSource inner, int at, Action<Batch> spoil) : IBatchSource
    {
        private int _calls;
        public long TrainSamples => inner.TrainSamples;
        public long ValidationSamples => inner.ValidationSamples;
        public void FillValidation(long first, int count, Batch batch) => inner.FillValidation(first, count, batch);
        public void FillTrain(ReadOnlySpan<int> samples, Batch batch)
        {
            inner.FillTrain(samples, batch);
            if (_calls++ == at) spoil(batch);
        }
    }

    [Fact]
    public void SkippedSteps_LeaveWeightsAndBatchNormStatisticsAsTheyWere()
    {
        var cfg = Config("informer");
        ModelKinds.Write(Path.Combine(_dir, "informer"), cfg);
        var ps = ModelFolder.ReadParameters(Path.Combine(_dir, "informer"));
        var init = ModelKinds.Initialize(ps, cfg, 1);
        float[][] Run(string name, IBatchSource data, TrainerOptions o, long expectSkipped)
        {
            using var t = new Trainer(o, data, init);
            var r = t.Run();
            Assert.Equal(expectSkipped, r.SkippedSteps);
            return t.Store.Export();
        }
        var after1 = Run("one", Data(cfg), Options("informer", "one", 2) with { StopAfter = 1 }, 0);
        // A batch whose futures are all unobserved has nothing to learn from: skipped without an error.
        var empty = Run("empty", new Tampered(Data(cfg), 1, b =>
        {
            Array.Clear((float[])b["future_observed_mask"].Data);
            b.LossWeight = 0;
        }), Options("informer", "empty", 2), 1);
        // A batch that overflows the scaler makes the loss non-finite: with --skip-nonfinite the step is dropped,
        // and so are the running statistics its forward pass moved.
        var overflow = Run("overflow", new Tampered(Data(cfg), 1, b => ((float[])b["past_values"].Data).AsSpan().Fill(float.MaxValue)),
            Options("informer", "overflow", 2) with { SkipNonFinite = true }, 1);
        for (int i = 0; i < ps.Count; i++)
        {
            Assert.Equal(after1[i], empty[i]);
            Assert.Equal(after1[i], overflow[i]);
        }
    }
}
