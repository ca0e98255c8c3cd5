using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using static Optimum.Onnx.Tests.In;

namespace Optimum.Onnx.Tests;

/// <summary>The seeded (counter-hash) dropout: deterministic per seed, unbiased, differentiable.</summary>
public sealed class DropoutTests
{
    private static Dictionary<string, double[]> Run(double ratio, long seed, long n = 200_000)
    {
        var g = new GraphBuilder();
        var x = g.Input("x", DType.Float, Shape.Of("n"));
        var s = g.Input("seed", DType.Int64, Shape.Scalar);
        g.Output(g.Dropout(x, ratio, training: true, s, salt: 3), "y");
        using var m = new OrtModel(g);
        return m.Run(new Dictionary<string, HostTensor>
        {
            ["x"] = new(Enumerable.Repeat(1.0, (int)n).ToArray(), [n], DType.Float),
            ["seed"] = new([seed], [], DType.Int64),
        });
    }

    [Theory]
    [InlineData(0.1)]
    [InlineData(0.5)]
    public void Mask_KeepsTheRightFractionScaledAndIsDeterministicPerSeed(double ratio)
    {
        var a = Run(ratio, 42)["y"];
        var kept = a.Count(v => v != 0) / (double)a.Length;
        Assert.InRange(kept, 1 - ratio - 0.005, 1 - ratio + 0.005);
        Assert.All(a.Where(v => v != 0), v => Assert.Equal(1 / (1 - ratio), v, 5));
        Assert.Equal(a, Run(ratio, 42)["y"]);
        var b = Run(ratio, 43)["y"];
        var agree = a.Zip(b).Count(p => (p.First != 0) == (p.Second != 0)) / (double)a.Length;
        var expected = (1 - ratio) * (1 - ratio) + ratio * ratio;          // independent masks
        Assert.InRange(agree, expected - 0.01, expected + 0.01);
        // Neighbouring elements are independent too.
        var both = a.Zip(a.Skip(1)).Count(p => p.First != 0 && p.Second != 0) / (double)(a.Length - 1);
        Assert.InRange(both, (1 - ratio) * (1 - ratio) - 0.01, (1 - ratio) * (1 - ratio) + 0.01);
    }

    [Fact]
    public void Gradient_MatchesFiniteDifferences()
    {
        var c = new GradCase("Dropout", "seeded dropout", [P(4, 6)], (g, x) =>
        {
            var seed = g.Constant(TensorData.FromInt64s([7]));
            return [g.Dropout(x[0], 0.3, training: true, g.Reshape(seed, g.Ints()), salt: 1) * x[0]];
        });
        var r = GradCheck.Run(c);
        Assert.True(r.WorstRatio <= 1, $"max error {r.MaxAbsError:E3}");
    }
}
