using Optimum.Core.Diffusion;
using Optimum.Inference.Diffusion;

namespace Optimum.Models;

/// <summary>
/// diffusers' UNet2DModel (config.json <c>_class_name: UNet2DModel</c>): an epsilon-predicting denoiser. Graphs,
/// model folder with its scheduler_config.json, initialisation, diffusers import/export, and the image generator
/// (<see cref="ImageGenerator"/>) as its inference loader.
/// </summary>
public sealed class UNetKind : ModelKind<UNet2DConfig>
{
    public override IReadOnlyList<string> ModelTypes { get; } = [UNet2DConfig.ClassName];

    /// <summary>
    /// Writes config.json, training.onnx, eval.onnx (loss, noise_pred), inference.onnx (sample, timestep[, class_labels] →
    /// noise_pred) and, unless the folder has one, a scheduler_config.json with DDPMScheduler's defaults.
    /// </summary>
    public override void Write(string dir, UNet2DConfig c)
    {
        var denoiser = new GraphBuilder("unet_denoiser");
        UNet2D.DefineDenoiser(denoiser, c);
        Artifacts.Write(dir, UNet2DConfig.ClassName, c.ToHf(), (g, training) => UNet2D.Define(g, training, c), [(ModelFolder.InferenceFile, "inference", denoiser)]);
        if (!File.Exists(Path.Combine(dir, SchedulerConfig.FileName))) new SchedulerConfig().Save(dir);
    }

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
