using System.Text.Json.Nodes;

namespace Optimum.Core;

/// <summary>T5 hyper-parameters with Hugging Face's names and defaults (T5Config).</summary>
public sealed record T5Config : IHfConfig<T5Config>
{
    public int VocabSize { get; init; } = 32128;
    public int DModel { get; init; } = 512;
    public int DKv { get; init; } = 64;
    public int DFf { get; init; } = 2048;
    public int NumLayers { get; init; } = 6;
    public int NumDecoderLayers { get; init; } = 6;
    public int NumHeads { get; init; } = 8;
    public int RelativeAttentionNumBuckets { get; init; } = 32;
    public int RelativeAttentionMaxDistance { get; init; } = 128;
    /// <summary>"relu" or "gated-gelu" (also "gated-relu", "gelu").</summary>
    public string FeedForwardProj { get; init; } = "relu";
    public double LayerNormEpsilon { get; init; } = 1e-6;
    public double DropoutRate { get; init; } = 0.1;
    public bool TieWordEmbeddings { get; init; } = true;
    /// <summary>Multiply the decoder output by d_model^-0.5 before the head (transformers 4.x did it whenever the head was tied).</summary>
    public bool ScaleDecoderOutputs { get; init; } = true;
    public int DecoderStartTokenId { get; init; }
    public int PadTokenId { get; init; }
    public int EosTokenId { get; init; } = 1;
    public double InitializerFactor { get; init; } = 1.0;
    /// <summary>Longest source and target the graphs are used with (T5 has no position embeddings; this bounds generation).</summary>
    public int MaxLength { get; init; } = 512;
    public JsonObject? Source { get; init; }

    public int Inner => NumHeads * DKv;
    public bool Gated => FeedForwardProj.StartsWith("gated-", StringComparison.Ordinal);
    public string Activation => Gated ? FeedForwardProj["gated-".Length..] : FeedForwardProj;

    public static T5Config FromHf(HfConfig c)
    {
        if (c.ModelType is { } t && t != "t5") throw new InvalidDataException($"{c.Source}: model_type '{t}' is not t5.");
        bool tie = c.Bool("tie_word_embeddings", true);
        var cfg = new T5Config
        {
            VocabSize = c.Int("vocab_size", 32128), DModel = c.Int("d_model", 512), DKv = c.Int("d_kv", 64), DFf = c.Int("d_ff", 2048),
            NumLayers = c.Int("num_layers", 6), NumDecoderLayers = c.OptionalInt("num_decoder_layers") ?? c.Int("num_layers", 6), NumHeads = c.Int("num_heads", 8),
            RelativeAttentionNumBuckets = c.Int("relative_attention_num_buckets", 32), RelativeAttentionMaxDistance = c.Int("relative_attention_max_distance", 128),
            FeedForwardProj = c.String("feed_forward_proj", "relu"), LayerNormEpsilon = c.Double("layer_norm_epsilon", 1e-6), DropoutRate = c.Double("dropout_rate", 0.1),
            TieWordEmbeddings = tie, ScaleDecoderOutputs = c.Bool("scale_decoder_outputs", tie),
            DecoderStartTokenId = c.Int("decoder_start_token_id", 0), PadTokenId = c.Int("pad_token_id", 0), EosTokenId = c.Int("eos_token_id", 1),
            InitializerFactor = c.Double("initializer_factor", 1.0), MaxLength = c.Int("n_positions", 512), Source = c.Json,
        };
        cfg.Validate(c.Source);
        return cfg;
    }

    public void Validate(string source = "T5Config")
    {
        void Check(bool ok, string field, object value, string expected)
        {
            if (!ok) throw new InvalidDataException($"{source}: {field}={value} is not supported; expected {expected}.");
        }
        foreach (var (field, value) in new[] { ("vocab_size", VocabSize), ("d_model", DModel), ("d_kv", DKv), ("d_ff", DFf), ("num_heads", NumHeads), ("n_positions", MaxLength) })
            Check(value > 0, field, value, "a positive integer");
        ConfigLimits.Layers(source, "num_layers", NumLayers);
        ConfigLimits.Layers(source, "num_decoder_layers", NumDecoderLayers);
        Check(RelativeAttentionNumBuckets >= 4, "relative_attention_num_buckets", RelativeAttentionNumBuckets, "at least 4");
        Check(RelativeAttentionMaxDistance > RelativeAttentionNumBuckets / 4, "relative_attention_max_distance", RelativeAttentionMaxDistance,
            $"more than the {RelativeAttentionNumBuckets / 4} exact buckets of each direction (relative_attention_num_buckets / 4)");
        Check(FeedForwardProj is "relu" or "gated-gelu" or "gated-relu" or "gelu" or "gated-silu", "feed_forward_proj", FeedForwardProj, "relu, gated-gelu, gated-relu, gelu or gated-silu");
        Check(LayerNormEpsilon > 0, "layer_norm_epsilon", LayerNormEpsilon, "a positive number");
        Check(DropoutRate is >= 0 and < 1, "dropout_rate", DropoutRate, "a probability in [0, 1)");
        // The largest tensors, before anything computes num_heads × d_kv in int.
        ConfigLimits.Tensor(source, "shared.weight", "vocab_size × d_model", VocabSize, DModel);
        ConfigLimits.Tensor(source, "SelfAttention.q.weight", "num_heads × d_kv × d_model", (long)NumHeads * DKv, DModel);
        ConfigLimits.Tensor(source, "DenseReluDense.wi.weight", "d_ff × d_model", DFf, DModel);
        ConfigLimits.Tensor(source, "relative_attention_bias.weight", "relative_attention_num_buckets × num_heads", RelativeAttentionNumBuckets, NumHeads);
    }

    public JsonObject ToHf()
    {
        var o = Source?.DeepClone().AsObject() ?? new JsonObject { ["architectures"] = new JsonArray("T5ForConditionalGeneration") };
        o.Remove("optimum");
        o["model_type"] = "t5";
        o["vocab_size"] = VocabSize; o["d_model"] = DModel; o["d_kv"] = DKv; o["d_ff"] = DFf;
        o["num_layers"] = NumLayers; o["num_decoder_layers"] = NumDecoderLayers; o["num_heads"] = NumHeads;
        o["relative_attention_num_buckets"] = RelativeAttentionNumBuckets; o["relative_attention_max_distance"] = RelativeAttentionMaxDistance;
        o["feed_forward_proj"] = FeedForwardProj; o["layer_norm_epsilon"] = LayerNormEpsilon; o["dropout_rate"] = DropoutRate;
        o["tie_word_embeddings"] = TieWordEmbeddings; o["scale_decoder_outputs"] = ScaleDecoderOutputs;
        o["decoder_start_token_id"] = DecoderStartTokenId; o["pad_token_id"] = PadTokenId; o["eos_token_id"] = EosTokenId;
        o["initializer_factor"] = InitializerFactor; o["n_positions"] = MaxLength;
        return o;
    }
}
