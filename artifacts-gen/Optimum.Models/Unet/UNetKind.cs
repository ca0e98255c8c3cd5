using Optimum.Core.Diffusion;
using Optimum.Inference.Diffusion;

namespace Optimum.Models;

/// <summary>
/// diffusers' UNet2DModel (config.json <c>_class_name: UNet2DModel</c>): an epsilon-predicting denoiser. Graphs,
/// model folder with its scheduler_config.json, initialisation, diffusers import/export, its training data (images
/// through the DDPM objective with the folder's noise schedule) and the image generator (<see cref="ImageGenerator"/>)
/// as its inference loader.
/// </summary>
public sealed class UNetKind : ModelKind<UNet2DConfig>
{
    public override IReadOnlyList<string> ModelTypes { get; } = [UNet2DConfig.ClassName];
    public override string TrainingData => "image .safetensors files (tensor 'images' U8 or F32 in [0, 1], (N, H, W) or (N, C, H, W); 'labels' (N) for class-conditional models)";
    public override string ThroughputUnit => "images/s";

    /// <summary>
    /// The images of the given files, centred on sample_size × sample_size when smaller, a seeded
    /// <see cref="DataOptions.ValidationFraction"/> held out, noised by the folder's DDPM schedule (<see cref="DiffusionData"/>).
    /// </summary>
    public override IBatchSource OpenTrainingData(DataOptions o, UNet2DConfig c, Action<string> say)
    {
        var files = ImageSet.Files(o.Files);
        if (files.Count == 0) throw new InvalidDataException($"{o.ModelDir}: no image files to train on.");
        var images = ImageSet.Concat(files.Select(ImageSet.Load).ToArray(), files);
        if (images.Channels != c.InChannels)
            throw new InvalidDataException($"{files[0]}: images have {images.Channels} channel(s); the model's in_channels is {c.InChannels}.");
        if (images.Height != c.SampleSize || images.Width != c.SampleSize)
        {
            if (images.Height > c.SampleSize || images.Width > c.SampleSize || (c.SampleSize - images.Height) % 2 != 0 || (c.SampleSize - images.Width) % 2 != 0)
                throw new InvalidDataException($"{files[0]}: images are {images.Height}×{images.Width}; the model's sample_size is {c.SampleSize} (smaller images are centred when the margins are even; resize them first).");
            say($"data: centring {images.Height}×{images.Width} images on {c.SampleSize}×{c.SampleSize}");
            images = images.PadTo(c.SampleSize);
        }
        var (train, val) = images.Split(o.ValidationFraction, o.Seed);
        var data = new DiffusionData(train, val, SchedulerConfig.Load(o.ModelDir).Build(), c.NumClassEmbeds, o.LabelDropout, o.Seed);
        say($"data: {data.TrainSamples:N0} training and {data.ValidationSamples:N0} validation images ({c.InChannels}×{c.SampleSize}×{c.SampleSize}) from {files.Count} file(s)"
            + (data.NullLabel is { } nl ? $"; labels dropped to {nl} with probability {o.LabelDropout}" : ""));
        return data;
    }

    /// <summary>
    /// Writes config.json, training.onnx, eval.onnx (loss, noise_pred), inference.onnx (sample, timestep[, class_labels] →
    /// noise_pred) and, unless the folder has one, a scheduler_config.json with DDPMScheduler's defaults.
    /// </summary>
    public override void Write(string dir, UNet2DConfig c)
    {
        var denoiser = new GraphBuilder("unet_denoiser");
        UNet2D.DefineDenoiser(denoiser, c);
        Artifacts.Write(dir, UNet2DConfig.ClassName, c.ToHf(), Define(c), [(ModelFolder.InferenceFile, "inference", denoiser)]);
        if (!File.Exists(Path.Combine(dir, SchedulerConfig.FileName))) new SchedulerConfig().Save(dir);
    }

    public override Func<GraphBuilder, bool, ModelOutputs> Define(UNet2DConfig c) => (g, training) => UNet2D.Define(g, training, c);

    /// <summary>
    /// The scheduler_config.json of a diffusers folder: beside its config.json, or in the pipeline's scheduler/ folder
    /// next to it (unet/ and scheduler/); read (refusing what the samplers do not implement) and saved into the model folder.
    /// Without one the model folder gets DDPMScheduler's defaults.
    /// </summary>
    public override void ImportFiles(string hfDir, string modelDir)
    {
        string beside = Path.Combine(hfDir, SchedulerConfig.FileName);
        string pipeline = Path.Combine(hfDir, "..", SchedulerConfig.PipelineFolder, SchedulerConfig.FileName);
        var source = File.Exists(beside) ? beside : File.Exists(pipeline) ? pipeline : null;
        var scheduler = source is null ? new SchedulerConfig() : SchedulerConfig.FromJson(HfConfig.Load(source));
        Directory.CreateDirectory(modelDir);
        scheduler.Save(modelDir);
    }

    /// <summary>The model folder's scheduler_config.json (or DDPMScheduler's defaults) beside the diffusers folder's config.json.</summary>
    public override void ExportFiles(string modelDir, string hfDir) => SchedulerConfig.Load(modelDir).Save(hfDir);

    /// <summary>The image generator over the folder's inference.onnx, model.safetensors and scheduler_config.json; the caller disposes it.</summary>
    public override LoadedModel Load(string dir, SessionSettings? settings = null) => new(dir, new ImageGenerator(dir, settings));

    /// <summary>
    /// torch's default initialisation, which diffusers keeps for UNet2DModel: Conv2d and Linear weights and biases
    /// ~ U(−1/√fan_in, 1/√fan_in) (kaiming_uniform with a = √5), GroupNorm weight 1 and bias 0, the class embedding ~ N(0, 1).
    /// </summary>
    public override float[][] Initialize(IReadOnlyList<ParameterInfo> parameters, UNet2DConfig c, int seed)
    {
        var rng = new Random(seed);
        var fanIn = parameters.Where(p => p.Name.EndsWith(".weight", StringComparison.Ordinal) && p.Shape.Length >= 2)
            .ToDictionary(p => p.Name[..^".weight".Length], p => p.Shape.Skip(1).Aggregate(1L, (a, b) => a * b));
        return parameters.Select(p =>
        {
            string module = p.Name[..p.Name.LastIndexOf('.')];
            if (p.Name == "class_embedding.weight") return HfWeights.Normal(rng, p.Count, 1.0);
            if (!fanIn.TryGetValue(module, out var fan))                                      // GroupNorm: weight 1, bias 0
                return p.Name.EndsWith(".weight", StringComparison.Ordinal) ? Enumerable.Repeat(1f, (int)p.Count).ToArray() : new float[p.Count];
            double bound = 1 / Math.Sqrt(fan);
            return Enumerable.Range(0, (int)p.Count).Select(_ => (float)((2 * rng.NextDouble() - 1) * bound)).ToArray();
        }).ToArray();
    }
}
