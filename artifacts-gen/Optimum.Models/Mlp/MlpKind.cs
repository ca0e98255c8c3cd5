using System.Text.Json.Nodes;
using Optimum.Core;

namespace Optimum.Models;

/// <summary>The digits MLP (model_type mlp), the first demo: graphs and initialisation; trained by <c>train-mlp</c>.</summary>
public sealed class MlpKind : ModelKind<MlpConfig>
{
    public override IReadOnlyList<string> ModelTypes { get; } = ["mlp"];

    public override MlpConfig ReadConfig(HfConfig c)
    {
        var hidden = c.Json["hidden_sizes"] is JsonArray a
            ? a.Select(n => n is JsonValue v && v.TryGetValue<int>(out var h) ? h : throw new InvalidDataException($"{c.Source}: 'hidden_sizes' must be a list of integers.")).ToArray()
            : [64];
        var cfg = new MlpConfig
        {
            InputSize = c.Int("input_size", 64), HiddenSizes = hidden, NumClasses = c.Int("num_classes", 10),
            Activation = c.String("activation", "relu"), Dropout = c.Double("dropout", 0.1),
        };
        try { cfg.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"{c.Source}: {e.Message}", e); }
        return cfg;
    }

    public override JsonObject ToHf(MlpConfig c) => new()
    {
        ["input_size"] = c.InputSize,
        ["hidden_sizes"] = new JsonArray(c.HiddenSizes.Select(h => (JsonNode)h).ToArray()),
        ["num_classes"] = c.NumClasses,
        ["activation"] = c.Activation,
        ["dropout"] = c.Dropout,
        ["model_type"] = "mlp",
    };

    public override void Write(string dir, MlpConfig c) => Artifacts.Write(dir, "mlp", ToHf(c), (g, training) => Mlp.Define(g, training, c));

    public override float[][] Initialize(IReadOnlyList<ParameterInfo> parameters, MlpConfig config, int seed) => Mlp.Initialize(parameters, seed);
}
