using System.Diagnostics;
using System.Text.Json;
using Optimum.Hub;
using Optimum.Inference.Forecasting;
using Optimum.Models;
using Optimum.Training;
using Optimum.Data;
using Optimum.Core;

namespace Optimum.Cli;

/// <summary>
/// <c>optimum-net bench forecast</c>: for Informer and the Time Series Transformer at the unemployment
/// sample's size (context 12, horizon 12, 13 lags up to 25, d_model 32, 2+2 layers), training windows/s
/// (forward + backward + AdamW on batches of monthly windows) and forecast latency in ms per series for
/// 100 sample paths, one series per call and 14 series per call.
/// </summary>
public static class BenchForecast
{
    public static int Run(string models, int batch, int threads, int steps, int samples, bool json, string workDir, TextWriter output)
    {
        var kinds = models switch
        {
            "both" => new[] { "informer", "time_series_transformer" },
            "informer" => ["informer"],
            "tst" => ["time_series_transformer"],
            _ => throw new ArgumentException($"--model must be informer, tst or both, not '{models}'."),
        };
        var series = TimeSeriesFiles.ReadVegaUnemployment(Path.Combine("samples", "data", "unemployment-across-industries.json"));
        foreach (var kind in kinds)
        {
            var cfg = TimeSeriesConfig.Monthly(kind, series.Count);
            var dir = Path.Combine(workDir, $"{kind}-bench");
            ModelKinds.WritePreset(dir, cfg);
            var ps = ModelFolder.ReadParameters(dir);
            var weights = ModelKinds.Initialize(ps, cfg, 0);
            var data = new TimeSeriesWindows(series, cfg.ContextLength, cfg.PredictionLength, cfg.LagsSequence, 12, cfg.ContextLength, true);
            using var store = new ParameterStore(ps);
            store.Load(weights);
            var settings = new SessionSettings { IntraOpThreads = threads };
            using var session = new TrainingSession(dir, store, settings);
            using var adam = Optimizer.Create(store, new OptimizerConfig());
            var b = new Batch();
            var rng = new Random(0);
            double seconds = 0;
            for (int s = 0; s < 3 + steps; s++)
            {
                var idx = Enumerable.Range(0, batch).Select(_ => rng.Next((int)data.TrainSamples)).ToArray();
                var t0 = Stopwatch.GetTimestamp();
                data.FillTrain(idx, b);
                session.TrainStep(b, s);
                adam.Step(s + 1, 1e-3);
                if (s >= 3) seconds += Stopwatch.GetElapsedTime(t0).TotalSeconds;
            }
            double windowsPerSecond = batch * steps / seconds;

            using var forecaster = new Forecaster(dir, weights, settings);
            var inputs = series.Select((s, i) => new SeriesInput { Values = s.Values[..^12], Start = s.Start, StaticCategorical = [i] }).ToArray();
            var options = new ForecastOptions { Samples = samples };
            forecaster.Predict(inputs[..1], options);
            var one = Stopwatch.StartNew();
            for (int i = 0; i < inputs.Length; i++) forecaster.Predict([inputs[i]], options);
            double msOne = one.Elapsed.TotalMilliseconds / inputs.Length;
            var all = Stopwatch.StartNew();
            forecaster.Predict(inputs, options);
            double msAll = all.Elapsed.TotalMilliseconds / inputs.Length;
            var r = new Dictionary<string, object>
            {
                ["bench"] = "forecast", ["model"] = kind, ["parameters"] = ps.Where(p => p.Trainable).Sum(p => p.Count), ["context"] = cfg.ContextLength,
                ["horizon"] = cfg.PredictionLength, ["batch"] = batch, ["threads"] = threads, ["train_windows_per_s"] = windowsPerSecond,
                ["train_step_ms"] = seconds / steps * 1000, ["sample_paths"] = samples, ["forecast_ms_per_series"] = msOne,
                ["forecast_ms_per_series_batch14"] = msAll,
            };
            if (json) output.WriteLine(JsonSerializer.Serialize(r));
            else output.WriteLine($"{kind} (d_model 32, 2+2 layers, context 12, horizon 12, {r["parameters"]:N0} params, {threads} threads):\n" +
                $"  training: {windowsPerSecond:N0} windows/s (batch {batch}, {seconds / steps * 1000:F1} ms/step incl. AdamW)\n" +
                $"  forecast, {samples} paths x 12 steps: {msOne:F1} ms per series one at a time, {msAll:F1} ms per series in a batch of {inputs.Length}");
        }
        return 0;
    }
}
