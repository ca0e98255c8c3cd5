using Optimum.Plots;
using Optimum.Hub;
using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Optimum.Models;
using Optimum.Onnx;
using Optimum.Core;
using Optimum.Data;

namespace Optimum.Cli;

/// <summary>Options of <c>optimum-net train-mlp</c>.</summary>
internal sealed record MlpDemoOptions(string Model, string Data, string Out, int Epochs, int BatchSize, float Lr, float Momentum, int Seed);

/// <summary>
/// The bundled main job for now: trains the digits MLP from its emitted training graph on stock
/// ONNX Runtime with SGD + momentum, evaluates with the eval graph each epoch, and plots the losses.
/// Parameters and gradients are managed arrays bound once to the session (no per-step copies).
/// </summary>
internal static class MlpDemo
{
    public static int Run(MlpDemoOptions o, TextWriter log)
    {
        Train(o, log);
        return 0;
    }

    /// <summary>Trains and returns (train loss, validation loss, validation accuracy) per epoch.</summary>
    public static IReadOnlyList<(double Train, double Val, double Acc)> Train(MlpDemoOptions o, TextWriter log)
    {
        if (o.Epochs < 1 || o.BatchSize < 1 || o.Lr <= 0 || o.Momentum is < 0 or >= 1)
            throw new ArgumentException($"Invalid options: epochs {o.Epochs}, batch size {o.BatchSize}, lr {o.Lr}, momentum {o.Momentum}.");
        var parameters = Artifacts.ReadParameters(o.Model);
        var (train, val) = Digits.Load(o.Data).Split(0.2, seed: 0);
        if (train.Count < o.BatchSize) throw new ArgumentException($"Batch size {o.BatchSize} exceeds the {train.Count} training examples.");
        log.WriteLine($"model {o.Model}: {parameters.Count} parameter tensors, {parameters.Sum(p => p.Count):N0} weights; data {train.Count} train / {val.Count} validation digits");

        var weights = Mlp.Initialize(parameters, o.Seed);
        var grads = parameters.Select(p => new float[p.Count]).ToArray();
        var velocity = parameters.Select(p => new float[p.Count]).ToArray();
        var loss = new float[1];
        var batchPixels = new float[o.BatchSize * Digits.Features];
        var batchLabels = new long[o.BatchSize];

        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        using var trainSession = new InferenceSession(Path.Combine(o.Model, Artifacts.TrainingFile), options);
        using var evalSession = new InferenceSession(Path.Combine(o.Model, Artifacts.EvalFile), options);
        var owned = new List<OrtValue>();
        OrtValue View<T>(T[] data, params long[] shape) where T : unmanaged
        {
            var v = OrtValue.CreateTensorValueFromMemory(data, shape);
            owned.Add(v);
            return v;
        }
        using var binding = trainSession.CreateIoBinding();
        using var runOptions = new RunOptions();
        try
        {
            binding.BindInput("pixels", View(batchPixels, o.BatchSize, Digits.Features));
            binding.BindInput("labels", View(batchLabels, o.BatchSize));
            for (int i = 0; i < parameters.Count; i++)
            {
                binding.BindInput(parameters[i].Name, View(weights[i], parameters[i].Shape));
                binding.BindOutput(TrainingGraph.GradPrefix + parameters[i].Name, View(grads[i], parameters[i].Shape));
            }
            binding.BindOutput("loss", View(loss));

            var rng = new Random(o.Seed);
            var order = Enumerable.Range(0, train.Count).ToArray();
            var history = new List<(double Train, double Val, double Acc)>();
            int steps = train.Count / o.BatchSize;
            var clock = Stopwatch.StartNew();
            for (int epoch = 1; epoch <= o.Epochs; epoch++)
            {
                rng.Shuffle(order);
                double sum = 0;
                var t0 = clock.Elapsed;
                for (int s = 0; s < steps; s++)
                {
                    for (int b = 0; b < o.BatchSize; b++)
                    {
                        int row = order[s * o.BatchSize + b];
                        Array.Copy(train.Pixels, row * Digits.Features, batchPixels, b * Digits.Features, Digits.Features);
                        batchLabels[b] = train.Labels[row];
                    }
                    trainSession.RunWithBinding(runOptions, binding);
                    if (!float.IsFinite(loss[0])) throw new InvalidOperationException($"Loss became {loss[0]} at epoch {epoch}, step {s}; lower --lr.");
                    sum += loss[0];
                    for (int i = 0; i < weights.Length; i++)
                        SgdMomentum(weights[i], grads[i], velocity[i], o.Lr, o.Momentum);
                }
                var rate = steps * o.BatchSize / (clock.Elapsed - t0).TotalSeconds;
                var (valLoss, acc) = Evaluate(evalSession, parameters, weights, val);
                history.Add((sum / steps, valLoss, acc));
                log.WriteLine($"epoch {epoch,3}/{o.Epochs}  train_loss {sum / steps:F4}  val_loss {valLoss:F4}  val_acc {acc:P1}  {rate,9:N0} samples/s");
            }
            Directory.CreateDirectory(o.Out);
            var png = Path.Combine(o.Out, "loss.png");
            Plot.Losses(history, png);
            log.WriteLine($"loss curve: {png}");
            return history;
        }
        finally
        {
            foreach (var v in owned) v.Dispose();
        }
    }

    /// <summary>v = mu*v + g; w -= lr*v (PyTorch's SGD with momentum, no dampening), one pass.</summary>
    private static void SgdMomentum(Span<float> w, ReadOnlySpan<float> g, Span<float> v, float lr, float mu)
    {
        for (int k = 0; k < w.Length; k++)
        {
            v[k] = mu * v[k] + g[k];
            w[k] -= lr * v[k];
        }
    }

    private static (double Loss, double Accuracy) Evaluate(InferenceSession eval, IReadOnlyList<ParameterInfo> ps, float[][] weights, Digits data)
    {
        var inputs = new Dictionary<string, OrtValue>
        {
            ["pixels"] = OrtValue.CreateTensorValueFromMemory(data.Pixels, [data.Count, Digits.Features]),
            ["labels"] = OrtValue.CreateTensorValueFromMemory(data.Labels, [data.Count]),
        };
        for (int i = 0; i < ps.Count; i++) inputs[ps[i].Name] = OrtValue.CreateTensorValueFromMemory(weights[i], ps[i].Shape);
        try
        {
            using var run = new RunOptions();
            using var outs = eval.Run(run, inputs, ["loss", "logits"]);
            var logits = outs[1].GetTensorDataAsSpan<float>();
            int classes = logits.Length / data.Count, correct = 0;
            for (int r = 0; r < data.Count; r++)
            {
                var row = logits.Slice(r * classes, classes);
                int best = 0;
                for (int k = 1; k < classes; k++) if (row[k] > row[best]) best = k;
                if (best == data.Labels[r]) correct++;
            }
            return (outs[0].GetTensorDataAsSpan<float>()[0], correct / (double)data.Count);
        }
        finally
        {
            foreach (var v in inputs.Values) v.Dispose();
        }
    }
}
