using Optimum.Core;
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
}
