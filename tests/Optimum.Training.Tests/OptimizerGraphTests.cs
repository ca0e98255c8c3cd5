using Optimum.Core;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Training.Tests;

/// <summary>The optimizer step as an ONNX graph (<see cref="OptimizerGraph"/>) against the fused C# optimizers it mirrors.</summary>
public sealed class OptimizerGraphTests(ITestOutputHelper output)
{
    // Both compute the same float operations in the same order; what differs is ORT's and .NET's vectorised kernels (sqrt, division).
    private const double Tolerance = 1e-6;

    // Weights and biases alternate (decay runs), a LayerNorm weight (no decay), a frozen parameter (after the trainable ones).
    private static readonly ParameterInfo[] Parameters =
    [
        new("transformer.wte.weight", [37, 8]),
        new("transformer.h.0.attn.c_attn.weight", [8, 24]),
        new("transformer.h.0.attn.c_attn.bias", [24]),
        new("transformer.h.0.ln_1.weight", [8]),
        new("transformer.h.0.mlp.c_fc.weight", [8, 32]),
        new("transformer.h.0.mlp.c_fc.bias", [32]),
        new("transformer.wpe.weight", [16, 8]) { Trainable = false },
        new("lm_head.extra", [5, 3]),
    ];

    public static TheoryData<string> Configs => ["adamw", "adamw-scales", "adamw-decay-all", "sgd", "sgd-nesterov", "sgd-plain", "sgd-scales"];

    private static OptimizerConfig Config(string name) => name switch
    {
        "adamw" => new() { Kind = OptimizerKind.AdamW, WeightDecay = 0.1 },
        "adamw-scales" => new()
        {
            Kind = OptimizerKind.AdamW, WeightDecay = 0.05, Beta1 = 0.8, Beta2 = 0.95, Eps = 1e-6,
            LrScales = new Dictionary<string, double> { ["transformer.h.0.attn.c_attn.weight"] = 0.5, ["transformer.wte.weight"] = 0 },
        },
        "adamw-decay-all" => new() { Kind = OptimizerKind.AdamW, WeightDecay = 0.01, DecayAll = true },
        "sgd" => new() { Kind = OptimizerKind.Sgd, WeightDecay = 0.01, Momentum = 0.9 },
        "sgd-nesterov" => new() { Kind = OptimizerKind.Sgd, WeightDecay = 0.02, Momentum = 0.8, Nesterov = true },
        "sgd-plain" => new() { Kind = OptimizerKind.Sgd, WeightDecay = 0, Momentum = 0 },
        "sgd-scales" => new() { Kind = OptimizerKind.Sgd, Momentum = 0.9, LrScales = new Dictionary<string, double> { ["lm_head.extra"] = 3 } },
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Configs))]
    public void Graph_EqualsFusedOptimizer_OverSixSteps(string config) => Compare(Config(config), shards: 1, rank: 0);

    // Shard 0 of 3 lies inside wte, which "adamw-scales" freezes with lr scale 0: it gets plain AdamW.
    [Theory]
    [InlineData(0, "adamw")]
    [InlineData(1, "adamw-scales")]
    [InlineData(2, "sgd-nesterov")]
    public void Graph_EqualsFusedOptimizer_OnAZero1Shard(int rank, string config) => Compare(Config(config), shards: 3, rank);

    private void Compare(OptimizerConfig config, int shards, int rank)
    {
        using var fusedStore = new ParameterStore(Parameters, shards);
        using var graphStore = new ParameterStore(Parameters, shards);
        var rng = new Random(7);
        var init = Parameters.Select(p => Enumerable.Range(0, (int)p.Count).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray()).ToArray();
        fusedStore.Load(init);
        graphStore.Load(init);
        var (begin, end) = fusedStore.Shard(rank);
        using var fused = Optimizer.Create(fusedStore, config, begin, end);
        using var graph = Optimizer.Create(graphStore, config, begin, end);
        graph.UseGraph(new SessionSettings { IntraOpThreads = 1 });
        Assert.True(graph.RunsAsGraph);
        double[] lrs = [1e-2, 3e-2, 5e-2, 2e-2, 1e-2, 4e-3];
        double worst = 0;
        for (int t = 1; t <= lrs.Length; t++)
        {
            // Gradients of mixed scales, some large, so the second moment and the momentum differ per element.
            for (int i = 0; i < Parameters.Length; i++)
            {
                if (!Parameters[i].Trainable) continue;
                var g = fusedStore.Grad(i);
                for (int k = 0; k < g.Length; k++) g[k] = (float)((rng.NextDouble() * 2 - 1) * (k % 7 == 0 ? 10 : 0.1));
                g.CopyTo(graphStore.Grad(i));
            }
            fused.Step(t, lrs[t - 1]);
            graph.Step(t, lrs[t - 1]);
            worst = Math.Max(worst, MaxAbsDiff(fusedStore, graphStore, fused, graph, t));
        }
        output.WriteLine($"{EnumNames.Name(config.Kind)} shard {rank}/{shards}: {OptimizerGraph.Runs(graph).Count} runs, max |graph - fused| over 6 steps = {worst:E2}");
        // The update did something, and what the fused one did: a graph that left everything alone would fail here.
        Assert.True(MovedFrom(init, graphStore, begin, end) > 1e-3, "the graph optimizer did not change the parameters");
    }

    private static double MaxAbsDiff(ParameterStore a, ParameterStore b, Optimizer oa, Optimizer ob, int t)
    {
        double worst = 0;
        for (int i = 0; i < Parameters.Length; i++)
        {
            var x = a.Param(i);
            var y = b.Param(i);
            for (int k = 0; k < x.Length; k++)
            {
                var d = Math.Abs(x[k] - y[k]);
                Assert.True(d <= Tolerance, $"step {t}: {Parameters[i].Name}[{k}] fused {x[k]} vs graph {y[k]}");
                worst = Math.Max(worst, d);
            }
        }
        for (int s = 0; s < oa.StateNames.Count; s++)
        {
            var x = oa.State(s);
            var y = ob.State(s);
            for (int k = 0; k < x.Length; k++)
            {
                var d = Math.Abs(x[k] - y[k]);
                Assert.True(d <= Tolerance * Math.Max(1, Math.Abs(x[k])), $"step {t}: {oa.StateNames[s]}[{k}] fused {x[k]} vs graph {y[k]}");
                worst = Math.Max(worst, d / Math.Max(1, Math.Abs(x[k])));
            }
        }
        return worst;
    }

    private static double MovedFrom(float[][] init, ParameterStore store, long begin, long end)
    {
        double moved = 0;
        for (int i = 0; i < Parameters.Length; i++)
        {
            var p = store.Param(i);
            long at = store.Offset(i);
            for (int k = 0; k < p.Length; k++)
                if (Parameters[i].Trainable && at + k >= begin && at + k < end) moved = Math.Max(moved, Math.Abs(p[k] - init[i][k]));
                else Assert.Equal(init[i][k], p[k]);      // outside the slice, frozen: untouched
        }
        return moved;
    }

    [Fact]
    public void Runs_MergeEqualCoefficients_AndFreezeThePadding()
    {
        using var store = new ParameterStore(Parameters, shards: 3);
        using var opt = Optimizer.Create(store, Config("adamw"));
        var runs = OptimizerGraph.Runs(opt);
        // wte (decay) + c_attn.weight (decay) merge; bias and ln_1 (no decay) merge; c_fc.weight; c_fc.bias + lm_head.extra? no: extra decays.
        long trainable = Parameters.Where(p => p.Trainable).Sum(p => p.Count);
        Assert.Equal([(0L, 37L * 8 + 8 * 24, 0.1f), (37L * 8 + 8 * 24, 37L * 8 + 8 * 24 + 24 + 8, 0f)], runs.Take(2).Select(r => (r.Begin, r.End, r.Decay)));
        Assert.Equal(store.Length, runs[^1].End);
        Assert.Equal(store.Length > trainable, runs[^1].Frozen);
        Assert.Equal(trainable, runs.Where(r => !r.Frozen).Sum(r => r.End - r.Begin));
    }

    [Fact]
    public void Build_RefusesRunsWithGaps()
    {
        var e = Assert.Throws<ArgumentException>(() => OptimizerGraph.Build(Config("sgd"), ["momentum_buffer"],
            [new(0, 10, 0, 1, false), new(12, 20, 0, 1, false)], 20));
        Assert.Contains("[0, 10), [12, 20)", e.Message);
    }
}
