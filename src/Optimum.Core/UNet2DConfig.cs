using System.Text.Json.Nodes;

namespace Optimum.Core;

/// <summary>
/// diffusers' UNet2DModel hyper-parameters, read from a diffusers <c>config.json</c> (<c>_class_name: UNet2DModel</c>)
/// with diffusers' names and defaults. Values the definition does not build are refused naming the field.
/// </summary>
public sealed record UNet2DConfig : IHfConfig<UNet2DConfig>
{
    public const string ClassName = "UNet2DModel";

    public int SampleSize { get; init; } = 32;
    public int InChannels { get; init; } = 3;
    public int OutChannels { get; init; } = 3;
    public int[] BlockOutChannels { get; init; } = [224, 448, 672, 896];
    public int LayersPerBlock { get; init; } = 2;
    /// <summary>"DownBlock2D" or "AttnDownBlock2D" per level.</summary>
    public string[] DownBlockTypes { get; init; } = ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"];
    /// <summary>"UpBlock2D" or "AttnUpBlock2D" per level, deepest first.</summary>
    public string[] UpBlockTypes { get; init; } = ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"];
    public int NormNumGroups { get; init; } = 32;
    public double NormEps { get; init; } = 1e-5;
    /// <summary>Channels per attention head (null = one head over all channels, as diffusers does).</summary>
    public int? AttentionHeadDim { get; init; } = 8;
    public string ActFn { get; init; } = "silu";
    public bool FlipSinToCos { get; init; } = true;
    public int FreqShift { get; init; }
    public int DownsamplePadding { get; init; } = 1;
    /// <summary>Class-conditional models: a class embedding added to the time embedding (null = unconditional).</summary>
    public int? NumClassEmbeds { get; init; }
    public JsonObject? Source { get; init; }

    /// <summary>The time embedding's width: 4 × the first block's channels.</summary>
    public int TimeEmbedDim => 4 * BlockOutChannels[0];

    public static UNet2DConfig FromHf(HfConfig c)
    {
        if (c.String("_class_name", ClassName) != ClassName)
            throw new InvalidDataException($"{c.Source}: _class_name '{c.String("_class_name", "")}' is not {ClassName}.");
        var cfg = new UNet2DConfig
        {
            SampleSize = c.Int("sample_size", 32), InChannels = c.Int("in_channels", 3), OutChannels = c.Int("out_channels", 3),
            BlockOutChannels = Ints(c, "block_out_channels") ?? [224, 448, 672, 896], LayersPerBlock = c.Int("layers_per_block", 2),
            DownBlockTypes = Strings(c, "down_block_types") ?? ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
            UpBlockTypes = Strings(c, "up_block_types") ?? ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
            NormNumGroups = c.Int("norm_num_groups", 32), NormEps = c.Double("norm_eps", 1e-5),
            // diffusers' default is 8; an explicit null is one head over all channels.
            AttentionHeadDim = !c.Json.ContainsKey("attention_head_dim") ? 8 : c.Json["attention_head_dim"] is null ? null : c.Int("attention_head_dim", 8),
            ActFn = c.String("act_fn", "silu"), FlipSinToCos = c.Bool("flip_sin_to_cos", true), FreqShift = c.Int("freq_shift", 0),
            DownsamplePadding = c.Int("downsample_padding", 1), NumClassEmbeds = c.OptionalInt("num_class_embeds"), Source = c.Json,
        };
        // What the definition builds; other diffusers options are refused rather than silently ignored.
        void Require(string key, JsonNode expected)
        {
            if (c.Json[key] is { } v && !JsonNode.DeepEquals(v, expected))
                throw new InvalidDataException($"{c.Source}: {key}={v.ToJsonString()} is not supported; expected {expected.ToJsonString()}.");
        }
        Require("time_embedding_type", "positional");
        Require("resnet_time_scale_shift", "default");
        Require("center_input_sample", false);
        Require("add_attention", true);
        Require("dropout", 0.0);
        cfg.Validate(c.Source);
        return cfg;
    }

    private static int[]? Ints(HfConfig c, string key) => c.Json[key] switch
    {
        null => null,
        JsonArray a => a.Select(n => n is JsonValue v && v.TryGetValue<int>(out var i) ? i : throw new InvalidDataException($"{c.Source}: '{key}' must be a list of integers, got {a.ToJsonString()}.")).ToArray(),
        var other => throw new InvalidDataException($"{c.Source}: '{key}' must be a list of integers, got {other.ToJsonString()}."),
    };

    private static string[]? Strings(HfConfig c, string key) => c.Json[key] switch
    {
        null => null,
        JsonArray a => a.Select(n => n is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw new InvalidDataException($"{c.Source}: '{key}' must be a list of strings, got {a.ToJsonString()}.")).ToArray(),
        var other => throw new InvalidDataException($"{c.Source}: '{key}' must be a list of strings, got {other.ToJsonString()}."),
    };

    public void Validate(string source = nameof(UNet2DConfig))
    {
        void Check(bool ok, string field, object value, string expected)
        {
            if (!ok) throw new InvalidDataException($"{source}: {field}={value} is not supported; expected {expected}.");
        }
        int levels = BlockOutChannels.Length;
        Check(levels is > 0 and <= MaxLevels, "block_out_channels", $"[{string.Join(", ", BlockOutChannels)}]", $"1 to {MaxLevels} levels");
        Check(NormNumGroups > 0, "norm_num_groups", NormNumGroups, "positive");
        Check(BlockOutChannels.All(ch => ch > 0 && ch % NormNumGroups == 0), "block_out_channels", $"[{string.Join(", ", BlockOutChannels)}]",
            $"positive multiples of norm_num_groups ({NormNumGroups})");
        Check(DownBlockTypes.Length == levels && DownBlockTypes.All(t => t is "DownBlock2D" or "AttnDownBlock2D"), "down_block_types",
            $"[{string.Join(", ", DownBlockTypes)}]", $"{levels} (one per block_out_channels entry) of DownBlock2D, AttnDownBlock2D");
        Check(UpBlockTypes.Length == levels && UpBlockTypes.All(t => t is "UpBlock2D" or "AttnUpBlock2D"), "up_block_types",
            $"[{string.Join(", ", UpBlockTypes)}]", $"{levels} (one per block_out_channels entry) of UpBlock2D, AttnUpBlock2D");
        Check(InChannels > 0, "in_channels", InChannels, "positive");
        Check(OutChannels > 0, "out_channels", OutChannels, "positive");
        ConfigLimits.Layers(source, "layers_per_block", LayersPerBlock);
        Check(SampleSize > 0 && SampleSize <= MaxSampleSize && SampleSize % (1 << (levels - 1)) == 0, "sample_size", SampleSize,
            $"a positive multiple of {1 << (levels - 1)} (halved {levels - 1} times) up to {MaxSampleSize}");
        Check(NormEps > 0, "norm_eps", NormEps, "positive");
        Check(AttentionHeadDim is null || (AttentionHeadDim > 0 && BlockOutChannels.All(ch => ch % AttentionHeadDim == 0)), "attention_head_dim", AttentionHeadDim?.ToString() ?? "null",
            "null or a positive divisor of every block's channels");
        Check(ActFn is "silu" or "swish", "act_fn", ActFn, "silu");
        Check(DownsamplePadding is 0 or 1, "downsample_padding", DownsamplePadding, "0 or 1");
        Check(NumClassEmbeds is null or > 0, "num_class_embeds", NumClassEmbeds?.ToString() ?? "null", "null or positive");
        Check(BlockOutChannels[0] % 2 == 0, "block_out_channels[0]", BlockOutChannels[0], "even (the sinusoidal embedding has sin and cos halves)");
        Check(FreqShift < BlockOutChannels[0] / 2, "freq_shift", FreqShift, $"below half of block_out_channels[0] ({BlockOutChannels[0] / 2}), the sinusoidal embedding's frequencies");
        // Sizes, in long before TimeEmbedDim computes 4 × block_out_channels[0] in int.
        long widest = BlockOutChannels.Max(), time = 4L * BlockOutChannels[0];
        ConfigLimits.Tensor(source, "an up block's 3×3 convolution", "block_out_channels", widest, 2 * widest, 3, 3);
        ConfigLimits.Tensor(source, "time_embedding.linear_2.weight", "4 × block_out_channels[0]", time, time);
        if (NumClassEmbeds is { } classes) ConfigLimits.Tensor(source, "class_embedding.weight", "num_class_embeds and block_out_channels[0]", classes, time);
    }

    /// <summary>Most down/up levels: sample_size is halved at each.</summary>
    public const int MaxLevels = 16;
    /// <summary>Largest sample_size (pixels or latents per side); diffusers models go to 128 latents.</summary>
    public const int MaxSampleSize = 1 << 16;

    /// <summary>The diffusers config.json document (unknown keys of the source kept).</summary>
    public JsonObject ToHf()
    {
        var o = Source?.DeepClone().AsObject() ?? new JsonObject();
        o.Remove("optimum");
        o.Remove("model_type");                                                          // a diffusers config names its class instead
        static JsonArray A<T>(IEnumerable<T> xs) => new(xs.Select(x => JsonValue.Create(x)).ToArray<JsonNode?>());
        o["_class_name"] = ClassName;
        o["sample_size"] = SampleSize; o["in_channels"] = InChannels; o["out_channels"] = OutChannels;
        o["block_out_channels"] = A(BlockOutChannels); o["layers_per_block"] = LayersPerBlock;
        o["down_block_types"] = A(DownBlockTypes); o["up_block_types"] = A(UpBlockTypes);
        o["norm_num_groups"] = NormNumGroups; o["norm_eps"] = NormEps; o["attention_head_dim"] = AttentionHeadDim;
        o["act_fn"] = ActFn; o["flip_sin_to_cos"] = FlipSinToCos; o["freq_shift"] = FreqShift; o["downsample_padding"] = DownsamplePadding;
        o["num_class_embeds"] = NumClassEmbeds;
        return o;
    }
}
