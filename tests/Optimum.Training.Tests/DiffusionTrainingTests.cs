using Optimum.Core;
using Optimum.Core.Diffusion;
using Optimum.Data;
using Optimum.Distributed;
using Optimum.Hub;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;

namespace Optimum.Training.Tests;

/// <summary>Image data, the DDPM objective's batches, EMA and a class-conditional UNet through the trainer.</summary>
public sealed class DiffusionTrainingTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>Three classes of 6×6 patterns (a bar, a column, a box) with jitter, as U8 images with labels.</summary>
    private static (byte[] Pixels, long[] Labels) Patterns(int n, int seed, int size = 6)
    {
        var rng = new Random(seed);
        var px = new byte[n * size * size];
        var labels = new long[n];
        for (int i = 0; i < n; i++)
        {
            labels[i] = i % 3;
            int at = rng.Next(1, size - 1);
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size; x++)
                {
                    bool on = labels[i] switch { 0 => y == at, 1 => x == at, _ => x == 0 || y == 0 || x == size - 1 || y == size - 1 };
                    px[i * size * size + y * size + x] = (byte)(on ? 200 + rng.Next(56) : rng.Next(30));
                }
        }
        return (px, labels);
    }

    private string PatternFile(string name, int n, int seed)
    {
        var (px, labels) = Patterns(n, seed);
        var path = Path.Combine(_dir, name);
        SafeTensorsFile.Write(path, [new SafeTensor("images", DType.UInt8, [n, 6, 6], px), SafeTensor.FromInt64s("labels", labels, n)]);
        return path;
    }

    private static UNet2DConfig Config(int? classes = 4) => new()
    {
        SampleSize = 8, InChannels = 1, OutChannels = 1, BlockOutChannels = [8, 16], LayersPerBlock = 1, NormNumGroups = 4, AttentionHeadDim = 4,
        DownBlockTypes = ["DownBlock2D", "AttnDownBlock2D"], UpBlockTypes = ["AttnUpBlock2D", "UpBlock2D"], NumClassEmbeds = classes,
    };

    [Fact]
    public void ImageSet_LoadsU8AndF32_PadsSplitsRoundTrips_AndRefusesBadFiles()
    {
        var u8 = PatternFile("u8.safetensors", 9, 1);
        var set = ImageSet.Load(u8);
        var (px, labels) = Patterns(9, 1);
        Assert.Equal((9, 1, 6, 6), (set.Count, set.Channels, set.Height, set.Width));
        Assert.Equal(labels, set.Labels);
        for (int i = 0; i < px.Length; i++) Assert.Equal(px[i] / 127.5f - 1f, set.Pixels[i]);

        var f32 = Path.Combine(_dir, "f32.safetensors");
        SafeTensorsFile.Write(f32, [SafeTensor.FromFloats("images", [0f, 0.5f, 1f, 0.25f, 0f, 0f, 1f, 1f], 2, 1, 2, 2)]);
        var floats = ImageSet.Load(f32);
        Assert.Null(floats.Labels);
        Assert.Equal([-1f, 0f, 1f, -0.5f, -1f, -1f, 1f, 1f], floats.Pixels);

        var padded = set.PadTo(8);
        Assert.Equal((8, 8), (padded.Height, padded.Width));
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
            {
                bool inside = y is >= 1 and < 7 && x is >= 1 and < 7;
                Assert.Equal(inside ? set.Pixels[(y - 1) * 6 + x - 1] : -1f, padded.Pixels[y * 8 + x]);
            }
        Assert.Throws<ArgumentException>(() => set.PadTo(7));

        var (kept, held) = set.Split(1 / 3.0, seed: 5);
        Assert.Equal((6, 3), (kept.Count, held.Count));
        Assert.Equal(labels.Order(), kept.Labels!.Concat(held.Labels!).Order());

        var again = Path.Combine(_dir, "again.safetensors");
        set.Save(again);
        var back = ImageSet.Load(again);
        Assert.Equal(set.Pixels, back.Pixels);
        Assert.Equal(set.Labels, back.Labels);

        void Bad(string name, IEnumerable<SafeTensor> tensors, string expected)
        {
            var path = Path.Combine(_dir, name);
            SafeTensorsFile.Write(path, tensors);
            var e = Assert.Throws<InvalidDataException>(() => ImageSet.Load(path));
            Assert.Contains(expected, e.Message);
            Assert.Contains(name, e.Message);
        }
        Bad("none.safetensors", [SafeTensor.FromFloats("pixels", [0f], 1, 1, 1)], "no tensor 'images'");
        Bad("range.safetensors", [SafeTensor.FromFloats("images", [0f, 1.5f], 1, 1, 2)], "must be in [0, 1]");
        Bad("count.safetensors", [new SafeTensor("images", DType.UInt8, [2, 1, 1], [0, 1]), SafeTensor.FromInt64s("labels", [1, 2, 3], 3)], "one label per image");
        Bad("rank.safetensors", [new SafeTensor("images", DType.UInt8, [2, 1], [0, 1])], "expected (N, H, W) or (N, C, H, W)");
        Bad("negative.safetensors", [new SafeTensor("images", DType.UInt8, [1, 1, 1], [0]), SafeTensor.FromInt64s("labels", [-1], 1)], "negative label");
        Assert.Throws<FileNotFoundException>(() => ImageSet.Load(Path.Combine(_dir, "missing.safetensors")));
    }

    [Fact]
    public void DiffusionData_NoisesByTheSchedule_SeededByStreamPosition_WithLabelDropout()
    {
        var set = ImageSet.Load(PatternFile("d.safetensors", 64, 2)).PadTo(8);
        var schedule = NoiseSchedule.Linear();
        var data = new DiffusionData(set, set.Take([0, 1, 2]), schedule, classEmbeddings: 4, labelDropout: 0.25, seed: 7);
        Assert.Equal(3, data.NullLabel);
        int[] rows = Enumerable.Range(0, 64).ToArray();
        var batch = new Batch();
        data.FillTrain(rows, 1000, batch);
        var sample = ((float[])batch["sample"].Data).ToArray();
        var noise = ((float[])batch["target"].Data).ToArray();
        var t = ((long[])batch["timestep"].Data).ToArray();
        var labels = ((long[])batch["class_labels"].Data).ToArray();
        Assert.Equal([64, 1, 8, 8], batch["sample"].Shape);

        // sample = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε, exactly as the schedule's add_noise.
        Assert.Equal(schedule.AddNoise(set.Pixels, noise, t), sample);
        // ε ~ N(0, 1): 4,096 values.
        double mean = noise.Average(v => (double)v), variance = noise.Average(v => (v - mean) * (v - mean));
        Assert.True(Math.Abs(mean) < 0.05 && Math.Abs(variance - 1) < 0.07, $"noise mean {mean:F3}, variance {variance:F3}");
        Assert.True(t.All(v => v is >= 0 and < 1000) && t.Distinct().Count() > 50, "timesteps are not spread over [0, 1000)");
        for (int i = 0; i < 64; i++) Assert.True(labels[i] == set.Labels![i] || labels[i] == 3);

        // The same stream position gives the same draw; another position (the same images in a later epoch) fresh ones.
        data.FillTrain(rows, 1000, batch);
        Assert.Equal(noise, (float[])batch["target"].Data);
        data.FillTrain(rows.AsSpan(32, 32), 1032, batch);
        Assert.Equal(noise.AsSpan(32 * 64).ToArray(), (float[])batch["target"].Data);
        data.FillTrain(rows, 5000, batch);
        Assert.NotEqual(noise, (float[])batch["target"].Data);

        // Label dropout: 25% of 6,400 draws (binomial sd 0.54%).
        long dropped = 0;
        for (int k = 0; k < 100; k++)
        {
            data.FillTrain(rows, 64L * k, batch);
            dropped += ((long[])batch["class_labels"].Data).Count(l => l == 3);
        }
        Assert.InRange(dropped / 6400.0, 0.23, 0.27);

        // Validation: fixed draws, never dropped labels.
        var val = new Batch();
        data.FillValidation(0, 3, val);
        var first = ((float[])val["target"].Data).ToArray();
        data.FillValidation(0, 3, val);
        Assert.Equal(first, (float[])val["target"].Data);
        Assert.Equal(set.Labels![..3], (long[])val["class_labels"].Data);

        // Labels the model cannot embed, and a conditional model without labels, are refused.
        var e = Assert.Throws<InvalidDataException>(() => new DiffusionData(set, set, schedule, classEmbeddings: 3, labelDropout: 0.1, seed: 0));
        Assert.Contains("num_class_embeds the number of classes + 1", e.Message);
        // Without label dropout too: the last embedding is the samplers' "no label" either way.
        Assert.Throws<InvalidDataException>(() => new DiffusionData(set, set, schedule, classEmbeddings: 3, labelDropout: 0, seed: 0));
        Assert.Null(new DiffusionData(set, set, schedule, classEmbeddings: 4, labelDropout: 0, seed: 0).NullLabel);
        var unlabeled = set with { Labels = null };
        Assert.Throws<InvalidDataException>(() => new DiffusionData(unlabeled, unlabeled, schedule, classEmbeddings: 4, labelDropout: 0.1, seed: 0));
        Assert.Null(new DiffusionData(unlabeled, unlabeled, schedule, null, 0.1, 0).NullLabel);
    }

    [Fact]
    public void EmaDecay_IsDiffusersWarmup_AndTheAverageFollowsItsRecurrence()
    {
        var o = new EmaOptions();
        Assert.Equal(0, o.Decay(1));
        Assert.Equal(1 - Math.Pow(2, -0.75), o.Decay(2), 15);
        Assert.Equal(1 - Math.Pow(11, -0.75), o.Decay(11), 15);
        Assert.Equal(0.9999, o.Decay(100_000_000), 15);
        Assert.Equal(0, (o with { UpdateAfterStep = 5 }).Decay(6));
        Assert.Equal(1 - Math.Pow(2, -0.75), (o with { UpdateAfterStep = 5 }).Decay(7), 15);
        Assert.Throws<ArgumentException>(() => new EmaOptions { MaxDecay = 1 }.Validate());

        // A store of one trainable parameter and one buffer: the average follows ema ← ema − (1 − d)(ema − w), the buffer is copied.
        using var store = new ParameterStore([new ParameterInfo("w", [3]), new ParameterInfo("b", [2]) { Trainable = false }]);
        store.Load([[1f, 2f, 3f], [5f, 6f]]);
        var ema = new EmaWeights(store, o);
        double[] expected = [1, 2, 3];
        var rng = new Random(3);
        for (int n = 1; n <= 30; n++)
        {
            var w = new[] { (float)rng.NextDouble(), (float)rng.NextDouble(), (float)rng.NextDouble() };
            store.Load([w, [n, -n]]);
            ema.Update(n);
            double d = o.Decay(n);
            for (int k = 0; k < 3; k++) expected[k] -= (1 - d) * (expected[k] - w[k]);
        }
        var got = ema.Export();
        for (int k = 0; k < 3; k++) Assert.Equal(expected[k], got[0][k], 5);
        Assert.Equal([30f, -30f], got[1]);
    }

    private TrainerOptions Options(string outDir, long steps, int batch = 12, EmaOptions? ema = null) => new()
    {
        ModelDir = Path.Combine(_dir, "unet"), OutputDir = Path.Combine(_dir, outDir), Steps = steps, BatchSize = batch, Lr = 3e-3, Warmup = 2,
        Schedule = ScheduleKind.Cosine, ClipNorm = 1, EvalEvery = 0, EvalSamples = 0, SaveEvery = 0, Seed = 4, Export = false, Ema = ema,
        Session = new SessionSettings { IntraOpThreads = 1 },
    };

    private (IReadOnlyList<ParameterInfo> Parameters, float[][] Init) Model()
    {
        var dir = Path.Combine(_dir, "unet");
        if (!Directory.Exists(dir)) ModelKinds.Write(dir, Config());
        var ps = ModelFolder.ReadParameters(dir);
        return (ps, ModelKinds.Initialize(ps, Config(), 1));
    }

    private IBatchSource Data(string file) =>
        ModelKinds.For(ModelFolder.ReadConfig(Path.Combine(_dir, "unet"))).OpenTrainingData(new DataOptions(Path.Combine(_dir, "unet"), [file], ValidationFraction: 0.2, Seed: 4, LabelDropout: 0.1),
            Config(), _ => { });

    /// <summary>--precision fp16 on the UNet: its attention and linear products in float16 (convolutions stay float32), losses tracking fp32's.</summary>
    [Fact]
    public void UNet_Fp16_TracksFp32()
    {
        var (_, init) = Model();
        var file = PatternFile("fp16.safetensors", 48, 3);
        TrainResult Run(TrainingPrecision p)
        {
            using var t = new Trainer(Options(EnumNames.Name(p), 4) with { Precision = p, LossScaling = new LossScalerOptions { InitScale = 1024 } }, Data(file), init);
            return t.Run();
        }
        var (fp32, fp16) = (Run(TrainingPrecision.Fp32), Run(TrainingPrecision.Fp16));
        Assert.Equal(0, fp16.SkippedSteps);
        for (int i = 0; i < 4; i++)
            Assert.True(Math.Abs(fp16.History[i].Loss - fp32.History[i].Loss) <= 1e-3 * Math.Abs(fp32.History[i].Loss), $"step {i + 1}: {fp16.History[i].Loss} vs {fp32.History[i].Loss}");
    }

    [Fact]
    public void ClassConditionalUNet_Learns_ResumesExactlyWithItsEma_AndExportsTheEma()
    {
        var (ps, init) = Model();
        var file = PatternFile("train.safetensors", 120, 3);
        TrainResult r;
        using (var t = new Trainer(Options("learn", 40) with { EvalEvery = 40 }, Data(file), init)) r = t.Run();
        Assert.True(r.Evals[^1].ValidationLoss < 0.6 * r.Evals[0].ValidationLoss, $"validation MSE {r.Evals[0].ValidationLoss:F3} -> {r.Evals[^1].ValidationLoss:F3}");

        // 8 steps straight vs 4 + resume + 4: the noise, timesteps and label dropout follow the stream position; the EMA is checkpointed.
        var ema = new EmaOptions { MaxDecay = 0.99 };
        float[][] straight, straightEma, resumed, resumedEma;
        using (var t = new Trainer(Options("straight", 8, ema: ema) with { Export = true }, Data(file), init))
        {
            t.Run();
            (straight, straightEma) = (t.Store.Export(), t.Ema!.Export());
        }
        using (var t = new Trainer(Options("resumed", 8, ema: ema) with { StopAfter = 4 }, Data(file), init)) t.Run();
        Assert.True(File.Exists(Path.Combine(_dir, "resumed", "checkpoints", "checkpoint-0000004", EmaWeights.File)));
        using (var t = new Trainer(Options("resumed", 8, ema: ema) with { Resume = CheckpointRef.Latest }, Data(file), init))
        {
            t.Run();
            (resumed, resumedEma) = (t.Store.Export(), t.Ema!.Export());
        }
        for (int i = 0; i < ps.Count; i++)
        {
            Assert.Equal(straight[i], resumed[i]);
            Assert.Equal(straightEma[i], resumedEma[i]);
        }
        Assert.True(Diff.MaxRelative(straight, straightEma, floor: 1e-2) > 1e-3, "the EMA equals the weights");
        // final/ carries the average, not the last weights.
        var exported = HfWeights.Load(Path.Combine(_dir, "straight", "final", ModelFolder.WeightsFile), ps, out _);
        for (int i = 0; i < ps.Count; i++) Assert.Equal(straightEma[i], exported[i]);
        // hf/ is a diffusers folder: config, weights and the scheduler the model was trained with.
        Assert.True(File.Exists(Path.Combine(_dir, "straight", "hf", SchedulerConfig.FileName)));
        Assert.Equal(SchedulerConfig.Load(Path.Combine(_dir, "unet")).ToJson().ToJsonString(), SchedulerConfig.Load(Path.Combine(_dir, "straight", "hf")).ToJson().ToJsonString());

        // Resuming with other EMA settings, or none, is refused.
        var e = Assert.Throws<InvalidDataException>(() =>
        {
            using var t = new Trainer(Options("resumed", 8) with { Resume = CheckpointRef.At(Path.Combine(_dir, "resumed", "checkpoints", "checkpoint-0000004")) }, Data(file), init);
            t.Run();
        });
        Assert.Contains("EMA", e.Message);
    }

    /// <summary>The MLP kind reads labelled image files too (pixels in [0, 1]); a size or label the model cannot take is refused.</summary>
    [Fact]
    public void Mlp_LearnsLabelledImageFiles_AndRefusesOnesThatDoNotFit()
    {
        var file = PatternFile("classes.safetensors", 150, 6);
        var mlpDir = Path.Combine(_dir, "mlp");
        var cfg = new MlpConfig { InputSize = 36, HiddenSizes = [32], NumClasses = 3, Dropout = 0 };
        ModelKinds.Write(mlpDir, cfg);
        var kind = ModelKinds.For(ModelFolder.ReadConfig(mlpDir));
        var data = kind.OpenTrainingData(new DataOptions(mlpDir, [file], ValidationFraction: 0.2, Seed: 1), cfg, _ => { });
        Assert.Equal((120, 30), (data.TrainSamples, data.ValidationSamples));
        var batch = new Batch();
        data.FillValidation(0, 2, batch);
        Assert.Equal([2, 36], batch["pixels"].Shape);
        Assert.True(((float[])batch["pixels"].Data).All(v => v is >= 0 and <= 1));
        TrainResult r;
        var options = Options("mlp-run", 60) with { ModelDir = mlpDir, EvalEvery = 60, Lr = 1e-2 };
        using (var t = new Trainer(options, data, ModelKinds.Initialize(ModelFolder.ReadParameters(mlpDir), cfg, 0))) r = t.Run();
        Assert.True(r.Evals[^1].ValidationLoss < 0.2 && r.Evals[0].ValidationLoss > 0.8, $"validation loss {r.Evals[0].ValidationLoss:F3} -> {r.Evals[^1].ValidationLoss:F3}");

        var e = Assert.Throws<InvalidDataException>(() => kind.OpenTrainingData(new DataOptions(mlpDir, [file]), cfg with { InputSize = 64 }, _ => { }));
        Assert.Contains("input_size is 64", e.Message);
        e = Assert.Throws<InvalidDataException>(() => kind.OpenTrainingData(new DataOptions(mlpDir, [file]), cfg with { NumClasses = 2 }, _ => { }));
        Assert.Contains("label 2 is out of the model's 2 classes", e.Message);
    }

    /// <summary>Shift augmentation: each training image is the original moved by a whole-pixel offset within the limit, seeded by stream position.</summary>
    [Fact]
    public void ImageClassificationData_ShiftsTrainingImagesBySeededOffsets()
    {
        var set = ImageSet.Load(PatternFile("shift.safetensors", 40, 8));
        var data = new ImageClassificationData(set, 0.25, seed: 3, maxShift: 2);
        var plain = new ImageClassificationData(set, 0.25, seed: 3);
        int[] rows = Enumerable.Range(0, 30).ToArray();
        Batch a = new(), b = new(), c = new();
        data.FillTrain(rows, 100, a);
        plain.FillTrain(rows, 100, b);
        var shifted = (float[])a["pixels"].Data;
        var original = (float[])b["pixels"].Data;
        var offsets = new HashSet<(int, int)>();
        for (int i = 0; i < 30; i++)
        {
            // Find the offset that explains the image: every pixel is the original's moved by (dy, dx), or 0 where it came from outside.
            var match = (from dy in Enumerable.Range(-2, 5) from dx in Enumerable.Range(-2, 5)
                         where Enumerable.Range(0, 36).All(k =>
                         {
                             int y = k / 6 - dy, x = k % 6 - dx;
                             float expected = y is >= 0 and < 6 && x is >= 0 and < 6 ? original[i * 36 + y * 6 + x] : 0f;
                             return shifted[i * 36 + k] == expected;
                         })
                         select (dy, dx)).ToArray();
            Assert.NotEmpty(match);
            offsets.Add(match[0]);
        }
        Assert.True(offsets.Count > 5, $"only {offsets.Count} distinct offsets in 30 images");
        data.FillTrain(rows, 100, c);
        Assert.Equal(shifted, (float[])c["pixels"].Data);
        // Validation images are never moved.
        data.FillValidation(0, 10, a);
        plain.FillValidation(0, 10, b);
        Assert.Equal((float[])b["pixels"].Data, (float[])a["pixels"].Data);
    }

    [Fact]
    public void UNet_Zero1OverTwoRanks_MatchesOneRank()
    {
        var (_, init) = Model();
        var file = PatternFile("zero.safetensors", 60, 5);
        // SGD: AdamW's first steps move near-zero gradients by ±lr whatever their size, which would magnify summation-order rounding.
        var sgd = new OptimizerConfig { Kind = OptimizerKind.Sgd, Momentum = 0.9 };
        float[][] one;
        using (var t = new Trainer(Options("one", 4, 8) with { Optimizer = sgd, Lr = 0.05 }, Data(file), init))
        {
            t.Run();
            one = t.Store.Export();
        }
        var two = new InProcessWorld(2).Run(c =>
        {
            using var t = new Trainer(Options("two", 4, 4) with { Optimizer = sgd, Lr = 0.05 }, Data(file), init, c);
            t.Run();
            return t.Store.Export();
        })[0];
        double worst = Diff.MaxRelative(one, two, floor: 1e-2), moved = Diff.MaxRelative(one, init, floor: 1e-2);
        Assert.True(moved > 1e-2, $"the weights barely moved ({moved:E2})");
        Assert.True(worst <= 1e-5, $"UNet ZeRO-1 over 2 ranks differs by {worst:E2}");
    }
}
