namespace Optimum.Models;

/// <summary>The digits MLP (model_type mlp), the first demo: a classifier trained on the 8x8 digits (gzip CSV rows of 64 pixels and a label).</summary>
public sealed class MlpKind : ModelKind<MlpConfig>
{
    public override IReadOnlyList<string> ModelTypes { get; } = ["mlp"];
    public override string TrainingData => "digits files (.csv.gz: 64 pixels 0..16, then the label) or labelled image .safetensors files (input_size = channels × height × width)";
    public override string ThroughputUnit => "examples/s";

    public override void Write(string dir, MlpConfig c) => Artifacts.Write(dir, "mlp", c.ToHf(), Define(c));

    public override Func<GraphBuilder, bool, ModelOutputs> Define(MlpConfig c) => (g, training) => Mlp.Define(g, training, c);

    public override float[][] Initialize(IReadOnlyList<ParameterInfo> parameters, MlpConfig config, int seed) => Mlp.Initialize(parameters, seed);

    /// <summary>
    /// The 8x8 digits of .csv.gz files, or the labelled images of .safetensors files (pixels in [0, 1]), a seeded
    /// <see cref="DataOptions.ValidationFraction"/> of them held out.
    /// </summary>
    public override IBatchSource OpenTrainingData(DataOptions o, MlpConfig c, Action<string> say)
    {
        if (o.Files.Count == 0) throw new InvalidDataException($"{o.ModelDir}: no files to train on.");
        if (o.Files.All(f => f.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || Directory.Exists(f)))
        {
            var files = ImageSet.Files(o.Files);
            var images = ImageSet.Concat(files.Select(ImageSet.Load).ToArray(), files);
            if (images.PixelsPerImage != c.InputSize)
                throw new InvalidDataException($"{files[0]}: images have {images.Channels}×{images.Height}×{images.Width} = {images.PixelsPerImage} pixels; the model's input_size is {c.InputSize}.");
            if (images.Labels is null) throw new InvalidDataException($"{files[0]}: a classifier needs labels (a '{ImageSet.LabelsTensor}' tensor).");
            if (images.Labels.Max() >= c.NumClasses) throw new InvalidDataException($"{files[0]}: label {images.Labels.Max()} is out of the model's {c.NumClasses} classes.");
            var set = new ImageClassificationData(images, o.ValidationFraction, o.Seed);
            say($"data: {set.TrainSamples:N0} training and {set.ValidationSamples:N0} validation images from {files.Count} file(s)");
            return set;
        }
        if (c.InputSize != Digits.Features || c.NumClasses != 10)
            throw new InvalidDataException($"{o.ModelDir}: digits have {Digits.Features} pixels and 10 classes; the model takes {c.InputSize} inputs and {c.NumClasses} classes.");
        var rows = o.Files.Select(Digits.Load).ToArray();
        var all = new Digits([.. rows.SelectMany(d => d.Pixels)], [.. rows.SelectMany(d => d.Labels)]);
        var data = new DigitsData(all, o.ValidationFraction);
        say($"data: {data.TrainSamples:N0} training and {data.ValidationSamples:N0} validation digits from {o.Files.Count} file(s)");
        return data;
    }
}
