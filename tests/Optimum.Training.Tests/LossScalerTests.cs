using Optimum.Core;
using Optimum.Distributed;
using Xunit;

namespace Optimum.Training.Tests;

/// <summary>Dynamic loss scaling against torch.amp.GradScaler's rules, worked by hand, and its exact resume.</summary>
public sealed class LossScalerTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "optimum-scaler-" + Guid.NewGuid().ToString("N"));
    public LossScalerTests() => Directory.CreateDirectory(_dir);
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Update_BacksOffOnOverflow_AndGrowsAfterTheIntervalOfGoodSteps()
    {
        var s = new LossScaler(new LossScalerOptions { InitScale = 1024, GrowthInterval = 3 });
        bool[] overflow = [false, false, false, true, false, true, true, false, false, false, false];
        // By hand: three good steps grow 1024 -> 2048; overflow halves (tracker reset); two overflows -> 256; three good -> 512.
        float[] scales = [1024, 1024, 2048, 1024, 1024, 512, 256, 256, 256, 512, 512];
        for (int i = 0; i < overflow.Length; i++)
        {
            s.Update(overflow[i]);
            Assert.Equal(scales[i], s.Scale);
        }
        Assert.Equal((1, 3L), (s.GrowthTracker, s.Skipped));
    }

    [Fact]
    public void Unscale_DividesByTheScale_AndReportsInfAndNaN()
    {
        var s = new LossScaler();
        float[] g = [65536, -131072, 3, 0];
        Assert.True(s.Unscale(g));
        Assert.Equal([1f, -2f, 3f / 65536, 0f], g);
        Assert.False(s.Unscale(new[] { 1f, float.PositiveInfinity }));
        Assert.False(s.Unscale(new[] { float.NaN, 1f }));
    }

    /// <summary>ZeRO: only rank 1's shard overflows; both ranks must skip and back off alike, and agree on a clean step after.</summary>
    [Fact]
    public void Unscale_UnderTwoRanks_AgreesWhenOnlyOneShardOverflows()
    {
        var results = new InProcessWorld(2).Run(c =>
        {
            var scaler = new LossScaler(new LossScalerOptions { InitScale = 1024 }, c);
            float[] shard = c.Rank == 1 ? [2048, float.PositiveInfinity] : [2048, 512];
            bool first = scaler.Unscale(shard);
            scaler.Update(foundInf: !first);
            float[] clean = [1024, 256];
            bool second = scaler.Unscale(clean);
            scaler.Update(foundInf: !second);
            return (first, second, scaler.Scale, scaler.Skipped, shard[0], clean[0]);
        });
        foreach (var r in results)
        {
            Assert.Equal((false, true, 512f, 1L), (r.first, r.second, r.Scale, r.Skipped));
            Assert.Equal(2f, r.Item5);          // 2048 / 1024
            Assert.Equal(2f, r.Item6);          // 1024 / 512 after the back-off
        }
    }

    [Fact]
    public void Growth_NeverOverflowsTheFloat32Scale()
    {
        var s = new LossScaler(new LossScalerOptions { InitScale = 2e38, GrowthInterval = 1 });
        s.Update(false);
        Assert.Equal(2e38f, s.Scale);
    }

    /// <summary>Checkpointed after 23 of 60 steps and restored into a fresh scaler, the rest of the run scales exactly as the uninterrupted one.</summary>
    [Fact]
    public void SaveAndLoad_ResumeExactly()
    {
        var options = new LossScalerOptions { InitScale = 4096, GrowthInterval = 4, BackoffFactor = 0.25, GrowthFactor = 3 };
        var rng = new Random(3);
        var overflow = Enumerable.Range(0, 60).Select(_ => rng.NextDouble() < 0.2).ToArray();
        var whole = new LossScaler(options);
        var trace = overflow.Select(o => { whole.Update(o); return (whole.Scale, whole.GrowthTracker); }).ToArray();

        var first = new LossScaler(options);
        foreach (var o in overflow.Take(23)) first.Update(o);
        first.Save(_dir);
        var resumed = new LossScaler(options);
        resumed.Load(_dir);
        for (int i = 23; i < overflow.Length; i++)
        {
            resumed.Update(overflow[i]);
            Assert.Equal(trace[i], (resumed.Scale, resumed.GrowthTracker));
        }
        Assert.Equal(whole.Skipped, resumed.Skipped);
        Assert.True(whole.Skipped > 0 && trace.Select(t => t.Scale).Distinct().Count() > 3, "the trace should both back off and grow");
    }

    [Fact]
    public void Load_RefusesMissingAndMalformedState_NamingIt()
    {
        var s = new LossScaler();
        Assert.Contains("has no loss_scaler.json", Assert.Throws<FileNotFoundException>(() => s.Load(_dir)).Message);
        File.WriteAllText(Path.Combine(_dir, LossScaler.FileName), "{\"scale\": \"1024\", \"growth_tracker\": \"x\", \"skipped\": 0}");
        Assert.Contains("\"growth_tracker\" is \"x\"", Assert.Throws<InvalidDataException>(() => s.Load(_dir)).Message);
        File.WriteAllText(Path.Combine(_dir, LossScaler.FileName), "{\"scale\": \"-1\", \"growth_tracker\": 0, \"skipped\": 0}");
        Assert.Contains("out of range", Assert.Throws<InvalidDataException>(() => s.Load(_dir)).Message);
        Assert.Equal(65536f, s.Scale);                  // nothing half-loaded
    }

    /// <summary>An overflowed step leaves the weights and AdamW's state alone and halves the scale; a good one equals AdamW on the unscaled gradients.</summary>
    [Fact]
    public void Step_SkipsOverflowedSteps_AndOtherwiseStepsOnUnscaledGradients()
    {
        ParameterInfo[] ps = [new("w", [4, 3]), new("b", [3])];
        using var scaled = new ParameterStore(ps);
        using var plain = new ParameterStore(ps);
        float[][] init = [Enumerable.Range(0, 12).Select(i => i * 0.1f - 0.5f).ToArray(), [0.1f, -0.2f, 0.3f]];
        scaled.Load(init);
        plain.Load(init);
        var config = new OptimizerConfig { Kind = OptimizerKind.AdamW };
        using var a = Optimizer.Create(scaled, config);
        using var b = Optimizer.Create(plain, config);
        var scaler = new LossScaler(new LossScalerOptions { InitScale = 1024 });
        var rng = new Random(5);
        long taken = 0;
        for (int step = 0; step < 6; step++)
        {
            bool overflow = step is 2 or 3;
            for (int i = 0; i < ps.Length; i++)
            {
                var g = plain.Grad(i);
                for (int k = 0; k < g.Length; k++) g[k] = (float)(rng.NextDouble() - 0.5);
                var sg = scaled.Grad(i);
                for (int k = 0; k < g.Length; k++) sg[k] = g[k] * scaler.Scale;       // what backward of the scaled loss gives (powers of 2: exact)
                if (overflow) sg[1] = float.PositiveInfinity;
            }
            var before = scaled.Export();
            var scaleBefore = scaler.Scale;
            Assert.Equal(!overflow, scaler.Step(a, taken + 1, 1e-2));
            if (overflow)
            {
                Assert.Equal(before, scaled.Export());
                Assert.Equal(scaleBefore / 2, scaler.Scale);
                continue;
            }
            b.Step(++taken, 1e-2);
            Assert.Equal(plain.Export(), scaled.Export());
        }
        Assert.Equal(4, taken);
    }
}
