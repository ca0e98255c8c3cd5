using System.Text.Json.Nodes;
using Optimum.Core;
using Optimum.Data;

namespace Optimum.Models;

/// <summary>The digits MLP (model_type mlp), the first demo: a classifier trained on the 8x8 digits (gzip CSV rows of 64 pixels and a label).</summary>
public sealed class MlpKind : ModelKind<MlpConfig>
{
    public override IReadOnlyList<string> ModelTypes { get; } = ["mlp"];
    public override string TrainingData => "digits files (.csv.gz: 64 pixels 0..16, then the label)";
    public override string ThroughputUnit => "examples/s";

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

    /// <summary>The digits of the given files, a seeded <see cref="DataOptions.ValidationFraction"/> of them held out.</summary>
    public override IBatchSource OpenTrainingData(DataOptions o, MlpConfig c, Action<string> say)
    {
        if (c.InputSize != Digits.Features || c.NumClasses != 10)
            throw new InvalidDataException($"{o.ModelDir}: digits have {Digits.Features} pixels and 10 classes; the model takes {c.InputSize} inputs and {c.NumClasses} classes.");
        var rows = o.Files.Select(Digits.Load).ToArray();
        var all = new Digits([.. rows.SelectMany(d => d.Pixels)], [.. rows.SelectMany(d => d.Labels)]);
        var data = new DigitsData(all, o.ValidationFraction);
        say($"data: {data.TrainSamples:N0} training and {data.ValidationSamples:N0} validation digits from {o.Files.Count} file(s)");
        return data;
    }
}
