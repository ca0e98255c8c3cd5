using System.Text.Json.Nodes;
using Optimum.Tests.Fuzz;
using static Optimum.Tests.Fuzz.ConfigRules;

namespace Optimum.Models.Tests;

/// <summary>
/// The config.json rules of each fuzzed HF folder, written from the HF/diffusers config classes and the fixtures' weights:
/// which keys size the weights, which are validated and how, which are read but free, and which no kind reads.
/// Additions are keys the fixture lacks, with whether adding them keeps the folder exportable.
/// </summary>
public static class FixtureConfigRules
{
    public static (KeyRule[] Rules, (string Key, JsonNode? Value, bool Ok, bool Shape)[] Additions) For(string kind) => kind switch
    {
        "gpt2" => (Gpt2, [("fuzz_unknown", new JsonObject(), true, false), ("n_head", 0, false, false), ("n_layer", int.MaxValue, false, false), ("n_embd", 1 << 30, false, false)]),
        "t5" => (T5, [("n_positions", 512, true, false), ("n_positions", 0, false, false), ("n_positions", -3, false, false), ("fuzz_unknown", 1, true, false),
            ("layer_norm_epsilon", 0, false, false), ("layer_norm_epsilon", -1e-6, false, false), ("num_heads", 0, false, false), ("d_kv", 1 << 30, false, false)]),
        "informer" => (TimeSeries(informer: true), [("time_features", "monthly", true, false), ("time_features", "weekly", false, false), ("fuzz_unknown", 1, true, false),
            ("encoder_attention_heads", 0, false, false), ("decoder_attention_heads", 0, false, false), ("layer_norm_epsilon", -1, true, false)]),
        "time_series_transformer" => (TimeSeries(informer: false), [("sampling_factor", 0, false, false), ("time_features", "monthly", true, false), ("attention_type", "bogus", true, false)]),
        "UNet2DModel" => (UNet, [("num_class_embeds", 10, false, true), ("num_class_embeds", null, true, false), ("num_class_embeds", 0, false, false), ("mid_block_scale_factor", 1, true, false),
            ("norm_num_groups", 0, false, false), ("attention_head_dim", 0, false, false), ("dropout", 0, true, false), ("freq_shift", 8, false, false), ("sample_size", 1 << 30, false, false)]),
        "mlp" => (Mlp, [("fuzz_unknown", "x", true, false)]),
        _ => throw new ArgumentException(kind),
    };

    private static readonly string[] Gpt2Activations = ["gelu_new", "gelu_pytorch_tanh", "gelu", "relu", "silu", "swish", "quick_gelu"];

    /// <summary>gpt2-tiny: vocab 512, 64 positions, width 64, 2 layers, 4 heads, tied head.</summary>
    private static KeyRule[] Gpt2 =>
    [
        Same("vocab_size", 512), Same("n_positions", 64), Same("n_embd", 64), Layers("n_layer", 2),
        IntWhere("n_head", 4, h => h > 0 && 64 % h == 0, absentOk: false),                 // default 12 does not divide 64
        IntWhere("n_inner", 256, i => i == 256, shape: true),                              // null is 4 × n_embd = 256
        Str("activation_function", Gpt2Activations, ["GELU", "gelu_fast", "tanh"]),
        NumWhere("layer_norm_epsilon", e => e > 0),
        Bool("tie_word_embeddings", t => t, shape: true),                                  // untied needs lm_head.weight, which the folder lacks
        Bool("scale_attn_weights", _ => true), Bool("scale_attn_by_inverse_layer_idx", _ => true), Bool("add_cross_attention", x => !x),
        Prob("attn_pdrop"), Prob("embd_pdrop"), Prob("resid_pdrop"), NumWhere("initializer_range", _ => true),
        IntWhere("bos_token_id", 50256, _ => true), IntWhere("eos_token_id", 50256, _ => true),
        Str("model_type", ["gpt2"], ["GPT2", "gpt-2", "t5"], absentOk: false, shape: true),                 // t5 reads its own sizes: the weights do not fit
        Ignored("architectures"), Ignored("dtype"), Ignored("pad_token_id"), Ignored("reorder_and_upcast_attn"), Ignored("summary_activation"),
        Ignored("summary_first_dropout"), Ignored("summary_proj_to_labels"), Ignored("summary_type"), Ignored("summary_use_proj"),
        Ignored("transformers_version"), Ignored("use_cache"),
    ];

    /// <summary>t5-tiny: vocab 600, d_model 32, d_kv 8, d_ff 64, 2+2 layers, 4 heads, gated-gelu, 16 buckets, tied head.</summary>
    private static KeyRule[] T5 =>
    [
        Same("vocab_size", 600), Same("d_model", 32), Same("d_kv", 8), Same("d_ff", 64), Layers("num_layers", 2),
        Layers("num_decoder_layers", 2, absentOk: true),                                   // null is num_layers
        Same("num_heads", 4), Same("relative_attention_num_buckets", 16),
        IntWhere("relative_attention_max_distance", 32, d => d > 4),                       // beyond the 4 exact buckets of each direction
        Str("feed_forward_proj", ["gated-gelu", "gated-relu", "gated-silu"], ["relu", "gelu", "gated-tanh", "Gated-GELU"], absentOk: false, shape: true),
        NumWhere("layer_norm_epsilon", e => e > 0), Prob("dropout_rate"),
        Bool("tie_word_embeddings", t => t, shape: true), Bool("scale_decoder_outputs", _ => true),
        IntWhere("decoder_start_token_id", 0, _ => true), IntWhere("pad_token_id", 0, _ => true), IntWhere("eos_token_id", 1, _ => true),
        NumWhere("initializer_factor", _ => true),
        Str("model_type", ["t5"], ["T5", "mt5", "gpt2"], absentOk: false, shape: true),
        Ignored("architectures"), Ignored("classifier_dropout"), Ignored("dense_act_fn"), Ignored("dtype"), Ignored("is_decoder"),
        Ignored("is_encoder_decoder"), Ignored("is_gated_act"), Ignored("transformers_version"), Ignored("use_cache"),
    ];

    /// <summary>
    /// informer-tiny / tst-tiny: prediction 6 + context 12 (18 positions in the weights), 4 lags, 2 time features, d_model 16,
    /// FFN 32, 2 heads; informer: 1 categorical of cardinality 3 (embedding 2), 2+1 layers, distilling; tst: 1 static real, 2+2 layers.
    /// </summary>
    private static KeyRule[] TimeSeries(bool informer)
    {
        var type = informer ? "informer" : "time_series_transformer";
        KeyRule[] common =
        [
            Same("prediction_length", 6), Same("context_length", 12), Same("d_model", 16),
            Layers("encoder_layers", 2, absentOk: true), Layers("decoder_layers", informer ? 1 : 2, absentOk: !informer),
            Same("encoder_ffn_dim", 32, absentOk: true), Same("decoder_ffn_dim", 32, absentOk: true),
            IntWhere("encoder_attention_heads", 2, h => h > 0 && 16 % h == 0), IntWhere("decoder_attention_heads", 2, h => h > 0 && 16 % h == 0),
            Same("feature_size", informer ? 10 : 9, absentOk: true), Same("input_size", 1, absentOk: true),
            List("lags_sequence", a => Ints(a, out var l) && l.Length == 4 && l.All(x => x >= 1), [.. IntLists(1, 2, 3, 7), new JsonArray(1, 2, 3, 9), new JsonArray(1, 2, 3, 2147483647)]),
            Same("num_time_features", 2), Same("num_dynamic_real_features", 0, absentOk: true),
            Same("num_static_categorical_features", informer ? 1 : 0, absentOk: !informer), Same("num_static_real_features", informer ? 0 : 1, absentOk: informer),
            Str("distribution_output", ["student_t", "normal", "negative_binomial"], ["StudentT", "poisson"]),          // normal and NB read 2 of the 3 projections
            Str("activation_function", ["gelu", "relu", "silu", "swish", "gelu_new", "tanh"], ["GELU", "sigmoid"]),
            Prob("dropout"), Prob("attention_dropout"), Prob("activation_dropout"), Prob("encoder_layerdrop"), Prob("decoder_layerdrop"),
            NumWhere("init_std", _ => true), IntWhere("num_parallel_samples", 4, _ => true),
            new("scaling", n => n is JsonValue v && v.GetValueKind() is System.Text.Json.JsonValueKind.String or System.Text.Json.JsonValueKind.True or System.Text.Json.JsonValueKind.False,
                true, true, [["mean", "std", "none", "bogus", true, false], [1, new JsonArray(), new JsonObject()]]),                  // HF: anything but mean/true/std is no scaling
            Str("loss", ["nll"], ["mse", "NLL"]),
            Str("model_type", [type], [informer ? "time_series_transformer" : "informer", "Informer"], absentOk: false, shape: true),
            Ignored("architectures"), Ignored("dtype"), Ignored("is_encoder_decoder"), Ignored("transformers_version"), Ignored("use_cache"),
        ];
        KeyRule[] own = informer
            ?
            [
                List("cardinality", IntsEqual(3), IntLists(3), shape: true),
                List("embedding_dimension", IntsEqual(2), IntLists(2), absentOk: true, shape: true),                           // null is min(50, (3 + 1) / 2) = 2
                Str("attention_type", ["prob", "full"], ["sparse", "Prob"]), IntWhere("sampling_factor", 100, f => f > 0), Bool("distil", _ => true),   // no distilling leaves the conv weights unused
            ]
            : [Ignored("cardinality"), Ignored("embedding_dimension")];                   // read only with categorical features
        return [.. common, .. own];
    }

    /// <summary>unet-tiny: 16×16, 1 channel, blocks [16, 32] (DownBlock2D, AttnDownBlock2D), 1 layer per block, 8 groups, head dim 8.</summary>
    private static KeyRule[] UNet =>
    [
        IntWhere("sample_size", 16, s => s > 0 && s % 2 == 0 && s <= 65536),               // not a weight size; bounded so that shapes stay small
        Same("in_channels", 1), Same("out_channels", 1), Same("layers_per_block", 1),
        NumWhere("norm_eps", e => e > 0), Bool("flip_sin_to_cos", _ => true),
        IntWhere("freq_shift", 0, f => f < 8),                                              // below half of block_out_channels[0]
        List("down_block_types", StringsEqual("DownBlock2D", "AttnDownBlock2D"), [new JsonArray("AttnDownBlock2D", "DownBlock2D"), new JsonArray("DownBlock2D"), new JsonArray("DownBlock2D", "CrossAttnDownBlock2D"), new JsonArray(1, 2)], shape: true),
        List("up_block_types", StringsEqual("AttnUpBlock2D", "UpBlock2D"), [new JsonArray("UpBlock2D", "AttnUpBlock2D"), new JsonArray("UpBlock2D"), new JsonArray("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")], shape: true),
        List("block_out_channels", IntsEqual(16, 32), IntLists(16, 32), shape: true),
        IntWhere("norm_num_groups", 8, g => g > 0 && 16 % g == 0, absentOk: false),        // default 32 does not divide 16
        IntWhere("attention_head_dim", 8, d => d > 0 && 16 % d == 0),                      // null: one head over the channels
        Str("_class_name", ["UNet2DModel"], ["UNet2DConditionModel", "unet"], absentOk: false),
        Str("act_fn", ["silu", "swish"], ["gelu", "SiLU"]), Str("time_embedding_type", ["positional"], ["fourier"]), Bool("center_input_sample", x => !x),
        IntWhere("downsample_padding", 1, p => p is 0 or 1), Bool("add_attention", x => x), Str("resnet_time_scale_shift", ["default"], ["scale_shift"]),
        NumWhere("dropout", p => p == 0),
    ];

    /// <summary>The generated MLP folder: 64 inputs, one hidden layer of 64, 10 classes.</summary>
    private static KeyRule[] Mlp =>
    [
        Same("input_size", 64, absentOk: true), List("hidden_sizes", IntsEqual(64), IntLists(64), absentOk: true, shape: true), Same("num_classes", 10, absentOk: true),
        Str("activation", ["relu", "tanh", "gelu"], ["RELU", "sigmoid"]), Prob("dropout"), Str("model_type", ["mlp"], ["MLP"], absentOk: false),
    ];
}
