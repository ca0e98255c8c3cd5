namespace Optimum.Models;

/// <summary>
/// diffusers' UNet2DModel (config.json <c>_class_name: UNet2DModel</c>): an epsilon-predicting denoiser. Graphs,
/// model folder, initialisation and diffusers import/export; training data, the sampler loader and serving are
/// not built yet (the base class refuses them with a message).
/// </summary>
public sealed class UNetKind : ModelKind<UNet2DConfig>
{
    public override IReadOnlyList<string> ModelTypes { get; } = [UNet2DConfig.ClassName];

    /// <summary>Writes config.json, training.onnx, eval.onnx (loss, noise_pred) and inference.onnx (sample, timestep[, class_labels] → noise_pred).</summary>
    public override void Write(string dir, UNet2DConfig c)
    {
        var denoiser = new GraphBuilder("unet_denoiser");
        UNet2D.DefineDenoiser(denoiser, c);
        Artifacts.Write(dir, UNet2DConfig.ClassName, c.ToHf(), (g, training) => UNet2D.Define(g, training, c), [(ModelFolder.InferenceFile, "inference", denoiser)]);
    }

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
