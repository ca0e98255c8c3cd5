using System.CommandLine;
using System.Diagnostics;
using Optimum.Core;
using Optimum.Inference.Diffusion;
using Optimum.Models;

namespace Optimum.Cli;

/// <summary>What <c>optimum-net generate-images</c> was asked for.</summary>
public sealed record GenerateImagesArgs
{
    public required string ModelDir { get; init; }
    public required string OutDir { get; init; }
    public string Scheduler { get; init; } = "ddim";
    public int Steps { get; init; } = 50;
    public double Eta { get; init; }
    /// <summary>Null: 3 for a class-conditional model given labels, else 1.</summary>
    public double? Guidance { get; init; }
    public int[] Labels { get; init; } = [];
    /// <summary>Null: the latents' N, else 16.</summary>
    public int? Count { get; init; }
    public long Seed { get; init; }
    public int BatchSize { get; init; } = 16;
    public string? Latents { get; init; }
    public int Columns { get; init; }
    /// <summary>Null: enough for each image to be at least 64 pixels wide in the grid.</summary>
    public int? Scale { get; init; }
    public int Threads { get; init; } = Environment.ProcessorCount;
    /// <summary>Where the UNet runs (--device).</summary>
    public ExecutionDevice Device { get; init; }
}

/// <summary>
/// <c>optimum-net generate-images</c>: samples a diffusion UNet folder with <see cref="ImageGenerator"/> and writes
/// images.png and images.safetensors with <see cref="ImageFiles"/>; everything is checked (model, options, latents)
/// before the first UNet run, and the files are written only when all images are done.
/// </summary>
public static class GenerateImagesCommand
{
    public const int DefaultCount = 16;

    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "UNet2DModel folder (config.json, inference.onnx, model.safetensors; scheduler_config.json optional).", Required = true };
        var scheduler = new Option<string>("--scheduler") { Description = "ddim or ddpm.", DefaultValueFactory = _ => "ddim" };
        var steps = new Option<int>("--steps") { Description = "Sampling steps (leading spacing of the model's schedule).", DefaultValueFactory = _ => 50 };
        var eta = new Option<double>("--eta") { Description = "DDIM eta (0 = deterministic).", DefaultValueFactory = _ => 0 };
        var guidance = new Option<double?>("--guidance") { Description = $"Classifier-free guidance scale (default {ImageGenerationOptions.DefaultGuidance} with --label on a class-conditional model, else 1 = none)." };
        var label = new Option<int[]>("--label") { Description = "Class label for every image, or one per image.", AllowMultipleArgumentsPerToken = true };
        var count = new Option<int?>("--count") { Description = $"Images (default: the latents' N, else {DefaultCount})." };
        var seed = new Option<long>("--seed") { Description = "Seed of the starting noise and of the sampler's noise.", DefaultValueFactory = _ => 0 };
        var batch = new Option<int>("--batch-size") { Description = "Images per UNet run.", DefaultValueFactory = _ => 16 };
        var latents = new Option<string?>("--latents") { Description = "safetensors file with one tensor, the starting noise (N, C, H, W)." };
        var output = new Option<string>("--out", "-o") { Description = "Folder that receives images.png and images.safetensors.", DefaultValueFactory = _ => "out/images" };
        var columns = new Option<int>("--columns") { Description = "Images per grid row (0 = square grid).", DefaultValueFactory = _ => 0 };
        var scale = new Option<int?>("--scale") { Description = "Grid pixels per image pixel (default: images at least 64 pixels wide)." };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime intra-op threads.", DefaultValueFactory = _ => Environment.ProcessorCount };
        var device = DeviceOption.Create();
        var command = new Command("generate-images", "Sample images from a diffusion UNet folder (DDIM or DDPM, classifier-free guidance): images.png and images.safetensors.")
        {
            model, scheduler, steps, eta, guidance, label, count, seed, batch, latents, output, columns, scale, threads, device,
        };
        command.SetAction(r => ExpectedErrors.Report(() =>
        {
            using var cts = new CancellationTokenSource();
            ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cts.Cancel(); };
            Console.CancelKeyPress += onCancel;
            try
            {
                var onDevice = DeviceOption.Parse(r, device);       // before --out is made
                Run(new GenerateImagesArgs
                {
                    ModelDir = r.GetValue(model)!, OutDir = CliPaths.OutputFolder(r.GetValue(output)!, "--out"), Scheduler = r.GetValue(scheduler)!, Steps = r.GetValue(steps), Eta = r.GetValue(eta),
                    Guidance = r.GetValue(guidance), Labels = r.GetValue(label) ?? [], Count = r.GetValue(count), Seed = r.GetValue(seed), BatchSize = r.GetValue(batch),
                    Latents = r.GetValue(latents), Columns = r.GetValue(columns), Scale = r.GetValue(scale), Threads = r.GetValue(threads),
                    Device = onDevice,
                }, Console.Out, cts.Token);
                return 0;
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine("interrupted; nothing written");
                return 130;
            }
            finally { Console.CancelKeyPress -= onCancel; }
        }));
        return command;
    }

    /// <summary>Generates and writes the images; <paramref name="log"/> gets about ten progress lines and the paths written.</summary>
    public static GeneratedImages Run(GenerateImagesArgs a, TextWriter log, CancellationToken cancel = default)
    {
        var kind = EnumNames.Parse<SamplerKind>(a.Scheduler, "--scheduler");
        if (a.Scale is < 1) throw new ArgumentException($"--scale must be >= 1, got {a.Scale}.");
        if (a.Columns < 0) throw new ArgumentException($"--columns must be >= 0, got {a.Columns}.");
        using var loaded = ModelKinds.Load(a.ModelDir, new SessionSettings { IntraOpThreads = Math.Max(1, a.Threads), Device = a.Device });
        var gen = loaded.Images ?? throw new ArgumentException($"'{a.ModelDir}' is a {Optimum.Inference.ModelTaskNames.WireName(loaded.Task)} model; generate-images needs a diffusion UNet (UNet2DModel).");
        float[]? latents = null;
        int? count = a.Count;
        if (a.Latents is { } path)
        {
            var (values, shape) = ImageFiles.ReadLatents(path);
            int n;
            try { n = gen.CheckLatentsShape(shape); }
            catch (ArgumentException e) { throw new ArgumentException($"--latents '{path}': {e.Message}", e); }
            if (count is { } c && c != n) throw new ArgumentException($"--count {c} but --latents '{path}' holds {n} images.");
            (latents, count) = (values, n);
        }
        var labels = a.Labels.Length > 0 ? a.Labels : null;
        var options = new ImageGenerationOptions
        {
            Scheduler = kind, Steps = a.Steps, Eta = a.Eta, GuidanceScale = a.Guidance ?? (labels is not null && gen.IsClassConditional ? ImageGenerationOptions.DefaultGuidance : 1),
            Labels = labels, Seed = a.Seed, Count = count ?? DefaultCount, BatchSize = a.BatchSize, Latents = latents,
        };
        int images = options.Count!.Value, every = Math.Max(1, a.Steps / 10);
        int evalsPerStep = images * (options.GuidanceScale != 1 ? 2 : 1);
        log.WriteLine($"{a.ModelDir}: {images} image(s) of {gen.Channels}x{gen.SampleSize}x{gen.SampleSize}, {a.Scheduler} {a.Steps} steps, eta {a.Eta}, guidance {options.GuidanceScale}"
            + (labels is null ? "" : $", label(s) {string.Join(" ", labels)}") + $", seed {a.Seed}" + (latents is null ? "" : $", latents {a.Latents}"));
        var clock = Stopwatch.StartNew();
        var result = gen.Generate(options, k =>
        {
            if ((k + 1) % every != 0 && k + 1 != a.Steps) return;
            double s = clock.Elapsed.TotalSeconds, rate = (k + 1) * evalsPerStep / s;
            log.WriteLine($"step {k + 1,4}/{a.Steps}  {rate,7:F1} UNet evals/s  eta {s / (k + 1) * (a.Steps - k - 1),5:F0}s");
        }, cancel);
        int scale = a.Scale ?? Math.Max(1, (int)Math.Ceiling(64.0 / gen.SampleSize));
        var (tensor, grid) = ImageFiles.Save(result, a.OutDir, a.Columns, scale);
        log.WriteLine($"wrote {tensor}" + (grid is null ? $" (no PNG: {result.Channels} channels are neither grayscale nor RGB)" : $" and {grid}"));
        return result;
    }
}
