using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;
using static Optimum.Onnx.Tests.In;

namespace Optimum.Onnx.Tests;

/// <summary>GroupNorm from standard ops: torch's definition computed directly, and finite differences.</summary>
public sealed class GroupNormTests(ITestOutputHelper output)
{
    /// <summary>torch.nn.functional.group_norm in double: per (sample, group) mean and biased variance, then per-channel affine.</summary>
    private static double[] Reference(double[] x, long n, long c, long positions, long groups, double[] scale, double[] bias, double eps)
    {
        var y = new double[x.Length];
        long per = c / groups * positions;
        for (long s = 0; s < n; s++)
            for (long g = 0; g < groups; g++)
            {
                long first = (s * c + g * (c / groups)) * positions;
                double mean = 0, var = 0;
                for (long k = 0; k < per; k++) mean += x[first + k];
                mean /= per;
                for (long k = 0; k < per; k++) var += (x[first + k] - mean) * (x[first + k] - mean);
                var /= per;
                for (long k = 0; k < per; k++)
                {
                    long ch = g * (c / groups) + k / positions;
                    y[first + k] = (x[first + k] - mean) / Math.Sqrt(var + eps) * scale[ch] + bias[ch];
                }
            }
        return y;
    }

    [Theory]
    [InlineData(2, 8, 4, 3, 2)]      // (N, C, H, W), 2 groups
    [InlineData(3, 6, 5, 1, 3)]      // 3 groups of 2 channels
    [InlineData(1, 4, 2, 2, 4)]      // one channel per group (instance norm)
    public void Forward_EqualsTorchsDefinition(long n, long c, long h, long w, long groups)
    {
        var rng = new Random(5);
        double[] R(long count, double shift = 0) => Enumerable.Range(0, (int)count).Select(_ => shift + Rand.Normal(rng)).ToArray();
        var (x, scale, bias) = (R(n * c * h * w, 0.7), R(c, 1), R(c));
        var g = new GraphBuilder();
        var xv = g.Input("x", DType.Double, Shape.Of("n", c, h, w));
        var sv = g.Input("scale", DType.Double, Shape.Of(c));
        var bv = g.Input("bias", DType.Double, Shape.Of(c));
        g.Output(g.GroupNorm(xv, groups, sv, bv, 1e-5), "y");
        using var m = new OrtModel(g);
        var y = m.Run(new Dictionary<string, HostTensor>
        {
            ["x"] = new(x, [n, c, h, w], DType.Double), ["scale"] = new(scale, [c], DType.Double), ["bias"] = new(bias, [c], DType.Double),
        })["y"];
        var expected = Reference(x, n, c, h * w, groups, scale, bias, 1e-5);
        double worst = y.Zip(expected).Max(p => Math.Abs(p.First - p.Second));
        output.WriteLine($"GroupNorm ({n}, {c}, {h}, {w}) / {groups} groups: max |Δ| {worst:E2}");
        Assert.True(worst < 1e-12, $"max |Δ| {worst:E2}");
    }

    [Fact]
    public void Gradients_MatchFiniteDifferences()
    {
        var c = new GradCase("GroupNorm", "GroupNorm (3 groups, symbolic batch)", [P(2, 6, 3, 2).As("n", 6, 3, 2), P(6), P(6), P(2, 6, 3, 2).As("n", 6, 3, 2)],
            (g, x) => [g.GroupNorm(x[0], 3, x[1], x[2]) * x[3]]);
        var r = GradCheck.Run(c);
        output.WriteLine($"GRADCHECK\t{c.Op}\t{c.Label}\tdouble\tmax_abs={r.MaxAbsError:E2}\tmax_rel={r.MaxRelError:E2}\tn={r.Checked}");
        Assert.True(r.WorstRatio <= 1, $"{c.Label}: max error {r.MaxAbsError:E3}");
        Assert.True(r.Checked > 50);
        var b = new GraphBuilder();                                                     // 6 channels do not split into 4 groups
        var e = Assert.Throws<GraphBuildException>(() => b.GroupNorm(b.Input("x", DType.Float, Shape.Of(1, 6, 2)), 4, b.Input("s", DType.Float, Shape.Of(6)), b.Input("b", DType.Float, Shape.Of(6))));
        Assert.Contains("divisible by 4 groups", e.Message);
    }
}
