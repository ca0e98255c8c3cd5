using Optimum.Core;
using Optimum.Core.Diffusion;
using Optimum.Inference;
using Optimum.Inference.Diffusion;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Models.Tests;

/// <summary>
/// <see cref="ImageGenerator"/> on model folders: the unet-tiny fixture exported (its 10-step DDIM trajectory, README
/// tolerance 1e-3) and a small class-conditional UNet with initial weights (classifier-free guidance).
/// </summary>
public sealed class ImageGeneratorTests(ITestOutputHelper output)
{
    private static double MaxAbs(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        return a.Zip(b).Max(p => Math.Abs(p.First - p.Second));
    }

    [Fact]
    public void ExportedFixture_FromItsLatents_TenDdimSteps_ReproduceItsTrajectory()
    {
        var dir = Repo.TempDir();
        try
        {
            ModelKinds.Export(UnetTiny.Dir, dir);
            Assert.Equal(new SchedulerConfig() with { Source = null }, SchedulerConfig.Load(dir) with { Source = null });   // the fixture has none: DDPM defaults
            using var model = ModelKinds.Load(dir, new SessionSettings { IntraOpThreads = 1 });
            Assert.Equal(ModelTask.ImageGeneration, model.Task);
            Assert.Equal("image-generation", model.Task.WireName());
            var gen = model.Images!;
            Assert.Equal((16, 1, false, 0), (gen.SampleSize, gen.Channels, gen.IsClassConditional, gen.ClassCount));
            var e = UnetTiny.Expected;
            var steps = new List<int>();
            var images = gen.Generate(new ImageGenerationOptions { Steps = 10, Latents = e["ddim.x_T"].ToFloats() }, steps.Add);
            Assert.Equal(Enumerable.Range(0, 10), steps);
            Assert.Equal([1L, 1, 16, 16], images.Shape);
            double worst = MaxAbs(images.Pixels, e["ddim.sample"].ToFloats());
            output.WriteLine($"ImageGenerator DDIM 10 steps from ddim.x_T: max |Δ| {worst:E2} vs the fixture's ddim.sample");
            Assert.True(worst <= 1e-3, $"max |Δ| {worst:E2}");

            // Guidance and labels on an unconditional model, latents of the wrong size: errors that name them.
            Assert.Contains("needs a class-conditional model", Assert.Throws<ArgumentException>(() => gen.Generate(new ImageGenerationOptions { GuidanceScale = 3, Labels = [1] })).Message);
            Assert.Contains("is unconditional", Assert.Throws<ArgumentException>(() => gen.Generate(new ImageGenerationOptions { Labels = [1], Steps = 1 })).Message);
            Assert.Contains("255 latent values are not whole images of (C, H, W) = (1, 16, 16)", Assert.Throws<ArgumentException>(() => gen.Generate(new ImageGenerationOptions { Latents = new float[255] })).Message);
            Assert.Contains("[1, 3, 16, 16] do not fit the model: it takes (N, 1, 16, 16)", Assert.Throws<ArgumentException>(() => gen.CheckLatentsShape([1, 3, 16, 16])).Message);
            Assert.Throws<ArgumentOutOfRangeException>(() => gen.Generate(new ImageGenerationOptions { Steps = 1001 }));
        }
        finally { Directory.Delete(dir, true); }
    }

    private static readonly UNet2DConfig Conditional = new()
    {
        SampleSize = 8, InChannels = 1, OutChannels = 1, BlockOutChannels = [8, 16], LayersPerBlock = 1,
        DownBlockTypes = ["DownBlock2D", "AttnDownBlock2D"], UpBlockTypes = ["AttnUpBlock2D", "UpBlock2D"],
        NormNumGroups = 4, AttentionHeadDim = 8, NumClassEmbeds = 4,                        // labels 0..2, 3 = "no label"
    };

    [Fact]
    public void Guidance_OneIsTheConditionalRun_ZeroTheUnconditional_AndTwoExtrapolates()
    {
        var dir = Repo.TempDir();
        try
        {
            ModelKinds.WritePreset(dir, Conditional, seed: 3);
            Assert.Equal(new SchedulerConfig() with { Source = null }, SchedulerConfig.Load(dir) with { Source = null });   // Write's default file
            new SchedulerConfig { ClipSample = false }.Save(dir);                           // one DDIM step is then affine in ε
            using var gen = new ImageGenerator(dir, new SessionSettings { IntraOpThreads = 1 });
            Assert.Equal((true, 3, 3), (gen.IsClassConditional, gen.ClassCount, gen.NullLabel!.Value));
            var o = new ImageGenerationOptions { Steps = 1, Count = 3, Seed = 11, Labels = [0, 1, 2] };
            var conditional = gen.Generate(o).Pixels;
            var unconditional = gen.Generate(o with { Labels = null }).Pixels;
            var w1 = gen.Generate(o with { GuidanceScale = 1 }).Pixels;
            var w0 = gen.Generate(o with { GuidanceScale = 0 }).Pixels;
            var w2 = gen.Generate(o with { GuidanceScale = 2 }).Pixels;
            double labelEffect = MaxAbs(conditional, unconditional), d1 = MaxAbs(w1, conditional), d0 = MaxAbs(w0, unconditional);
            // x_prev = A·x + B·ε with ε = ε_u + w·(ε_c − ε_u), so x(2) = 2·x(1) − x(0).
            double d2 = MaxAbs(w2, conditional.Zip(unconditional, (c, u) => 2 * c - u).ToArray());
            output.WriteLine($"labels move one step by {labelEffect:E2}; w=1 vs conditional {d1:E2}; w=0 vs unconditional {d0:E2}; w=2 vs 2·cond − uncond {d2:E2}");
            Assert.True(labelEffect > 1e-3, $"the labels barely matter ({labelEffect:E2}): the test would not see guidance");
            Assert.Equal(0, d1);
            Assert.True(d0 <= 1e-5, $"w=0 vs unconditional {d0:E2}");
            Assert.True(d2 <= 1e-4, $"w=2 vs 2·cond − uncond {d2:E2}");

            // Per-image randomness: the batch size and the other images do not change an image; its drawn latents given back reproduce it.
            var ddpm = o with { Scheduler = SamplerKind.Ddpm, Steps = 4, GuidanceScale = 2.5, Labels = [2] };
            var big = gen.Generate(ddpm with { BatchSize = 3 });
            var small = gen.Generate(ddpm with { BatchSize = 1 });
            var alone = gen.Generate(ddpm with { Count = 1 });
            Assert.Equal([2, 2, 2], big.Labels!);
            double batchDiff = MaxAbs(big.Pixels, small.Pixels), aloneDiff = MaxAbs(big.Pixels[..64], alone.Pixels);
            output.WriteLine($"DDPM 4 steps, w 2.5: batch 3 vs 1 {batchDiff:E2}; image 0 alone vs in a batch of 3 {aloneDiff:E2}");
            Assert.True(batchDiff <= 1e-5 && aloneDiff <= 1e-5, $"{batchDiff:E2} {aloneDiff:E2}");
            Assert.True(MaxAbs(big.Pixels[..64], big.Pixels[64..128]) > 1e-2);            // different images

            // Labels: one for all or one per image, in [0, num_class_embeds − 1).
            Assert.Contains("Labels are in [0, 3)", Assert.Throws<ArgumentOutOfRangeException>(() => gen.Generate(o with { Labels = [3] })).Message);
            Assert.Contains("2 labels for 3 images", Assert.Throws<ArgumentException>(() => gen.Generate(o with { Labels = [0, 1] })).Message);
            Assert.Contains("needs class labels", Assert.Throws<ArgumentException>(() => gen.Generate(o with { Labels = null, GuidanceScale = 3 })).Message);
            Assert.Contains("latents hold 1 images but 3 were asked for", Assert.Throws<ArgumentException>(() => gen.Generate(o with { Latents = new float[64] })).Message);
            using var cancelled = new CancellationTokenSource();
            cancelled.Cancel();
            Assert.Throws<OperationCanceledException>(() => gen.Generate(o, cancel: cancelled.Token));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void DrawnLatents_GivenBack_ReproduceTheRun()
    {
        var dir = Repo.TempDir();
        try
        {
            ModelKinds.WritePreset(dir, Conditional, seed: 4);
            using var gen = new ImageGenerator(dir, new SessionSettings { IntraOpThreads = 1 });
            // Image i's latents are HfWeights.Normal(new Random(Seeds.Derive(seed, i, 0)), C·H·W, 1).
            var latents = Enumerable.Range(0, 2).SelectMany(i => Optimum.Hub.HfWeights.Normal(new Random(Seeds.Derive(7, i, 0)), 64, 1.0)).ToArray();
            var o = new ImageGenerationOptions { Scheduler = SamplerKind.Ddim, Eta = 0.7, Steps = 3, Count = 2, Seed = 7 };
            double d = MaxAbs(gen.Generate(o).Pixels, gen.Generate(o with { Latents = latents }).Pixels);
            output.WriteLine($"DDIM eta 0.7: drawn latents vs the same latents given: {d:E2}");
            Assert.Equal(0, d);
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void Export_CarriesTheSchedulerConfigOfADiffusersPipeline()
    {
        var root = Repo.TempDir();
        try
        {
            var unet = Path.Combine(root, "pipeline", "unet");
            Directory.CreateDirectory(unet);
            foreach (var f in Directory.GetFiles(UnetTiny.Dir)) File.Copy(f, Path.Combine(unet, Path.GetFileName(f)));
            var scheduler = new SchedulerConfig { ClassName = SchedulerConfig.DdimClassName, BetaSchedule = "squaredcos_cap_v2", ClipSample = false, StepsOffset = 1 };
            scheduler.Save(Path.Combine(root, "pipeline", "scheduler"));
            var model = Path.Combine(root, "model");
            ModelKinds.Export(unet, model);
            var carried = SchedulerConfig.Load(model);
            Assert.Equal(scheduler with { Source = null }, carried with { Source = null });
            Assert.Equal(NoiseSchedule.SquaredCosCapV2().AlphasCumprod, carried.Build().AlphasCumprod);
            File.WriteAllText(Path.Combine(unet, SchedulerConfig.FileName), """{"prediction_type": "v_prediction"}""");   // beside config.json wins, and is checked
            Assert.Contains("prediction_type=\"v_prediction\" is not supported", Assert.Throws<InvalidDataException>(() => ModelKinds.Export(unet, model)).Message);
        }
        finally { Directory.Delete(root, true); }
    }
}
