using Optimum.Hub;
using Xunit;
using Optimum.Core;

namespace Optimum.Hub.Tests;

public sealed class HfConfigTests
{
    [Fact]
    public void Fields_AreReadWithDefaultsAndTypeChecks()
    {
        var c = HfConfig.Parse("{\"model_type\": \"gpt2\", \"n_layer\": 2, \"n_inner\": null, \"layer_norm_epsilon\": 1e-05, \"tie_word_embeddings\": false}", "cfg.json");
        Assert.Equal("gpt2", c.ModelType);
        Assert.Equal(2, c.Int("n_layer", 12));
        Assert.Equal(12, c.Int("n_head", 12));
        Assert.Null(c.OptionalInt("n_inner"));
        Assert.Equal(1e-5, c.Double("layer_norm_epsilon", 0));
        Assert.False(c.Bool("tie_word_embeddings", true));
        var bad = HfConfig.Parse("{\"n_layer\": \"two\"}", "cfg.json");
        var e = Assert.Throws<InvalidDataException>(() => bad.Int("n_layer", 12));
        Assert.Equal("cfg.json: 'n_layer' is \"two\", expected an integer.", e.Message);
        Assert.Contains("not valid JSON", Assert.Throws<InvalidDataException>(() => HfConfig.Parse("{", "x.json")).Message);
    }

    /// <summary>JsonNode reads lazily: a key twice or half a surrogate pair must be refused at load, naming the file, not later by whoever reads it.</summary>
    [Theory]
    [InlineData("{\"n_layer\": 2, \"n_layer\": 2}", "a key appears twice")]
    [InlineData("{\"a\": {\"b\": 1, \"b\": 2}}", "a key appears twice")]
    [InlineData("{\"\\ud800\": 1}", "holds a string that cannot be decoded")]
    [InlineData("{\"x\": [\"\\udc00\"]}", "holds a string that cannot be decoded")]
    public void DuplicateKeysAndUndecodableStrings_AreRefusedNamingTheFile(string json, string expected)
    {
        var e = Assert.Throws<InvalidDataException>(() => HfConfig.Parse(json, "cfg.json"));
        Assert.StartsWith("cfg.json: ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    /// <summary>1e400 is valid JSON but not a double (it reads as infinity): refused, not an infinite epsilon.</summary>
    [Fact]
    public void NumbersBeyondDouble_AreRefused()
    {
        var e = Assert.Throws<InvalidDataException>(() => HfConfig.Parse("{\"layer_norm_epsilon\": 1e400}", "cfg.json").Double("layer_norm_epsilon", 1e-5));
        Assert.Equal("cfg.json: 'layer_norm_epsilon' is 1e400, expected a finite number.", e.Message);
    }

    /// <summary>
    /// Where HF gives null a meaning of its own, null and absent differ: time series scaling null is no scaling (absent is
    /// "mean"), so a model without scaling survives its own config.json; a diffusers attention_head_dim absent is 8 (null is
    /// one head over all channels).
    /// </summary>
    [Fact]
    public void NullAndAbsent_DifferWhereHfMakesThemDiffer()
    {
        const string ts = "{\"model_type\": \"time_series_transformer\", \"prediction_length\": 4";
        Assert.Equal("none", TimeSeriesConfig.FromHf(HfConfig.Parse(ts + ", \"scaling\": null}")).Scaling);
        Assert.Equal("mean", TimeSeriesConfig.FromHf(HfConfig.Parse(ts + "}")).Scaling);
        var none = new TimeSeriesConfig { PredictionLength = 4, Scaling = "none" };
        Assert.Equal("none", TimeSeriesConfig.FromHf(HfConfig.Parse(none.ToHf().ToJsonString())).Scaling);
        const string unet = "{\"_class_name\": \"UNet2DModel\", \"block_out_channels\": [32, 64], \"down_block_types\": [\"DownBlock2D\", \"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\"]";
        Assert.Equal(8, UNet2DConfig.FromHf(HfConfig.Parse(unet + "}")).AttentionHeadDim);
        Assert.Null(UNet2DConfig.FromHf(HfConfig.Parse(unet + ", \"attention_head_dim\": null}")).AttentionHeadDim);
    }
}
