using System.Text.Json.Nodes;

namespace Optimum.Core;

/// <summary>
/// Hyper-parameters of Hugging Face's TimeSeriesTransformer and Informer (model_type
/// <c>time_series_transformer</c> / <c>informer</c>) with HF's names and defaults. Univariate targets
/// (input_size 1) only.
/// </summary>
public sealed record TimeSeriesConfig : IHfConfig<TimeSeriesConfig>
{
    /// <summary>"time_series_transformer" or "informer".</summary>
    public string ModelType { get; init; } = "time_series_transformer";
    public int PredictionLength { get; init; } = 12;
    public int ContextLength { get; init; } = 12;
    /// <summary>"student_t", "normal" or "negative_binomial".</summary>
    public string DistributionOutput { get; init; } = "student_t";
    public int InputSize { get; init; } = 1;
    public int[] LagsSequence { get; init; } = [1, 2, 3, 4, 5, 6, 7];
    /// <summary>"mean", "std" or "none".</summary>
    public string Scaling { get; init; } = "mean";
    public int NumDynamicRealFeatures { get; init; }
    public int NumStaticCategoricalFeatures { get; init; }
    public int NumStaticRealFeatures { get; init; }
    public int NumTimeFeatures { get; init; }
    public int[] Cardinality { get; init; } = [];
    public int[] EmbeddingDimension { get; init; } = [];
    public int DModel { get; init; } = 64;
    public int EncoderLayers { get; init; } = 2;
    public int DecoderLayers { get; init; } = 2;
    public int EncoderAttentionHeads { get; init; } = 2;
    public int DecoderAttentionHeads { get; init; } = 2;
    public int EncoderFfnDim { get; init; } = 32;
    public int DecoderFfnDim { get; init; } = 32;
    /// <summary>"gelu", "relu", "silu"/"swish", "gelu_new" or "tanh".</summary>
    public string ActivationFunction { get; init; } = "gelu";
    public double Dropout { get; init; } = 0.1;
    public double AttentionDropout { get; init; } = 0.1;
    public double ActivationDropout { get; init; } = 0.1;
    public double EncoderLayerdrop { get; init; } = 0.1;
    public double DecoderLayerdrop { get; init; } = 0.1;
    public double InitStd { get; init; } = 0.02;
    public int NumParallelSamples { get; init; } = 100;
    /// <summary>Informer: "prob" (ProbSparse self-attention) or "full".</summary>
    public string AttentionType { get; init; } = "prob";
    /// <summary>Informer: the c in u = c·ln L of ProbSparse attention.</summary>
    public int SamplingFactor { get; init; } = 5;
    /// <summary>Informer: distilling (Conv1d, BatchNorm, ELU, MaxPool) between encoder layers.</summary>
    public bool Distil { get; init; } = true;
    /// <summary>
    /// Optimum.Net's own key <c>time_features</c>: how forecasting derives the time features from timestamps
    /// when a caller sends none. "monthly" = (month of year, age) as GluonTS computes them; null = the caller
    /// must send them.
    /// </summary>
    public string? TimeFeatures { get; init; }
    public JsonObject? Source { get; init; }

    public bool IsInformer => ModelType == "informer";
    public bool ProbAttention => IsInformer && AttentionType == "prob";
    public int MaxLag => LagsSequence.Max();
    /// <summary>Past values the model reads: context_length + max(lags).</summary>
    public int PastLength => ContextLength + MaxLag;
    /// <summary>Time features per step (num_time_features + num_dynamic_real_features).</summary>
    public int TimeFeatureCount => NumTimeFeatures + NumDynamicRealFeatures;
    /// <summary>Static features per series: embeddings, static reals, log1p|loc| and log scale.</summary>
    public int StaticFeatureCount => EmbeddingDimension.Sum() + NumStaticRealFeatures + 2 * InputSize;
    /// <summary>HF's feature_size: lags plus every other feature.</summary>
    public int FeatureSize => InputSize * LagsSequence.Length + StaticFeatureCount + TimeFeatureCount;
    /// <summary>Distribution parameters per step, in HF's order (df, loc, scale / loc, scale / total_count, logits).</summary>
    public int ParameterCount => DistributionOutput == "student_t" ? 3 : 2;

    /// <summary>Encoder output length: context_length, halved (MaxPool k3 s2 p1) after every layer but the last when distilling.</summary>
    public int EncoderOutputLength
    {
        get
        {
            int l = ContextLength;
            if (IsInformer && Distil) for (int i = 0; i < EncoderLayers - 1; i++) l = (l - 1) / 2 + 1;
            return l;
        }
    }

    /// <summary>
    /// The small monthly model of the unemployment sample (and of bench forecast): 12-month horizon, 13 lags up to 25,
    /// month-of-year and age features, the series index as the one categorical (embedding 4), d_model 32, 2+2
    /// layers, FFN 64, dropout 0.1, no LayerDrop; for Informer ProbSparse attention (factor 3) and distilling.
    /// </summary>
    public static TimeSeriesConfig Monthly(string modelType, int seriesCount, int contextLength = 12) => new()
    {
        ModelType = modelType, PredictionLength = 12, ContextLength = contextLength, LagsSequence = [1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 23, 24, 25],
        DistributionOutput = "student_t", Scaling = "mean", NumTimeFeatures = 2, TimeFeatures = "monthly",
        NumStaticCategoricalFeatures = 1, Cardinality = [seriesCount], EmbeddingDimension = [4],
        DModel = 32, EncoderLayers = 2, DecoderLayers = 2, EncoderAttentionHeads = 2, DecoderAttentionHeads = 2, EncoderFfnDim = 64, DecoderFfnDim = 64,
        Dropout = 0.1, AttentionDropout = 0.1, ActivationDropout = 0.1, EncoderLayerdrop = 0, DecoderLayerdrop = 0,
        AttentionType = "prob", SamplingFactor = 3, Distil = true,
    };

    public static TimeSeriesConfig FromHf(HfConfig c)
    {
        var type = c.ModelType ?? throw new InvalidDataException($"{c.Source}: model_type is missing (time_series_transformer or informer).");
        if (type is not ("time_series_transformer" or "informer"))
            throw new InvalidDataException($"{c.Source}: model_type '{type}' is not time_series_transformer or informer.");
        bool informer = type == "informer";
        int pred = c.OptionalInt("prediction_length") ?? throw new InvalidDataException($"{c.Source}: prediction_length is required.");
        // HF: "mean" or true, "std", anything else (null included) no scaling; absent is the default "mean".
        var scaling = !c.Json.ContainsKey("scaling") ? "mean" : c.Json["scaling"] switch
        {
            null => "none",
            JsonValue v when v.TryGetValue<bool>(out var b) => b ? "mean" : "none",
            JsonValue v when v.TryGetValue<string>(out var s) => s is "mean" or "std" ? s : "none",
            var other => throw new InvalidDataException($"{c.Source}: 'scaling' is {other.ToJsonString()}, expected \"mean\", \"std\", true, false or null."),
        };
        int nCat = c.Int("num_static_categorical_features", 0);
        var cfg = new TimeSeriesConfig
        {
            ModelType = type,
            PredictionLength = pred,
            ContextLength = c.OptionalInt("context_length") ?? pred,
            DistributionOutput = c.String("distribution_output", "student_t"),
            InputSize = c.Int("input_size", 1),
            LagsSequence = Ints(c, "lags_sequence") ?? [1, 2, 3, 4, 5, 6, 7],
            Scaling = scaling,
            NumDynamicRealFeatures = c.Int("num_dynamic_real_features", 0),
            NumStaticCategoricalFeatures = nCat,
            NumStaticRealFeatures = c.Int("num_static_real_features", 0),
            NumTimeFeatures = c.Int("num_time_features", 0),
            Cardinality = nCat > 0 ? Ints(c, "cardinality") ?? [] : [],
            EmbeddingDimension = nCat > 0 ? Ints(c, "embedding_dimension") ?? (Ints(c, "cardinality") ?? []).Select(k => Math.Min(50, (k + 1) / 2)).ToArray() : [],
            DModel = c.Int("d_model", 64),
            EncoderLayers = c.Int("encoder_layers", 2),
            DecoderLayers = c.Int("decoder_layers", 2),
            EncoderAttentionHeads = c.Int("encoder_attention_heads", 2),
            DecoderAttentionHeads = c.Int("decoder_attention_heads", 2),
            EncoderFfnDim = c.Int("encoder_ffn_dim", 32),
            DecoderFfnDim = c.Int("decoder_ffn_dim", 32),
            ActivationFunction = c.String("activation_function", "gelu"),
            Dropout = c.Double("dropout", informer ? 0.05 : 0.1),
            AttentionDropout = c.Double("attention_dropout", 0.1),
            ActivationDropout = c.Double("activation_dropout", 0.1),
            EncoderLayerdrop = c.Double("encoder_layerdrop", 0.1),
            DecoderLayerdrop = c.Double("decoder_layerdrop", 0.1),
            InitStd = c.Double("init_std", 0.02),
            NumParallelSamples = c.Int("num_parallel_samples", 100),
            AttentionType = informer ? c.String("attention_type", "prob") : "full",
            SamplingFactor = c.Int("sampling_factor", 5),
            Distil = informer && c.Bool("distil", true),
            TimeFeatures = c.Json["time_features"] is null ? null : c.String("time_features", ""),
            Source = c.Json,
        };
        if (c.String("loss", "nll") != "nll") throw new InvalidDataException($"{c.Source}: loss '{c.String("loss", "nll")}' is not supported; expected nll.");
        cfg.Validate(c.Source);
        if (c.OptionalInt("feature_size") is { } fs && fs != cfg.FeatureSize)
            throw new InvalidDataException($"{c.Source}: feature_size {fs} does not match the {cfg.FeatureSize} features the other fields imply: {FeatureFields} = "
                + $"{cfg.InputSize} × {cfg.LagsSequence.Length} + {cfg.EmbeddingDimension.Sum()} + {cfg.NumStaticRealFeatures} + {2 * cfg.InputSize} + {cfg.NumTimeFeatures} + {cfg.NumDynamicRealFeatures}.");
        return cfg;
    }

    private static int[]? Ints(HfConfig c, string key) => c.Json[key] switch
    {
        null => null,
        JsonArray a => a.Select(n => n is JsonValue v && v.TryGetValue<int>(out var i) ? i : throw new InvalidDataException($"{c.Source}: '{key}' must be a list of integers, got {a.ToJsonString()}.")).ToArray(),
        var other => throw new InvalidDataException($"{c.Source}: '{key}' must be a list of integers, got {other.ToJsonString()}."),
    };

    public void Validate(string source = "TimeSeriesConfig")
    {
        void Check(bool ok, string field, object value, string expected)
        {
            if (!ok) throw new InvalidDataException($"{source}: {field}={value} is not supported; expected {expected}.");
        }
        Check(ModelType is "time_series_transformer" or "informer", "model_type", ModelType, "time_series_transformer or informer");
        Check(PredictionLength > 0, "prediction_length", PredictionLength, "a positive length");
        Check(ContextLength > 0, "context_length", ContextLength, "a positive length");
        Check(InputSize == 1, "input_size", InputSize, "1 (univariate targets; multivariate is not implemented)");
        Check(LagsSequence.Length > 0 && LagsSequence.All(l => l >= 1), "lags_sequence", $"[{string.Join(", ", LagsSequence)}]", "lags >= 1");
        Check(DistributionOutput is "student_t" or "normal" or "negative_binomial", "distribution_output", DistributionOutput, "student_t, normal or negative_binomial");
        Check(Scaling is "mean" or "std" or "none", "scaling", Scaling, "mean, std or none");
        Check(Cardinality.Length == NumStaticCategoricalFeatures && EmbeddingDimension.Length == NumStaticCategoricalFeatures
            && Cardinality.All(k => k > 0) && EmbeddingDimension.All(d => d > 0), "cardinality/embedding_dimension",
            $"[{string.Join(", ", Cardinality)}]/[{string.Join(", ", EmbeddingDimension)}]", $"num_static_categorical_features ({NumStaticCategoricalFeatures}) positive entries each");
        foreach (var (field, count) in new[] { ("num_time_features", NumTimeFeatures), ("num_dynamic_real_features", NumDynamicRealFeatures), ("num_static_real_features", NumStaticRealFeatures) })
            Check(count >= 0, field, count, "a count >= 0");
        Check(DModel > 0, "d_model", DModel, "a positive width");
        foreach (var (field, heads) in new[] { ("encoder_attention_heads", EncoderAttentionHeads), ("decoder_attention_heads", DecoderAttentionHeads) })
            Check(heads > 0 && DModel % heads == 0, field, heads, $"a positive divisor of d_model ({DModel})");
        ConfigLimits.Layers(source, "encoder_layers", EncoderLayers);
        ConfigLimits.Layers(source, "decoder_layers", DecoderLayers);
        Check(EncoderFfnDim > 0, "encoder_ffn_dim", EncoderFfnDim, "a positive width");
        Check(DecoderFfnDim > 0, "decoder_ffn_dim", DecoderFfnDim, "a positive width");
        Check(ActivationFunction is "gelu" or "relu" or "silu" or "swish" or "gelu_new" or "tanh", "activation_function", ActivationFunction, "gelu, relu, silu, gelu_new or tanh");
        foreach (var (name, p) in new[] { ("dropout", Dropout), ("attention_dropout", AttentionDropout), ("activation_dropout", ActivationDropout), ("encoder_layerdrop", EncoderLayerdrop), ("decoder_layerdrop", DecoderLayerdrop) })
            Check(p is >= 0 and < 1, name, p, "a probability in [0, 1)");
        Check(AttentionType is "prob" or "full", "attention_type", AttentionType, "prob or full");
        Check(SamplingFactor > 0, "sampling_factor", SamplingFactor, "positive");
        Check(TimeFeatures is null || (TimeFeatures == "monthly" && NumTimeFeatures == 2 && NumDynamicRealFeatures == 0), "time_features", TimeFeatures ?? "null",
            "null, or \"monthly\" with 2 time features (month of year, age) and no dynamic reals");
        // Sizes, in long before the properties above compute them in int.
        long features = (long)InputSize * LagsSequence.Length + EmbeddingDimension.Sum(d => (long)d) + NumStaticRealFeatures + 2L * InputSize + NumTimeFeatures + NumDynamicRealFeatures;
        ConfigLimits.Tensor(source, "value_embedding.value_projection.weight", FeatureFields + " (the feature size) and d_model", DModel, features);
        ConfigLimits.Tensor(source, "embed_positions.weight", "context_length + prediction_length and d_model", (long)ContextLength + PredictionLength, DModel);
        ConfigLimits.Tensor(source, "a past_values row", "context_length + max(lags_sequence)", (long)ContextLength + LagsSequence.Max());
        ConfigLimits.Tensor(source, "fc1.weight", "encoder_ffn_dim/decoder_ffn_dim and d_model", Math.Max(EncoderFfnDim, DecoderFfnDim), DModel);
        for (int i = 0; i < NumStaticCategoricalFeatures; i++)
            ConfigLimits.Tensor(source, $"embedder.embedders.{i}.weight", "cardinality and embedding_dimension", Cardinality[i], EmbeddingDimension[i]);
    }

    /// <summary>The fields HF's feature_size is made of, for messages.</summary>
    private const string FeatureFields = "input_size × len(lags_sequence), sum(embedding_dimension) over num_static_categorical_features, num_static_real_features, 2·input_size, num_time_features, num_dynamic_real_features";

    public JsonObject ToHf()
    {
        var o = Source?.DeepClone().AsObject() ?? new JsonObject
        {
            ["architectures"] = new JsonArray(IsInformer ? "InformerForPrediction" : "TimeSeriesTransformerForPrediction"),
            ["is_encoder_decoder"] = true,
            ["loss"] = "nll",
        };
        o.Remove("optimum");
        static JsonArray A(IEnumerable<int> xs) => new(xs.Select(x => (JsonNode)x).ToArray());
        o["model_type"] = ModelType;
        o["prediction_length"] = PredictionLength; o["context_length"] = ContextLength;
        o["distribution_output"] = DistributionOutput; o["input_size"] = InputSize; o["lags_sequence"] = A(LagsSequence);
        o["scaling"] = Scaling == "none" ? null : Scaling;
        o["num_dynamic_real_features"] = NumDynamicRealFeatures; o["num_static_categorical_features"] = NumStaticCategoricalFeatures;
        o["num_static_real_features"] = NumStaticRealFeatures; o["num_time_features"] = NumTimeFeatures;
        o["cardinality"] = A(NumStaticCategoricalFeatures > 0 ? Cardinality : [0]);
        o["embedding_dimension"] = A(NumStaticCategoricalFeatures > 0 ? EmbeddingDimension : [0]);
        o["d_model"] = DModel; o["encoder_layers"] = EncoderLayers; o["decoder_layers"] = DecoderLayers;
        o["encoder_attention_heads"] = EncoderAttentionHeads; o["decoder_attention_heads"] = DecoderAttentionHeads;
        o["encoder_ffn_dim"] = EncoderFfnDim; o["decoder_ffn_dim"] = DecoderFfnDim; o["activation_function"] = ActivationFunction;
        o["dropout"] = Dropout; o["attention_dropout"] = AttentionDropout; o["activation_dropout"] = ActivationDropout;
        o["encoder_layerdrop"] = EncoderLayerdrop; o["decoder_layerdrop"] = DecoderLayerdrop; o["init_std"] = InitStd;
        o["num_parallel_samples"] = NumParallelSamples; o["feature_size"] = FeatureSize;
        if (TimeFeatures is not null) o["time_features"] = TimeFeatures;
        if (IsInformer)
        {
            o["attention_type"] = AttentionType; o["sampling_factor"] = SamplingFactor; o["distil"] = Distil;
        }
        return o;
    }
}
