using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;
using Optimum.Core;
using Optimum.Data;

namespace Optimum.Training.Tests;

/// <summary>The flat-buffer training step and AdamW against torch.optim.AdamW on the gpt2-tiny fixture.</summary>
public sealed class AdamWParityTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>With <paramref name="optimizerGraph"/>, AdamW steps as an ONNX graph (<see cref="OptimizerGraph"/>) instead of the fused C# update.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ThreeAdamWSteps_MatchTorch(bool optimizerGraph)
    {
        var fixture = Repo.Fixture("gpt2-tiny");
        var model = Path.Combine(_dir, "gpt2-tiny");
        ModelKinds.Export(fixture, model);
        var ps = ModelFolder.ReadParameters(model);
        var expected = SafeTensorsFile.ReadAll(Path.Combine(fixture, "expected.safetensors"));
        using var store = new ParameterStore(ps);
        store.Load(HfWeights.Load(Path.Combine(model, ModelFolder.WeightsFile), ps, out _));
        using var session = new TrainingSession(model, store, new SessionSettings { IntraOpThreads = 2 });
        using var adam = Optimizer.Create(store, new OptimizerConfig { Kind = OptimizerKind.AdamW, WeightDecay = 0.01, DecayAll = true });
        if (optimizerGraph) adam.UseGraph(new SessionSettings { IntraOpThreads = 2 });
        var ids = expected["input_ids"].ToInt64s();
        var batch = new Batch
        {
            ["input_ids"] = new(ids, [2, 16]),
            ["attention_mask"] = new(Enumerable.Repeat(1L, 32).ToArray(), [2, 16]),
            ["labels"] = new(ids.ToArray(), [2, 16]),
        };
        for (int step = 0; step < 3; step++)
        {
            var loss = session.TrainStep(batch);
            var reference = expected[$"adamw.loss.step{step}"].ToFloats()[0];
            output.WriteLine($"step {step}: loss {loss:F7} vs torch {reference:F7}");
            Assert.True(Math.Abs(loss - reference) <= 1e-5 * Math.Abs(reference), $"step {step}: loss {loss} vs {reference}");
            adam.Step(step + 1, 1e-3);
        }
        double maxAbs = 0;
        for (int i = 0; i < ps.Count; i++)
        {
            var want = expected["adamw3." + ps[i].Name].ToFloats();
            var got = store.Param(i).ToArray();
            for (int k = 0; k < want.Length; k++)
            {
                var err = Math.Abs(got[k] - want[k]);
                maxAbs = Math.Max(maxAbs, err);
                Assert.True(err <= 1e-4 + 1e-3 * Math.Abs(want[k]), $"{ps[i].Name}[{k}]: {got[k]} vs torch {want[k]}");
            }
        }
        output.WriteLine($"PARITY adamw3{(optimizerGraph ? " (optimizer graph)" : "")} parameters max_abs={maxAbs:E2}");
    }
}
