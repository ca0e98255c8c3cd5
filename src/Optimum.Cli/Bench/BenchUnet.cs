using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Optimum.Core;
using Optimum.Core.Diffusion;
using Optimum.Data;
using Optimum.Hub;
using Optimum.Inference;
using Optimum.Inference.Diffusion;
using Optimum.Models;
using Optimum.Training;

namespace Optimum.Cli;

/// <summary>The bench UNet's batches: training images per step, DDIM steps per trajectory and images per sampling run.</summary>
public sealed record UnetBenchSize(int Batch = 32, int SampleSteps = 50, int SampleBatch = 16);

/// <summary>
/// <c>optimum-net bench unet</c>: the diffusion UNet of the PyTorch reference (../shared/tools/torch-ref/Unet.cs: 32×32,
/// 1 channel, block_out_channels [32, 64, 64], 2 layers per block, attention in levels 2 and 3 and the mid block,
/// 8 groups, head dim 8, 1,707,009 parameters). Training images/s through the <see cref="Trainer"/> (DDPM epsilon
/// objective on random images through <see cref="DiffusionData"/>, AdamW as the reference sets it, no clipping; a step is
/// one update, timed by the trainer's own loop) and sampling UNet evaluations/s (the library's <see cref="ImageGenerator"/>,
/// deterministic DDIM, a batch of images per UNet run; a step is one run, the measured ones one whole trajectory).
/// With --torch the reference runs with the same settings and both ratios are printed.
/// </summary>
public static class BenchUnet
{
    /// <summary>The reference's parameter count: a different count means a different model, and the ratios would mean nothing.</summary>
    public const long ReferenceParameters = 1_707_009;

    public static UNet2DConfig Config { get; } = new()
    {
        SampleSize = 32, InChannels = 1, OutChannels = 1, BlockOutChannels = [32, 64, 64], LayersPerBlock = 2, NormNumGroups = 8, AttentionHeadDim = 8,
        DownBlockTypes = ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"], UpBlockTypes = ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    };

    /// <summary>The reference's AdamW (Unet.cs): lr 1e-4, betas (0.95, 0.999), eps 1e-8, weight decay 1e-6 on every parameter.</summary>
    private static readonly OptimizerConfig AdamW = new() { Beta1 = 0.95, Beta2 = 0.999, Eps = 1e-8, WeightDecay = 1e-6, DecayAll = true };

    public static int Run(BenchRun run, UnetBenchSize size, string? torchRef, TextWriter output)
    {
        var report = new BenchReport(run.Json, output);
        var dir = Path.Combine(run.WorkDir, "unet-ref");
        ModelKinds.Write(dir, Config);
        var ps = ModelFolder.ReadParameters(dir);
        long parameters = ps.Sum(p => p.Count);
        if (parameters != ReferenceParameters)
            throw new InvalidOperationException($"The bench UNet has {parameters:N0} parameters, the PyTorch reference {ReferenceParameters:N0}: the two models differ.");
        var weights = ModelKinds.Initialize(ps, Config, 0);
        // The DDPM objective on random images uniform in [−1, 1] (as the reference's x0), through the library's data path.
        var rng = new Random(0);
        int per = Config.InChannels * Config.SampleSize * Config.SampleSize, count = 4 * size.Batch;
        var images = new ImageSet(Enumerable.Range(0, count * per).Select(_ => (float)(2 * rng.NextDouble() - 1)).ToArray(), null, count, Config.InChannels, Config.SampleSize, Config.SampleSize);
        var data = new DiffusionData(images, images.Take([0]), SchedulerConfig.Load(dir).Build(), null, 0, seed: 1);

        PeakMemory.TakeMegabytes();                                                     // the training figure starts here, not at graph building
        var options = new TrainerOptions
        {
            ModelDir = dir, OutputDir = Path.Combine(run.WorkDir, "unet-train"), Steps = run.Warmup + run.Steps, BatchSize = size.Batch,
            Optimizer = AdamW, Lr = 1e-4, Schedule = ScheduleKind.Constant, Warmup = 0, ClipNorm = 0,
            EvalEvery = 0, EvalAtStart = false, EvalSamples = 1, SaveEvery = 0, Export = false, Session = run.Session("unet-train-profile"),
            Overwrite = true,                                                           // every bench run starts over in its work folder
        };
        StepTimes train;
        double lastLoss;
        using (var trainer = new Trainer(options, data, weights))
        {
            var history = trainer.Run().History;
            train = StepTimes.FromHistory(run.Warmup, history.Select(m => m.StepSeconds).ToArray());
            lastLoss = history[^1].Loss;
            var optimizer = history.Skip(run.Warmup).Average(m => m.OptimizerSeconds);
            var r = new Dictionary<string, object>
            {
                ["engine"] = "optimum-net-ort", ["ort_version"] = OrtEnv.Instance().GetVersionString(), ["size"] = Config.SampleSize,
                ["in_channels"] = Config.InChannels, ["channels"] = string.Join(",", Config.BlockOutChannels), ["batch"] = size.Batch,
                ["threads"] = run.Threads, ["parameters"] = parameters,
            };
            train.AddTo(r);
            r["optimizer_ms"] = optimizer * 1000;
            r["optimizer_share"] = optimizer / train.Mean;
            r["images_per_s"] = size.Batch / train.Mean;
            r["last_loss"] = lastLoss;
            report.AddSpeed("unet-train", r);
            if (run.Profile) OrtProfile.Report(report, run, trainer.Session.EndProfiling(), run.Warmup + run.Steps, "step", "profile-train");
        }

        var sample = Sample(run, size, dir, weights, report);
        // Our measurements are printed even when the reference fails (its error follows them).
        try { if (torchRef is not null) RunTorch(torchRef, run, size, size.Batch / train.Mean, size.SampleBatch / sample.Mean, report); }
        finally { report.Print(); }
        return 0;
    }

    /// <summary>
    /// The library's <see cref="ImageGenerator"/> (deterministic DDIM, clip_sample, set_alpha_to_one, over the model folder's
    /// scheduler_config.json) generating <see cref="UnetBenchSize.SampleBatch"/> images in one UNet run per step over
    /// <see cref="UnetBenchSize.SampleSteps"/> "leading" timesteps; each step is timed from the generator's progress callback.
    /// The warm-up is a short trajectory of its own (as the reference warms up on two timesteps).
    /// </summary>
    private static StepTimes Sample(BenchRun run, UnetBenchSize size, string dir, float[][] weights, BenchReport report)
    {
        int b = size.SampleBatch;
        using var generator = new ImageGenerator(dir, run.Session("unet-sample-profile"), weights);
        var options = new ImageGenerationOptions { Steps = size.SampleSteps, Count = b, BatchSize = b, Seed = 0 };
        if (run.Warmup > 0) generator.Generate(options with { Steps = run.Warmup });
        var seconds = new double[size.SampleSteps];
        var clock = Stopwatch.StartNew();
        double last = 0;
        var images = generator.Generate(options, k => { seconds[k] = clock.Elapsed.TotalSeconds - last; last = clock.Elapsed.TotalSeconds; });
        var times = StepTimes.FromHistory(0, seconds);
        var r = new Dictionary<string, object>
        {
            ["engine"] = "optimum-net-ort", ["sample_steps"] = size.SampleSteps, ["sample_batch"] = b, ["threads"] = run.Threads,
        };
        times.AddTo(r, "unet_run");
        r["ms_per_image"] = times.Mean * size.SampleSteps * 1000 / b;
        r["unet_evals_per_s"] = b / times.Mean;
        r["sample_in_range"] = images.Pixels.All(v => v is >= -1f and <= 1f);
        report.AddSpeed("unet-sample", r);
        if (run.Profile) OrtProfile.Report(report, run, [generator.EndProfiling()], (run.Warmup > 0 ? run.Warmup : 0) + size.SampleSteps, "run", "profile-sample");
        return times;
    }

    /// <summary>
    /// The reference (run.sh --mode unet) with the same model, batches, threads and steps; it prints a JSON line for
    /// training and one for sampling. Its peak resident memory is the process's (training and sampling together),
    /// read from /proc while it runs (run.sh execs the program, so the pid is the program's once it starts).
    /// </summary>
    private static void RunTorch(string script, BenchRun run, UnetBenchSize size, double imagesPerSecond, double evalsPerSecond, BenchReport report)
    {
        if (!File.Exists(script)) throw new FileNotFoundException($"PyTorch reference '{script}' does not exist.", script);
        var psi = new ProcessStartInfo("bash", [script, "--mode", "unet", "--size", $"{Config.SampleSize}", "--in-channels", $"{Config.InChannels}",
            "--channels", string.Join(",", Config.BlockOutChannels), "--layers-per-block", $"{Config.LayersPerBlock}",
            "--attn", string.Join(",", Config.DownBlockTypes.Select(t => t == "AttnDownBlock2D" ? 1 : 0)), "--groups", $"{Config.NormNumGroups}",
            "--head-dim", $"{Config.AttentionHeadDim}", "--batch", $"{size.Batch}", "--threads", $"{run.Threads}", "--steps", $"{run.Steps}",
            "--warmup", $"{run.Warmup}", "--sample-steps", $"{size.SampleSteps}", "--sample-batch", $"{size.SampleBatch}"])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        (string[] Lines, string Stderr, int Exit, double PeakMb) Once()
        {
            using var p = Process.Start(psi)!;
            var stderr = p.StandardError.ReadToEndAsync();
            var stdout = p.StandardOutput.ReadToEndAsync();
            double peakMb = 0;
            var status = $"/proc/{p.Id}/status";
            while (!p.WaitForExit(100))
                try
                {
                    var line = File.ReadLines(status).FirstOrDefault(l => l.StartsWith("VmHWM:", StringComparison.Ordinal));
                    if (line is not null) peakMb = Math.Max(peakMb, long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024 / 1e6);
                }
                catch (IOException) { }                                                     // exited between the check and the read
            return (stdout.Result.Split('\n').Where(l => l.TrimStart().StartsWith('{')).ToArray(), stderr.Result, p.ExitCode, peakMb);
        }
        // The reference sometimes aborts when its loss turns non-finite (TorchSharp can leave GroupNorm parameters
        // uninitialised, see its Unet.cs): it is run again, up to three times, and the bench says so.
        var (lines, err, exit, peakMb) = Once();
        for (int attempt = 2; attempt <= 3 && lines.Length < 2; attempt++)
        {
            Console.Error.WriteLine($"note: the PyTorch reference exited {exit} without its results; running it again (attempt {attempt} of 3)");
            (lines, err, exit, peakMb) = Once();
        }
        string Line(string bench) => lines.FirstOrDefault(l => l.Contains($"\"bench\":\"{bench}\"", StringComparison.Ordinal))
            ?? throw new InvalidDataException($"The PyTorch reference '{script}' printed no {bench} result (exit {exit}): {err}");
        var trainRef = BenchReport.Parse(Line("unet-train"));
        var sampleRef = BenchReport.Parse(Line("unet-sample"));
        double torchImages = Convert.ToDouble(trainRef["images_per_s"]), torchEvals = Convert.ToDouble(sampleRef["unet_evals_per_s"]);
        report.Add("unet-torch", new Dictionary<string, object>
        {
            ["engine"] = "torchsharp-libtorch", ["parameters"] = trainRef["parameters"], ["train_step_ms"] = trainRef["step_ms"],
            ["train_images_per_s"] = torchImages, ["unet_evals_per_s"] = torchEvals, ["ms_per_image"] = sampleRef["ms_per_image"], ["peak_rss_mb"] = peakMb,
            ["train_optimum_over_torch"] = imagesPerSecond / torchImages, ["sample_optimum_over_torch"] = evalsPerSecond / torchEvals,
        });
        if (Convert.ToInt64(trainRef["parameters"]) != ReferenceParameters)
            throw new InvalidDataException($"The PyTorch reference built {trainRef["parameters"]} parameters, not {ReferenceParameters:N0}.");
    }
}
