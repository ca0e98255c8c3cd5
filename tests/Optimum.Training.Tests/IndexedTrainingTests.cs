using Optimum.Core;
using Optimum.Data;
using Optimum.Distributed;
using Optimum.Models;
using Optimum.Tests;
using Xunit;

namespace Optimum.Training.Tests;

/// <summary>The trainer on memory-mapped datasets: the same run as from text in memory, exact resume, any number of ranks.</summary>
public sealed class IndexedTrainingTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private static readonly string Moby = File.ReadAllText(Repo.Path("samples", "data", "moby-dick.txt"));

    private string Model(Gpt2Config c, string name)
    {
        var dir = Path.Combine(_dir, name);
        if (!Directory.Exists(dir)) ModelKinds.Write(dir, c);
        return dir;
    }

    private TrainerOptions Options(string model, string outDir, long steps, int batch = 3) => new()
    {
        ModelDir = model, OutputDir = Path.Combine(_dir, outDir), Steps = steps, BatchSize = batch, GradAccum = 2, Lr = 5e-3, Warmup = 2,
        Schedule = ScheduleKind.Linear, ClipNorm = 0.5, Optimizer = new OptimizerConfig { Kind = OptimizerKind.Sgd, Momentum = 0.9 },
        EvalEvery = 4, EvalSamples = 6, SaveEvery = 0, Seed = 11, Export = false, Session = new SessionSettings { IntraOpThreads = 1 },
    };

    [Fact]
    public void TrainingFromAPreprocessedDataset_GivesTheSameLossesAsFromTheTextInMemory()
    {
        var cfg = new Gpt2Config { VocabSize = 50257, NPositions = 16, NEmbd = 16, NLayer = 1, NHead = 2 };
        var model = Model(cfg, "gpt2");
        var texts = Path.Combine(_dir, "texts");
        Directory.CreateDirectory(texts);
        for (int i = 0; i < 3; i++) File.WriteAllText(Path.Combine(texts, $"{i}.txt"), Moby.Substring(10_000 + 2_000 * i, 2_000));
        var prefix = Path.Combine(_dir, "moby");
        Preprocessor.Run(new PreprocessOptions { Inputs = [texts], OutputPrefix = prefix, Workers = 2 }, ModelKinds.DocumentTokenizer(model));

        var kind = ModelKinds.For(ModelFolder.ReadConfig(model));
        var fromText = kind.OpenTrainingData(new DataOptions(model, [texts], 12, ValidationFraction: 0, CacheDir: Path.Combine(_dir, "cache")), cfg, _ => { });
        var fromDataset = kind.OpenTrainingData(new DataOptions(model, [prefix], 12, ValidationFraction: 0), cfg, _ => { });
        Assert.IsType<LmData>(fromText);
        using var mapped = Assert.IsType<IndexedLmData>(fromDataset);
        Assert.Equal(fromText.TrainSamples, mapped.TrainSamples);

        var init = ModelKinds.Initialize(ModelFolder.ReadParameters(model), cfg, 3);
        TrainResult a, b;
        float[][] wa, wb;
        using (var t = new Trainer(Options(model, "text", 6) with { EvalEvery = 0 }, fromText, init)) (a, wa) = (t.Run(), t.Store.Export());
        using (var t = new Trainer(Options(model, "mapped", 6) with { EvalEvery = 0 }, mapped, init)) (b, wb) = (t.Run(), t.Store.Export());
        Assert.Equal(6, a.History.Count);
        Assert.Equal(a.History.Select(m => m.Loss), b.History.Select(m => m.Loss));
        for (int i = 0; i < wa.Length; i++) Assert.True(wa[i].AsSpan().SequenceEqual(wb[i]), $"parameter {i} differs");
    }

    private static readonly Gpt2Config Tiny = new()
    {
        VocabSize = 61, NPositions = 16, NEmbd = 16, NLayer = 2, NHead = 2, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0,
    };

    /// <summary>40 documents of Moby-Dick, one id per character (vocabulary 61).</summary>
    private string CharDataset()
    {
        var prefix = Path.Combine(_dir, "chars");
        if (File.Exists(prefix + ".idx")) return prefix;
        var tok = new CharTokenizer(61, 0);
        using var w = new IndexedDatasetWriter(prefix, tok.Identity);
        for (int i = 0; i < 40; i++) w.Add(tok.Encode(Moby.Substring(30_000 + 150 * i, 150)), $"doc {i}");
        w.Commit();
        return prefix;
    }

    private IndexedLmData Data() => IndexedLmData.Open(CharDataset(), 12, 0.1, new CharTokenizer(61, 0).Identity);

    [Fact]
    public void Resume_FromADataset_IsExact_AndTwoRanksMatchOne()
    {
        var model = Model(Tiny, "tiny");
        var init = ModelKinds.Initialize(ModelFolder.ReadParameters(model), Tiny, 1);
        float[][] straight;
        TrainResult straightRun;
        using (var data = Data())
        {
            Assert.True(data.ValidationSamples > 0 && data.ValidationDocuments >= 1);
            using var t = new Trainer(Options(model, "straight", 8), data, init);
            straightRun = t.Run();
            straight = t.Store.Export();
        }
        using (var data = Data())
        using (var cts = new CancellationTokenSource())
        using (var t = new Trainer(Options(model, "split", 8), data, init))
        {
            t.StepCompleted += m => { if (m.Step == 4) cts.Cancel(); };
            Assert.True(t.Run(cts.Token).Interrupted);
        }
        using (var data = Data())
        using (var t = new Trainer(Options(model, "split", 8) with { Resume = CheckpointRef.Latest }, data, ModelKinds.Initialize(ModelFolder.ReadParameters(model), Tiny, 99)))
        {
            var r = t.Run();
            Assert.Equal(straightRun.History.Skip(4).Select(m => m.Loss), r.History.Select(m => m.Loss));
            var resumed = t.Store.Export();
            for (int i = 0; i < straight.Length; i++) Assert.True(straight[i].AsSpan().SequenceEqual(resumed[i]), $"parameter {t.Store.Parameters[i].Name} differs after resume");
        }
        // ZeRO-1 over two ranks, each half the batch: the same samples per update, the same result up to float summation order.
        var runs = new InProcessWorld(2).Run(c =>
        {
            using var data = Data();
            using var t = new Trainer(Options(model, "two", 8, batch: 3) with { BatchSize = 3, GradAccum = 1 }, data, init, c);
            var r = t.Run();
            return (t.Store.Export(), r);
        });
        using (var data = Data())
        using (var t = new Trainer(Options(model, "one", 8) with { BatchSize = 6, GradAccum = 1 }, data, init))
        {
            var r = t.Run();
            double diff = Diff.MaxRelative(t.Store.Export(), runs[0].Item1, floor: 1e-3);
            Assert.True(diff <= 1e-6, $"two ranks differ from one by {diff:E2} (relative, elementwise)");
            Assert.Equal(r.Evals[^1].ValidationLoss, runs[0].r.Evals[^1].ValidationLoss, 5);
        }
    }
    /// <summary>0.7 of <see cref="CharDataset"/> and 0.3 of 30 other documents, each part's windows drawn by the run's seed.</summary>
    private BlendedLmData Blend()
    {
        var tok = new CharTokenizer(61, 0);
        var other = Path.Combine(_dir, "chars2");
        if (!File.Exists(other + ".idx"))
        {
            using var w = new IndexedDatasetWriter(other, tok.Identity);
            for (int i = 0; i < 30; i++) w.Add(tok.Encode(Moby.Substring(90_000 + 170 * i, 170)), $"doc {i}");
            w.Commit();
        }
        return new BlendedLmData([(0.7, Data()), (0.3, IndexedLmData.Open(other, 12, 0.1, tok.Identity))], seed: 11);
    }

    [Fact]
    public void Resume_FromABlend_IsExact()
    {
        var model = Model(Tiny, "tiny");
        var init = ModelKinds.Initialize(ModelFolder.ReadParameters(model), Tiny, 1);
        TrainResult straight;
        float[][] straightWeights;
        using (var data = Blend())
        {
            // The evaluation's first 6 validation windows mix both parts.
            Assert.Contains(Enumerable.Range(0, 6), i => data.LocateValidation(i).Part == 1);
            using var t = new Trainer(Options(model, "blend-straight", 8), data, init);
            straight = t.Run();
            straightWeights = t.Store.Export();
        }
        using (var data = Blend())
        using (var cts = new CancellationTokenSource())
        using (var t = new Trainer(Options(model, "blend-split", 8), data, init))
        {
            t.StepCompleted += m => { if (m.Step == 4) cts.Cancel(); };
            Assert.True(t.Run(cts.Token).Interrupted);
        }
        using (var data = Blend())
        using (var t = new Trainer(Options(model, "blend-split", 8) with { Resume = CheckpointRef.Latest }, data, ModelKinds.Initialize(ModelFolder.ReadParameters(model), Tiny, 99)))
        {
            var r = t.Run();
            Assert.Equal(straight.History.Skip(4).Select(m => m.Loss), r.History.Select(m => m.Loss));
            Assert.Equal(straight.Evals[^1].ValidationLoss, r.Evals[^1].ValidationLoss);
            Assert.True(double.IsFinite(r.Evals[^1].ValidationLoss));
            var resumed = t.Store.Export();
            for (int i = 0; i < straightWeights.Length; i++) Assert.True(straightWeights[i].AsSpan().SequenceEqual(resumed[i]), $"parameter {t.Store.Parameters[i].Name} differs after resume");
        }
    }
}
