using Optimum.Models;
using Optimum.Onnx;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Models.Tests;

/// <summary>
/// Informer's ProbSparse attention against a plain C# transcription of transformers' InformerProbSparseAttention
/// (double precision), given the keys the graph sampled: which queries are kept, their attention, and the mean
/// (encoder) or cumulative sum (decoder) of the values for the others. The HF fixtures keep every query
/// (sampling_factor 100), so this is where dropped queries are checked.
/// </summary>
public sealed class ProbSparseTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(false, 20, 1, false)]     // encoder: u = min(⌈ln 21⌉, 20) = 4 of 20 queries
    [InlineData(true, 16, 2, false)]      // decoder (causal): u = min(2⌈ln 17⌉, 16) = 6 of 16
    [InlineData(true, 16, 2, true)]       // the same with a symbolic length: u computed in the graph
    [InlineData(false, 7, 5, false)]      // u = L: every query kept (full attention)
    public void MatchesTransformersAlgorithm_GivenTheSampledKeys(bool causal, int len, int factor, bool symbolic)
    {
        const int b = 2, h = 2, d = 3;
        var g = new GraphBuilder("probsparse");
        var shape = symbolic ? Shape.Of("b", h, "len", d) : Shape.Of(b, h, len, d);
        var q = g.Input("q", DType.Double, shape);
        var k = g.Input("k", DType.Double, shape);
        var v = g.Input("v", DType.Double, shape);
        var seed = g.Input("seed", DType.Int64, Shape.Scalar);
        var (o, sample, top) = TimeSeriesModel.ProbSparseAttention(g, q, k, v, causal, factor, seed, salt: 3);
        g.Output(o, "out");
        g.Output(sample, "sample");
        g.Output(top, "top");
        var rng = new Random(len + factor);
        double[] R() => Enumerable.Range(0, b * h * len * d).Select(_ => Rand.Normal(rng)).ToArray();
        var (qv, kv, vv) = (R(), R(), R());
        using var m = new OrtModel(g);
        var r = m.Run(new Dictionary<string, HostTensor>
        {
            ["q"] = new(qv, [b, h, len, d]), ["k"] = new(kv, [b, h, len, d]), ["v"] = new(vv, [b, h, len, d]), ["seed"] = new([7], [], DType.Int64),
        });

        int u = Math.Min(factor * (int)Math.Ceiling(Math.Log(1 + (double)len)), len);
        int uPart = Math.Min(factor * len * (int)Math.Ceiling(Math.Log(1 + (double)len)), len);
        var keys = r["sample"].Select(x => (int)x).ToArray();
        Assert.Equal(uPart, keys.Length);
        Assert.All(keys, x => Assert.InRange(x, 0, len - 1));
        double Q(int bh, int i, int j) => qv[(bh * len + i) * d + j];
        double K(int bh, int i, int j) => kv[(bh * len + i) * d + j];
        double V(int bh, int i, int j) => vv[(bh * len + i) * d + j];
        double Dot(int bh, int i, int kk) => Enumerable.Range(0, d).Sum(j => Q(bh, i, j) * K(bh, kk, j));
        double worst = 0;
        for (int bh = 0; bh < b * h; bh++)
        {
            // M = max over sampled keys - sum / L_K; the top u queries are kept.
            var sparsity = Enumerable.Range(0, len).Select(i => keys.Max(kk => Dot(bh, i, kk)) - keys.Sum(kk => Dot(bh, i, kk)) / len).ToArray();
            var kept = Enumerable.Range(0, len).OrderByDescending(i => sparsity[i]).Take(u).ToHashSet();
            var graphKept = r["top"].Skip(bh * u).Take(u).Select(x => (int)x).ToHashSet();
            Assert.True(kept.SetEquals(graphKept), $"head {bh}: kept queries [{string.Join(",", graphKept.Order())}], transformers keeps [{string.Join(",", kept.Order())}]");
            for (int i = 0; i < len; i++)
                for (int j = 0; j < d; j++)
                {
                    double expected;
                    if (kept.Contains(i))
                    {
                        int visible = causal ? i + 1 : len;
                        var s = Enumerable.Range(0, visible).Select(kk => Dot(bh, i, kk)).ToArray();
                        double max = s.Max(), z = s.Sum(x => Math.Exp(x - max));
                        expected = Enumerable.Range(0, visible).Sum(kk => Math.Exp(s[kk] - max) / z * V(bh, kk, j));
                    }
                    else expected = causal ? Enumerable.Range(0, i + 1).Sum(kk => V(bh, kk, j)) : Enumerable.Range(0, len).Average(kk => V(bh, kk, j));
                    double err = Math.Abs(r["out"][(bh * len + i) * d + j] - expected);
                    worst = Math.Max(worst, err);
                    Assert.True(err < 1e-12, $"head {bh} query {i} dim {j}: {r["out"][(bh * len + i) * d + j]} vs {expected}");
                }
        }
        output.WriteLine($"ProbSparse causal={causal} L={len} c={factor}{(symbolic ? " (symbolic length)" : "")}: u={u} of {len} queries, u_part={uPart} sampled keys, max |Δ| {worst:E2}");
    }
}
