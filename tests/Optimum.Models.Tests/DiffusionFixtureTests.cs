using Optimum.Core;
using Optimum.Hub;
using Optimum.Core.Diffusion;
using Optimum.Inference.Diffusion;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Models.Tests;

/// <summary>
/// The first pieces of the diffusion UNet against ../shared/fixtures/ref/unet-tiny (plain PyTorch after diffusers; its
/// README gives the tolerances): the diffusers config, the sinusoidal time embedding, the DDPM schedule and add_noise.
/// </summary>
public sealed class DiffusionFixtureTests(ITestOutputHelper output)
{
    private static string Dir => UnetTiny.Dir;
    private static IReadOnlyDictionary<string, SafeTensor> Expected => UnetTiny.Expected;

    [Fact]
    public void Config_ReadsTheFixtureAndRefusesWhatIsNotBuilt()
    {
        var c = UNet2DConfig.FromHf(HfConfig.Load(Path.Combine(Dir, "config.json")));
        Assert.Equal([16, 32], c.BlockOutChannels);
        Assert.Equal(["DownBlock2D", "AttnDownBlock2D"], c.DownBlockTypes);
        Assert.Equal(["AttnUpBlock2D", "UpBlock2D"], c.UpBlockTypes);
        Assert.Equal((16, 1, 1, 1, 8, 8, 64), (c.SampleSize, c.InChannels, c.OutChannels, c.LayersPerBlock, c.NormNumGroups, c.AttentionHeadDim!.Value, c.TimeEmbedDim));
        Assert.Equal(c.ToHf().ToJsonString(), UNet2DConfig.FromHf(HfConfig.Parse(c.ToHf().ToJsonString())).ToHf().ToJsonString());
        var fourier = HfConfig.Parse("{\"_class_name\": \"UNet2DModel\", \"time_embedding_type\": \"fourier\"}", "unet.json");
        Assert.Contains("unet.json: time_embedding_type=\"fourier\" is not supported", Assert.Throws<InvalidDataException>(() => UNet2DConfig.FromHf(fourier)).Message);
        var groups = HfConfig.Parse("{\"block_out_channels\": [16, 24], \"norm_num_groups\": 16, \"down_block_types\": [\"DownBlock2D\", \"DownBlock2D\"], \"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\"]}", "unet.json");
        Assert.Contains("block_out_channels=[16, 24] is not supported", Assert.Throws<InvalidDataException>(() => UNet2DConfig.FromHf(groups)).Message);
    }

    [Fact]
    public void SinusoidalTimeEmbedding_EqualsTheFixture()
    {
        var t = Expected["timesteps"].ToInt64s();
        var g = new GraphBuilder();
        var ts = g.Input("timesteps", DType.Int64, Shape.Of("batch"));
        g.Output(TimestepEmbedding.Sinusoidal(g, ts, 16, flipSinToCos: true, freqShift: 0), "emb");
        using var m = new OrtModel(g);
        var emb = m.Run(new Dictionary<string, HostTensor> { ["timesteps"] = new(t.Select(v => (double)v).ToArray(), [t.Length], DType.Int64) })["emb"];
        var expected = Expected["time_embedding_input"].ToFloats();
        double worst = emb.Zip(expected).Max(p => Math.Abs(p.First - p.Second));
        output.WriteLine($"time embedding of t = [{string.Join(", ", t)}]: max |Δ| {worst:E2}");
        Assert.Equal(expected.Length, emb.Length);
        Assert.True(worst <= 1e-6, $"max |Δ| {worst:E2}");                                // float32 angles up to 500 rad
    }

    [Fact]
    public void DdpmScheduleAndAddNoise_EqualTheFixture()
    {
        var s = NoiseSchedule.Linear(1000, 1e-4, 0.02);
        var expected = Expected["ddpm.alphas_cumprod"].ToFloats();
        double worst = s.AlphasCumprod.Zip(expected).Max(p => Math.Abs(p.First - p.Second));
        var noisy = s.AddNoise(Expected["x0"].ToFloats(), Expected["noise"].ToFloats(), Expected["timesteps"].ToInt64s());
        double worstNoisy = noisy.Zip(Expected["noisy_sample"].ToFloats()).Max(p => Math.Abs(p.First - p.Second));
        output.WriteLine($"alphas_cumprod max |Δ| {worst:E2}; noisy_sample max |Δ| {worstNoisy:E2}");
        Assert.True(worst <= 1e-7, $"alphas_cumprod max |Δ| {worst:E2}");
        Assert.True(worstNoisy <= 1e-6, $"noisy_sample max |Δ| {worstNoisy:E2}");
        Assert.Throws<ArgumentOutOfRangeException>(() => s.AddNoise(new float[4], new float[4], [1000]));
    }
}
