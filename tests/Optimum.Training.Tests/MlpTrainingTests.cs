using System.IO.Compression;
using Microsoft.ML.OnnxRuntime;
using Optimum.Core;
using Optimum.Data;
using Optimum.Hub;
using Optimum.Tests;
using Xunit;

namespace Optimum.Training.Tests;

/// <summary>The digits MLP through the same trainer as every other kind (the first demo's numbers: loss halves, accuracy above 85%).</summary>
public sealed class MlpTrainingTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private TrainResult Train(string name) => TrainingJob.Run(new TrainingJobOptions(new TrainerOptions
    {
        ModelDir = Repo.Path("models", "mlp-digits"), OutputDir = Path.Combine(_dir, name), Steps = 180, BatchSize = 32, Lr = 0.05, Warmup = 0,
        Schedule = ScheduleKind.Constant, ClipNorm = 0, EvalEvery = 60, EvalSamples = 0, SaveEvery = 0, Seed = 0,
        Optimizer = new OptimizerConfig { Kind = OptimizerKind.Sgd, Momentum = 0.9, WeightDecay = 0 }, Session = new SessionSettings { IntraOpThreads = 1 },
    }, [Repo.Path("samples", "data", "digits.csv.gz")], ValidationFraction: 0.2));

    [Fact]
    public void Mlp_LearnsTheDigitsThroughTheTrainer()
    {
        var r = Train("a");                                                        // 180 steps of 32 = 4 epochs of the 1,438 training digits
        Assert.True(r.Evals[^1].ValidationLoss < 0.5 * r.Evals[0].ValidationLoss, $"validation loss {r.Evals[0].ValidationLoss:F3} -> {r.Evals[^1].ValidationLoss:F3}");
        double accuracy = Accuracy(Path.Combine(_dir, "a", "final"), new DigitsData(Digits.Load(Repo.Path("samples", "data", "digits.csv.gz")), 0.2).Validation);
        Assert.True(accuracy > 0.85, $"validation accuracy {accuracy:P1}");          // chance is 10%
        Assert.Equal([0x89, 0x50, 0x4E, 0x47], File.ReadAllBytes(Path.Combine(_dir, "a", "loss.png")).Take(4));
        Assert.Equal(r.History.Select(h => h.Loss), Train("b").History.Select(h => h.Loss));   // seeded: same run, same numbers
    }

    [Fact]
    public void Digits_LoadsAllRowsAndRefusesMalformedOnes()
    {
        var d = Digits.Load(Repo.Path("samples", "data", "digits.csv.gz"));
        Assert.Equal(1797, d.Count);
        Assert.Equal(1797 * 64, d.Pixels.Length);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => (long)i), d.Labels.Distinct().Order());
        var (train, val) = d.Split(0.2, 0);
        Assert.Equal((1438, 359), (train.Count, val.Count));

        var bad = Path.Combine(_dir, "bad.csv.gz");
        using (var gz = new GZipStream(File.Create(bad), CompressionLevel.Fastest))
        using (var w = new StreamWriter(gz))
            w.Write(string.Join(",", Enumerable.Repeat("0", 65)) + "\n" + string.Join(",", Enumerable.Repeat("3", 64)) + ",12\n");
        var e = Assert.Throws<InvalidDataException>(() => Digits.Load(bad));
        Assert.Contains("bad.csv.gz:2: field 65 is '12'", e.Message);
        Assert.Throws<FileNotFoundException>(() => Digits.Load(Path.Combine(_dir, "missing.csv.gz")));
    }

    /// <summary>Share of <paramref name="data"/> whose largest logit of the folder's eval graph is the label.</summary>
    private static double Accuracy(string modelDir, Digits data)
    {
        var ps = ModelFolder.ReadParameters(modelDir);
        var weights = HfWeights.Load(Path.Combine(modelDir, ModelFolder.WeightsFile), ps, out _);
        using var session = new InferenceSession(Path.Combine(modelDir, ModelFolder.EvalFile));
        var inputs = new Dictionary<string, OrtValue>
        {
            ["pixels"] = OrtValue.CreateTensorValueFromMemory(data.Pixels, [data.Count, Digits.Features]),
            ["labels"] = OrtValue.CreateTensorValueFromMemory(data.Labels, [data.Count]),
        };
        for (int i = 0; i < ps.Count; i++) inputs[ps[i].Name] = OrtValue.CreateTensorValueFromMemory(weights[i], ps[i].Shape);
        try
        {
            using var run = new RunOptions();
            using var outs = session.Run(run, inputs, ["logits"]);
            var logits = outs[0].GetTensorDataAsSpan<float>();
            int correct = 0;
            for (int r = 0; r < data.Count; r++)
            {
                var row = logits.Slice(r * 10, 10);
                int best = 0;
                for (int k = 1; k < 10; k++) if (row[k] > row[best]) best = k;
                if (best == data.Labels[r]) correct++;
            }
            return correct / (double)data.Count;
        }
        finally { foreach (var v in inputs.Values) v.Dispose(); }
    }
}
