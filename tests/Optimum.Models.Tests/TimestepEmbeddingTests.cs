using Optimum.Onnx;
using Optimum.Tests;
using Xunit;

namespace Optimum.Models.Tests;

/// <summary>diffusers' get_timestep_embedding in closed form, for every flip / shift combination (the fixture has only one).</summary>
public sealed class TimestepEmbeddingTests
{
    [Theory]
    [InlineData(true, 0, 32)]
    [InlineData(false, 0, 32)]
    [InlineData(true, 1, 16)]
    [InlineData(false, 1, 8)]
    public void Sinusoidal_IsSinAndCosOfGeometricFrequencies(bool flip, int shift, int dim)
    {
        var g = new GraphBuilder("embedding");
        var t = g.Input("t", DType.Int64, Shape.Of("batch"));
        g.Output(TimestepEmbedding.Sinusoidal(g, t, dim, flip, shift), "emb");
        using var ort = new OrtModel(g);
        long[] steps = [0, 1, 17, 500, 999];
        var got = ort.Run(new Dictionary<string, HostTensor> { ["t"] = new(steps.Select(s => (double)s).ToArray(), [steps.Length], DType.Int64) })["emb"];
        int half = dim / 2;
        for (int b = 0; b < steps.Length; b++)
            for (int k = 0; k < half; k++)
            {
                // exponent = −ln(10000)·k / (half − freq_shift); emb = [sin, cos] of t·exp(exponent), flipped to [cos, sin].
                double angle = steps[b] * Math.Exp(-Math.Log(10000) * k / (half - shift));
                double first = flip ? Math.Cos(angle) : Math.Sin(angle), second = flip ? Math.Sin(angle) : Math.Cos(angle);
                // float32 angles up to 999 rad: the argument itself is off by up to ~6e-5 rad.
                Assert.Equal(first, got[b * dim + k], 1e-4);
                Assert.Equal(second, got[b * dim + half + k], 1e-4);
            }
    }
}
