using Optimum.Hub;
using Optimum.Core;

namespace Optimum.Models;

/// <summary>Initial weights for a model folder without a checkpoint, by its config's model_type.</summary>
public static class ModelInit
{
    /// <summary>Weights from the folder's model.safetensors, or the model type's initialisation from <paramref name="seed"/>.</summary>
    public static float[][] Load(string modelDir, int seed, Action<string>? log = null)
    {
        var ps = ModelFolder.ReadParameters(modelDir);
        var path = Path.Combine(modelDir, ModelFolder.WeightsFile);
        if (File.Exists(path))
        {
            log?.Invoke($"weights: {path}");
            var w = HfWeights.Load(path, ps, out var unused);
            foreach (var u in unused) log?.Invoke($"warning: '{u}' in {path} is not a parameter of the model");
            return w;
        }
        var cfg = ModelFolder.ReadConfig(modelDir);
        log?.Invoke($"weights: {cfg.ModelType} initialisation from seed {seed} (no {ModelFolder.WeightsFile} in {modelDir})");
        return cfg.ModelType switch
        {
            "gpt2" => Gpt2Init.Initialize(ps, Gpt2Config.FromHf(cfg), seed),
            "mlp" => Mlp.Initialize(ps, seed),
            "t5" => T5Artifacts.Initialize(ps, T5Config.FromHf(cfg), seed),
            "time_series_transformer" or "informer" => TimeSeriesArtifacts.Initialize(ps, TimeSeriesConfig.FromHf(cfg), seed),
            var t => throw new InvalidDataException($"{cfg.Source}: no initialisation for model_type '{t}'."),
        };
    }
}
