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
}
