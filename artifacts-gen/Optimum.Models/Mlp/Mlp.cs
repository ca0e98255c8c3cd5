namespace Optimum.Models;

/// <summary>A multi-layer perceptron classifier; the defaults fit the bundled 8x8 digits.</summary>
public sealed record MlpConfig : IHfConfig<MlpConfig>
{
    /// <summary>Features per example (64 = 8x8 pixels).</summary>
    public int InputSize { get; init; } = 64;
    /// <summary>Widths of the hidden layers.</summary>
    public IReadOnlyList<int> HiddenSizes { get; init; } = [64];
    /// <summary>Number of classes (10 digits).</summary>
    public int NumClasses { get; init; } = 10;
    /// <summary>relu, tanh or gelu (exact, through Erf).</summary>
    public string Activation { get; init; } = "relu";
    /// <summary>Dropout after each hidden layer, in training only.</summary>
    public double Dropout { get; init; } = 0.1;

    /// <summary>Reads the MLP's config.json keys (input_size, hidden_sizes, num_classes, activation, dropout).</summary>
    public static MlpConfig FromHf(HfConfig c)
    {
        int[] hidden = c.Json["hidden_sizes"] switch
        {
            null => [64],
            JsonArray a => a.Select(n => n is JsonValue v && v.GetValueKind() == System.Text.Json.JsonValueKind.Number && v.TryGetValue<int>(out var h) ? h
                : throw new InvalidDataException($"{c.Source}: 'hidden_sizes' must be a list of integers, got {a.ToJsonString()}.")).ToArray(),
            var other => throw new InvalidDataException($"{c.Source}: 'hidden_sizes' must be a list of integers, got {other.ToJsonString()}."),
        };
        var cfg = new MlpConfig
        {
            InputSize = c.Int("input_size", 64), HiddenSizes = hidden, NumClasses = c.Int("num_classes", 10),
            Activation = c.String("activation", "relu"), Dropout = c.Double("dropout", 0.1),
        };
        try { cfg.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"{c.Source}: {e.Message}", e); }
        return cfg;
    }

    public JsonObject ToHf() => new()
    {
        ["input_size"] = InputSize,
        ["hidden_sizes"] = new JsonArray(HiddenSizes.Select(h => (JsonNode)h).ToArray()),
        ["num_classes"] = NumClasses,
        ["activation"] = Activation,
        ["dropout"] = Dropout,
        ["model_type"] = "mlp",
    };

    /// <summary>Refuses configurations the definition cannot build, naming the config.json key.</summary>
    public void Validate()
    {
        if (InputSize < 1) throw new ArgumentException($"input_size must be positive, got {InputSize}.");
        if (NumClasses < 2) throw new ArgumentException($"num_classes must be at least 2, got {NumClasses}.");
        if (HiddenSizes.Any(h => h < 1)) throw new ArgumentException($"hidden_sizes must be positive, got [{string.Join(", ", HiddenSizes)}].");
        if (HiddenSizes.Count >= ConfigLimits.MaxLayers) throw new ArgumentException($"hidden_sizes has {HiddenSizes.Count} layers; at most {ConfigLimits.MaxLayers - 1} are supported.");
        if (Activation is not ("relu" or "tanh" or "gelu")) throw new ArgumentException($"activation '{Activation}' is not one of relu, tanh, gelu.");
        if (Dropout is < 0 or >= 1) throw new ArgumentException($"dropout must be in [0, 1), got {Dropout}.");
        long[] widths = [InputSize, .. HiddenSizes, NumClasses];
        for (int i = 0; i + 1 < widths.Length; i++)
            if (widths[i] * widths[i + 1] > ConfigLimits.MaxTensorElements)
                throw new ArgumentException($"input_size/hidden_sizes/num_classes make a {widths[i]} × {widths[i + 1]} layer; at most {ConfigLimits.MaxTensorElements} weights per layer are supported.");
    }
}

/// <summary>The MLP in the graph-builder DSL: <c>layers.{i}</c> then <c>head</c>, weights laid out (in, out).</summary>
public static class Mlp
{
    public static ModelOutputs Define(GraphBuilder g, bool training, MlpConfig c)
    {
        c.Validate();
        var x = g.Input("pixels", DType.Float, Shape.Of("batch", c.InputSize));
        var labels = g.Input("labels", DType.Int64, Shape.Of("batch"));
        var h = x;
        long width = c.InputSize;
        for (int i = 0; i < c.HiddenSizes.Count; i++)
        {
            using var _ = g.Scope($"layers.{i}");
            h = Activation(g, Linear(g, h, $"layers.{i}", width, c.HiddenSizes[i]), c.Activation);    // (B, H)
            h = g.Dropout(h, c.Dropout, training, seed: 1 + i);
            width = c.HiddenSizes[i];
        }
        var logits = Linear(g, h, "head", width, c.NumClasses);                                         // (B, classes)
        var loss = g.SoftmaxCrossEntropyLoss(logits, labels, ignoreIndex: -100);
        return new ModelOutputs(loss, [new("logits", logits)]);
    }

    private static Value Linear(GraphBuilder g, Value x, string p, long fanIn, long fanOut) =>
        g.MatMul(x, g.Parameter($"{p}.weight", Shape.Of(fanIn, fanOut))) + g.Parameter($"{p}.bias", Shape.Of(fanOut));

    private static Value Activation(GraphBuilder g, Value x, string name) => name switch
    {
        "relu" => g.Relu(x),
        "tanh" => g.Tanh(x),
        _ => x * 0.5 * (1.0 + g.Erf(x * (1 / Math.Sqrt(2)))),
    };

    /// <summary>
    /// torch.nn.Linear's default initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and
    /// biases, drawn deterministically from <paramref name="seed"/> in parameter order.
    /// </summary>
    public static float[][] Initialize(IReadOnlyList<ParameterInfo> parameters, int seed)
    {
        var rng = new Random(seed);
        return parameters.Select(p =>
        {
            var fanIn = p.Name.EndsWith(".weight", StringComparison.Ordinal) ? p.Shape[0] : parameters.First(q => q.Name == p.Name[..^4] + "weight").Shape[0];
            var bound = 1 / Math.Sqrt(fanIn);
            return Enumerable.Range(0, (int)p.Count).Select(_ => (float)((2 * rng.NextDouble() - 1) * bound)).ToArray();
        }).ToArray();
    }
}
