using Microsoft.ML.OnnxRuntime;
using Optimum.Core;
using Optimum.Core.Diffusion;
using Optimum.Hub;

namespace Optimum.Inference.Diffusion;

/// <summary>What to generate and how: the sampler, its steps, guidance, labels, the seed and the batch size.</summary>
public sealed record ImageGenerationOptions
{
    /// <summary>The guidance scale the CLI and the service use when labels are given and none is asked for.</summary>
    public const double DefaultGuidance = 3;

    public SamplerKind Scheduler { get; init; } = SamplerKind.Ddim;
    /// <summary>Sampling steps ("leading" spacing of the model's schedule; at most num_train_timesteps).</summary>
    public int Steps { get; init; } = 50;
    /// <summary>DDIM's eta: 0 is deterministic, 1 adds DDPM-like noise at every step. DDPM takes 0 only.</summary>
    public double Eta { get; init; }
    /// <summary>
    /// Classifier-free guidance scale w: ε = ε_u + w·(ε_c − ε_u) with ε_u the "no label" prediction. 1 runs the
    /// conditional model alone (no unconditional rows); any other value needs a class-conditional model and labels.
    /// </summary>
    public double GuidanceScale { get; init; } = 1;
    /// <summary>
    /// Class labels of a class-conditional model: one for every image or one per image, each in [0, num_class_embeds − 1).
    /// Null generates unconditionally (with the reserved "no label" class). Unconditional models take none.
    /// </summary>
    public IReadOnlyList<int>? Labels { get; init; }
    /// <summary>Seed of the starting latents and of the sampler's noise (see <see cref="ImageGenerator"/>).</summary>
    public long Seed { get; init; }
    /// <summary>Images to generate (null: as many as <see cref="Latents"/> holds, else 1).</summary>
    public int? Count { get; init; }
    /// <summary>Images per UNet run (with guidance each image takes two rows of the run).</summary>
    public int BatchSize { get; init; } = 16;
    /// <summary>Starting noise x_T, (count, C, H, W) row-major; null draws it from the seed.</summary>
    public float[]? Latents { get; init; }
}

/// <summary>Generated images, (Count, Channels, Height, Width) row-major, in the model's [−1, 1] space.</summary>
public sealed record GeneratedImages(float[] Pixels, int Count, int Channels, int Height, int Width)
{
    /// <summary>The label each image was generated for (null for unconditional generation).</summary>
    public IReadOnlyList<int>? Labels { get; init; }
    public long[] Shape => [Count, Channels, Height, Width];
}

/// <summary>
/// Images from a diffusers UNet2DModel folder (config.json, inference.onnx, model.safetensors, and scheduler_config.json
/// or DDPMScheduler's defaults): DDIM or DDPM sampling from Gaussian noise, with classifier-free guidance for
/// class-conditional models, whose last class embedding (num_class_embeds − 1) is reserved as "no label" (training
/// drops labels to it). All images advance one step at a time, in UNet runs of at most
/// <see cref="ImageGenerationOptions.BatchSize"/> images.
/// <para>
/// Randomness is per image, so an image does not depend on the batch size or on the other images: image i's latents
/// come from <c>new System.Random(Seeds.Derive(seed, i, 0))</c> and its sampler noise from
/// <c>new System.Random(Seeds.Derive(seed, i, 1))</c>, each drawn as standard normals by the Box–Muller transform of
/// <see cref="HfWeights.Normal(Random, long, double)"/> (pairs u1, u2 → √(−2 ln(1 − u1))·(cos 2πu2, sin 2πu2)), the latents in (C, H, W)
/// order and one (C, H, W) draw per noisy step.
/// </para>
/// Owns its session; dispose it. <see cref="Generate"/> may run on several threads at once (all state is per call).
/// </summary>
public sealed class ImageGenerator : IDisposable
{
    private readonly InferenceSession _session;

    /// <summary>Opens <paramref name="modelDir"/>; <paramref name="weights"/> (in parameter order) replace model.safetensors, e.g. EMA weights.</summary>
    public ImageGenerator(string modelDir, SessionSettings? settings = null, IReadOnlyList<float[]>? weights = null)
    {
        ModelDir = modelDir;
        var hf = ModelFolder.ReadConfig(modelDir);
        Config = UNet2DConfig.FromHf(hf);                                                 // refuses other model types, naming the file
        Scheduler = SchedulerConfig.Load(modelDir);
        var ps = ModelFolder.ReadParameters(modelDir);
        weights ??= HfWeights.Load(Path.Combine(modelDir, ModelFolder.WeightsFile), ps, out _);
        using var options = (settings ?? new SessionSettings()).CreateOptions();
        _session = EmbeddedWeights.Open(Path.Combine(modelDir, ModelFolder.InferenceFile), ps, weights, options);
    }

    public string ModelDir { get; }
    public UNet2DConfig Config { get; }
    /// <summary>The model's scheduler_config.json (or DDPMScheduler's defaults).</summary>
    public SchedulerConfig Scheduler { get; }
    public int Channels => Config.InChannels;
    public int SampleSize => Config.SampleSize;
    public bool IsClassConditional => Config.NumClassEmbeds is not null;
    /// <summary>Labels a caller may ask for: num_class_embeds − 1 (the last is "no label"); 0 for unconditional models.</summary>
    public int ClassCount => Config.NumClassEmbeds is { } n ? n - 1 : 0;
    /// <summary>The reserved "no label" class (num_class_embeds − 1), or null for unconditional models.</summary>
    public int? NullLabel => Config.NumClassEmbeds - 1;

    /// <summary>
    /// Checks the shape of starting latents against the model: (N, C, H, W) with the model's channels and sample size.
    /// Returns N; a wrong shape is an <see cref="ArgumentException"/> naming both shapes.
    /// </summary>
    public int CheckLatentsShape(IReadOnlyList<long> shape)
    {
        int s = SampleSize, c = Config.InChannels;
        if (shape.Count != 4 || shape[0] < 1 || shape[1] != c || shape[2] != s || shape[3] != s)
            throw new ArgumentException($"Latents of shape [{string.Join(", ", shape)}] do not fit the model: it takes (N, {c}, {s}, {s}) (N images, in_channels {c}, sample_size {s}).");
        return checked((int)shape[0]);
    }

    /// <summary>
    /// Samples images; <paramref name="progress"/> gets each step index (0 … steps − 1) once all images have taken it.
    /// Bad options are <see cref="ArgumentException"/>s naming the option and the value.
    /// </summary>
    public GeneratedImages Generate(ImageGenerationOptions o, Action<int>? progress = null, CancellationToken cancel = default)
    {
        int per = Config.InChannels * SampleSize * SampleSize;
        int count = Validate(o, per);
        var labels = Labels(o, count);
        bool guided = o.GuidanceScale != 1;
        var scheduler = DiffusionScheduler.Create(o.Scheduler, Scheduler, o.Steps, o.Eta);

        var x = o.Latents is { } given ? (float[])given.Clone() : new float[count * per];
        var noise = new Random[count];
        for (int i = 0; i < count; i++)
        {
            if (o.Latents is null) HfWeights.Normal(new Random(Seeds.Derive(o.Seed, i, 0)), per, 1.0).CopyTo(x, i * per);
            noise[i] = new Random(Seeds.Derive(o.Seed, i, 1));
        }

        for (int k = 0; k < scheduler.Timesteps.Count; k++)
        {
            long t = scheduler.Timesteps[k];
            for (int first = 0; first < count; first += o.BatchSize)
            {
                cancel.ThrowIfCancellationRequested();
                int n = Math.Min(o.BatchSize, count - first);
                var eps = PredictNoise(x.AsSpan(first * per, n * per), n, t, labels is null ? default : labels.AsSpan(first, n), guided ? (float)o.GuidanceScale : null);
                for (int i = 0; i < n; i++)
                {
                    var xi = x.AsSpan((first + i) * per, per);
                    var z = scheduler.AddsNoise(k) ? HfWeights.Normal(noise[first + i], per, 1.0) : [];
                    scheduler.Step(k, xi, eps.AsSpan(i * per, per), z, xi);
                }
            }
            progress?.Invoke(k);
        }
        return new GeneratedImages(x, count, Config.InChannels, SampleSize, SampleSize) { Labels = labels };
    }

    private int Validate(ImageGenerationOptions o, int per)
    {
        if (o.BatchSize < 1) throw new ArgumentOutOfRangeException(nameof(o.BatchSize), o.BatchSize, "The batch size must be at least 1 image per UNet run.");
        if (o.Steps < 1 || o.Steps > Scheduler.NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(o.Steps), o.Steps, $"Sampling takes 1..{Scheduler.NumTrainTimesteps} steps (the schedule's num_train_timesteps).");
        if (!double.IsFinite(o.GuidanceScale)) throw new ArgumentOutOfRangeException(nameof(o.GuidanceScale), o.GuidanceScale, "The guidance scale must be finite.");
        if (o.GuidanceScale != 1 && !IsClassConditional)
            throw new ArgumentException($"Guidance scale {o.GuidanceScale} needs a class-conditional model; '{ModelDir}' has no num_class_embeds (use 1).", nameof(o.GuidanceScale));
        if (o.GuidanceScale != 1 && o.Labels is null)
            throw new ArgumentException($"Guidance scale {o.GuidanceScale} needs class labels to guide towards (use 1 for unconditional samples).", nameof(o.GuidanceScale));
        int count;
        if (o.Latents is { } latents)
        {
            if (latents.Length == 0 || latents.Length % per != 0)
                throw new ArgumentException($"{latents.Length} latent values are not whole images of (C, H, W) = ({Config.InChannels}, {SampleSize}, {SampleSize}) = {per} values.", nameof(o.Latents));
            count = latents.Length / per;
            if (o.Count is { } c && c != count)
                throw new ArgumentException($"The latents hold {count} images but {c} were asked for.", nameof(o.Count));
            if (latents.Any(v => !float.IsFinite(v))) throw new ArgumentException("The latents hold non-finite values.", nameof(o.Latents));
        }
        else count = o.Count ?? 1;
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(o.Count), count, "Generate at least 1 image.");
        // Every image's values live in one array (twice with guidance's unconditional rows).
        if ((long)count * per * 2 > Array.MaxLength)
            throw new ArgumentOutOfRangeException(nameof(o.Count), count, $"{count} images of {per} values do not fit in memory at once; generate at most {Array.MaxLength / (2L * per)} per call.");
        return count;
    }

    private int[]? Labels(ImageGenerationOptions o, int count)
    {
        if (o.Labels is not { } given) return null;
        if (!IsClassConditional) throw new ArgumentException($"'{ModelDir}' is unconditional (no num_class_embeds); it takes no class labels.", nameof(o.Labels));
        if (given.Count != 1 && given.Count != count)
            throw new ArgumentException($"{given.Count} labels for {count} images; give one label for all or one per image.", nameof(o.Labels));
        foreach (var l in given)
            if (l < 0 || l >= ClassCount)
                throw new ArgumentOutOfRangeException(nameof(o.Labels), l, $"Labels are in [0, {ClassCount}): num_class_embeds is {Config.NumClassEmbeds} and {NullLabel} is reserved as \"no label\".");
        return given.Count == count ? [.. given] : Enumerable.Repeat(given[0], count).ToArray();
    }

    /// <summary>
    /// The predicted noise of <paramref name="n"/> images at timestep <paramref name="t"/>; with a guidance scale the
    /// conditional and unconditional rows run in one batch and combine as ε_u + w·(ε_c − ε_u).
    /// </summary>
    private float[] PredictNoise(ReadOnlySpan<float> x, int n, long t, ReadOnlySpan<int> labels, float? guidance)
    {
        int rows = guidance is null ? n : 2 * n, per = x.Length / n;
        var sample = new float[rows * per];
        x.CopyTo(sample);
        if (guidance is not null) x.CopyTo(sample.AsSpan(x.Length));
        var inputs = new Dictionary<string, OrtValue>
        {
            ["sample"] = OrtValue.CreateTensorValueFromMemory(sample, [rows, Config.InChannels, SampleSize, SampleSize]),
            ["timestep"] = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(t, rows).ToArray(), [rows]),
        };
        if (IsClassConditional)
        {
            var classes = new long[rows];
            for (int i = 0; i < rows; i++) classes[i] = i < n && !labels.IsEmpty ? labels[i] : NullLabel!.Value;
            inputs["class_labels"] = OrtValue.CreateTensorValueFromMemory(classes, [rows]);
        }
        try
        {
            using var run = new RunOptions();
            using var outs = _session.Run(run, inputs.Keys.ToArray(), inputs.Values.ToArray(), ["noise_pred"]);
            var eps = outs[0].GetTensorDataAsSpan<float>();
            if (guidance is not { } w) return eps.ToArray();
            var guided = new float[n * per];
            for (int i = 0; i < guided.Length; i++)
            {
                float c = eps[i], u = eps[x.Length + i];
                guided[i] = u + w * (c - u);
            }
            return guided;
        }
        finally
        {
            foreach (var v in inputs.Values) v.Dispose();
        }
    }

    /// <summary>Ends ONNX Runtime's profiling of the UNet session (settings with a profile prefix) and returns the file written.</summary>
    public string EndProfiling() => _session.EndProfiling();

    public void Dispose() => _session.Dispose();
}
