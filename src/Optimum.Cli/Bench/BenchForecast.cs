using Optimum.Core;
using Optimum.Hub;
using Optimum.Inference.Forecasting;
using Optimum.Models;
using Optimum.Training;
using Optimum.Data;

namespace Optimum.Cli;

/// <summary>
/// <c>optimum-net bench forecast</c>: for Informer and the Time Series Transformer at the unemployment
/// sample's size (context 12, horizon 12, 13 lags up to 25, d_model 32, 2+2 layers), training windows/s
/// (a step is forward + backward + AdamW on a batch of monthly windows) and forecast latency in ms per
/// series for the sample paths, one series per call (after --warmup calls, each of the 14 series once)
/// and all 14 series in one call (after --warmup such calls, once).
/// </summary>
public static class BenchForecast
{
    public static int Run(BenchRun run, string models, int batch, int samples, TextWriter output)
    {
        var kinds = models switch
        {
            "both" => new[] { "informer", "time_series_transformer" },
            "informer" => ["informer"],
            "tst" => ["time_series_transformer"],
            _ => throw new ArgumentException($"--model must be informer, tst or both, not '{models}'."),
        };
        var report = new BenchReport(run.Json, output);
        var series = TimeSeriesFiles.ReadVegaUnemployment(Path.Combine("samples", "data", "unemployment-across-industries.json"));
        foreach (var kind in kinds)
        {
            var cfg = TimeSeriesConfig.Monthly(kind, series.Count);
            var dir = Path.Combine(run.WorkDir, $"{kind}-bench");
            ModelKinds.WritePreset(dir, cfg);
            var ps = ModelFolder.ReadParameters(dir);
            var weights = ModelKinds.Initialize(ps, cfg, 0);
            var data = new TimeSeriesWindows(series, cfg.ContextLength, cfg.PredictionLength, cfg.LagsSequence, 12, cfg.ContextLength, true);
            using var store = new ParameterStore(ps);
            store.Load(weights);
            using var session = new TrainingSession(dir, store, run.Session($"{kind}-profile"));
            using var adam = Optimizer.Create(store, new OptimizerConfig());
            var b = new Batch();
            var rng = new Random(0);
            var train = StepTimes.Measure(run.Warmup, run.Steps, s =>
            {
                data.FillTrain(Enumerable.Range(0, batch).Select(_ => rng.Next((int)data.TrainSamples)).ToArray(), b);
                session.TrainStep(b, s);
            }, s => adam.Step(s + 1, 1e-3));
            if (run.Profile) OrtProfile.Report(report, run, session.EndProfiling(), run.Warmup + run.Steps, "step");

            using var forecaster = new Forecaster(dir, weights, run.Session());
            var inputs = series.Select((s, i) => new SeriesInput { Values = s.Values[..^12], Start = s.Start, StaticCategorical = [i] }).ToArray();
            var options = new ForecastOptions { Samples = samples };
            var one = StepTimes.Measure(run.Warmup, inputs.Length, i => forecaster.Predict([inputs[i % inputs.Length]], options));
            var all = StepTimes.Measure(run.Warmup, 1, _ => forecaster.Predict(inputs, options));
            var r = new Dictionary<string, object>
            {
                ["model"] = kind, ["parameters"] = ps.Where(p => p.Trainable).Sum(p => p.Count), ["d_model"] = cfg.DModel, ["context"] = cfg.ContextLength,
                ["horizon"] = cfg.PredictionLength, ["batch"] = batch, ["threads"] = run.Threads,
            };
            train.AddTo(r);
            r["optimizer_ms"] = train.PhaseMean(1) * 1000;
            r["train_windows_per_s"] = batch / train.Mean;
            r["sample_paths"] = samples;
            r["forecast_ms_per_series"] = one.Mean * 1000;
            r["forecast_median_ms_per_series"] = one.Median * 1000;
            r[$"forecast_ms_per_series_batch{inputs.Length}"] = all.Mean * 1000 / inputs.Length;
            report.AddSpeed("forecast", r);
        }
        report.Print();
        return 0;
    }
}
