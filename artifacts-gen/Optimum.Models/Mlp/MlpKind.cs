namespace Optimum.Models;

/// <summary>The digits MLP (model_type mlp), the first demo: a classifier trained on the 8x8 digits (gzip CSV rows of 64 pixels and a label).</summary>
public sealed class MlpKind : ModelKind<MlpConfig>
{
    public override IReadOnlyList<string> ModelTypes { get; } = ["mlp"];
    public override string TrainingData => "digits files (.csv.gz: 64 pixels 0..16, then the label)";
    public override string ThroughputUnit => "examples/s";

    public override void Write(string dir, MlpConfig c) => Artifacts.Write(dir, "mlp", c.ToHf(), (g, training) => Mlp.Define(g, training, c));

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
