using System.Text.Json.Nodes;

namespace Optimum.Core;

/// <summary>
/// GPT-2 hyper-parameters with Hugging Face's names and defaults (GPT2Config). Read from an HF
/// <c>config.json</c>; values the definition does not implement are refused with a clear message.
/// </summary>
public sealed record Gpt2Config : IHfConfig<Gpt2Config>
{
    public int VocabSize { get; init; } = 50257;            // vocab_size
    public int NPositions { get; init; } = 1024;            // n_positions: longest sequence
    public int NEmbd { get; init; } = 768;                  // n_embd: width C
    public int NLayer { get; init; } = 12;                  // n_layer
    public int NHead { get; init; } = 12;                   // n_head; head size C / n_head
    public int? NInner { get; init; }                       // n_inner: MLP width, null = 4 C
    public string ActivationFunction { get; init; } = "gelu_new";
    public double LayerNormEpsilon { get; init; } = 1e-5;
    public bool TieWordEmbeddings { get; init; } = true;    // lm_head shares transformer.wte.weight
    public bool ScaleAttnWeights { get; init; } = true;     // scores / sqrt(head size)
    public bool ScaleAttnByInverseLayerIdx { get; init; }   // scores / (layer + 1)
    public double EmbdPdrop { get; init; } = 0.1;
    public double AttnPdrop { get; init; } = 0.1;
    public double ResidPdrop { get; init; } = 0.1;
    public double InitializerRange { get; init; } = 0.02;
    public int BosTokenId { get; init; } = 50256;
    public int EosTokenId { get; init; } = 50256;

    public int Inner => NInner ?? 4 * NEmbd;
    public int HeadSize => NEmbd / NHead;

    /// <summary>Activation functions implemented (HF ACT2FN names).</summary>
    public static readonly IReadOnlyList<string> Activations = ["gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu", "swish", "quick_gelu"];

    /// <summary>Reads an HF GPT-2 config; the whole document is kept in <see cref="Source"/> for exports.</summary>
    public static Gpt2Config FromHf(HfConfig c)
    {
        if (c.ModelType is { } t && t != "gpt2")
            throw new InvalidDataException($"{c.Source}: model_type '{t}' is not gpt2.");
        if (c.Bool("add_cross_attention", false))
            throw new InvalidDataException($"{c.Source}: add_cross_attention=true (GPT-2 as a decoder with cross-attention) is not supported.");
        var cfg = new Gpt2Config
        {
            VocabSize = c.Int("vocab_size", 50257),
            NPositions = c.Int("n_positions", 1024),
            NEmbd = c.Int("n_embd", 768),
            NLayer = c.Int("n_layer", 12),
            NHead = c.Int("n_head", 12),
            NInner = c.OptionalInt("n_inner"),
            ActivationFunction = c.String("activation_function", "gelu_new"),
            LayerNormEpsilon = c.Double("layer_norm_epsilon", 1e-5),
            TieWordEmbeddings = c.Bool("tie_word_embeddings", true),
            ScaleAttnWeights = c.Bool("scale_attn_weights", true),
            ScaleAttnByInverseLayerIdx = c.Bool("scale_attn_by_inverse_layer_idx", false),
            EmbdPdrop = c.Double("embd_pdrop", 0.1),
            AttnPdrop = c.Double("attn_pdrop", 0.1),
            ResidPdrop = c.Double("resid_pdrop", 0.1),
            InitializerRange = c.Double("initializer_range", 0.02),
            BosTokenId = c.Int("bos_token_id", 50256),
            EosTokenId = c.Int("eos_token_id", 50256),
            Source = c.Json,
        };
        cfg.Validate(c.Source);
        return cfg;
    }

    /// <summary>The HF config document this came from (null when built in code).</summary>
    public JsonObject? Source { get; init; }

    /// <summary>Refuses values the definition cannot build, naming the field and the value.</summary>
    public void Validate(string source = "Gpt2Config")
    {
        void Check(bool ok, string field, object value, string expected)
        {
            if (!ok) throw new InvalidDataException($"{source}: {field}={value} is not supported; expected {expected}.");
        }
        Check(VocabSize > 0, "vocab_size", VocabSize, "a positive integer");
        Check(NPositions > 0, "n_positions", NPositions, "a positive integer");
        ConfigLimits.Layers(source, "n_layer", NLayer);
        Check(NHead > 0 && NEmbd > 0 && NEmbd % NHead == 0, "n_embd", NEmbd, $"a positive multiple of n_head ({NHead})");
        Check(NInner is null or > 0, "n_inner", NInner?.ToString() ?? "null", "a positive integer or null");
        // The largest tensors, before anything computes sizes in int (4 × n_embd, 3 × n_embd).
        ConfigLimits.Tensor(source, "transformer.wte.weight", "vocab_size × n_embd", VocabSize, NEmbd);
        ConfigLimits.Tensor(source, "transformer.wpe.weight", "n_positions × n_embd", NPositions, NEmbd);
        ConfigLimits.Tensor(source, "attn.c_attn.weight", "n_embd × 3·n_embd", NEmbd, 3L * NEmbd);
        ConfigLimits.Tensor(source, "mlp.c_fc.weight", "n_embd × n_inner (4·n_embd when null)", NEmbd, NInner ?? 4L * NEmbd);
        Check(Activations.Contains(ActivationFunction), "activation_function", ActivationFunction, string.Join(", ", Activations));
        Check(LayerNormEpsilon > 0, "layer_norm_epsilon", LayerNormEpsilon, "a positive number");
        foreach (var (f, p) in new[] { ("embd_pdrop", EmbdPdrop), ("attn_pdrop", AttnPdrop), ("resid_pdrop", ResidPdrop) })
            Check(p is >= 0 and < 1, f, p, "a probability in [0, 1)");
    }

    /// <summary>
    /// The HF config.json document: the source document when there is one (unknown keys kept),
    /// with the fields above written over it.
    /// </summary>
    public JsonObject ToHf()
    {
        var o = Source?.DeepClone().AsObject() ?? new JsonObject { ["architectures"] = new JsonArray("GPT2LMHeadModel") };
        o.Remove("optimum");
        o["model_type"] = "gpt2";
        o["vocab_size"] = VocabSize;
        o["n_positions"] = NPositions;
        o["n_embd"] = NEmbd;
        o["n_layer"] = NLayer;
        o["n_head"] = NHead;
        o["n_inner"] = NInner;
        o["activation_function"] = ActivationFunction;
        o["layer_norm_epsilon"] = LayerNormEpsilon;
        o["tie_word_embeddings"] = TieWordEmbeddings;
        o["scale_attn_weights"] = ScaleAttnWeights;
        o["scale_attn_by_inverse_layer_idx"] = ScaleAttnByInverseLayerIdx;
        o["embd_pdrop"] = EmbdPdrop;
        o["attn_pdrop"] = AttnPdrop;
        o["resid_pdrop"] = ResidPdrop;
        o["initializer_range"] = InitializerRange;
        o["bos_token_id"] = BosTokenId;
        o["eos_token_id"] = EosTokenId;
        return o;
    }
}
