// Probabilistic forecasting of the 14 monthly US unemployment series (vega-datasets, BLS, 2000-01..2010-02):
// trains an Informer (ProbSparse attention, distilling) or a Time Series Transformer from its emitted ONNX
// training graph on windows sampled across series and time, then backtests the last 12 months: 100 sample
// paths per series, MASE, sMAPE, CRPS and weighted quantile loss as GluonTS defines them, against the
// seasonal-naive forecast (the same month a year before), and one PNG per series.
// Usage: dotnet run -c Release --project samples/Unemployment [-- --model informer|tst --steps N --context N --seed N --out DIR]
using System.Globalization;
using System.Text.Json;
using Optimum.Inference.Forecasting;
using Optimum.Models;
using Optimum.Training;
using Optimum.Data;
using Optimum.Core;

string kind = "informer", outDir = "out/unemployment";
long steps = 800;
int context = 12, seed = 0;
for (int i = 0; i + 1 < args.Length; i += 2)
{
    if (args[i] == "--steps") steps = long.Parse(args[i + 1], CultureInfo.InvariantCulture);
    else if (args[i] == "--out") outDir = args[i + 1];
    else if (args[i] == "--seed") seed = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
    else if (args[i] == "--context") context = int.Parse(args[i + 1], CultureInfo.InvariantCulture);
    else if (args[i] == "--model" && args[i + 1] is "informer" or "tst") kind = args[i + 1];
    else { Console.Error.WriteLine($"error: unknown option {args[i]} {args[i + 1]} (use --model informer|tst, --steps N, --context N, --seed N, --out DIR)"); return 2; }
}

const int Horizon = 12, Season = 12;             // TimeSeriesConfig.Monthly forecasts 12 months
var all = TimeSeriesFiles.ReadVegaUnemployment("samples/data/unemployment-across-industries.json");
// Training windows end before the backtest's last 12 months (the trainer's holdout); its validation windows
// forecast exactly those months, so the validation loss is the backtest's NLL. Nothing selects on it.
Directory.CreateDirectory(outDir);
var trainFile = Path.Combine(outDir, "series.csv");
File.WriteAllLines(trainFile, ["series,month,value", .. all.SelectMany(s => s.Values.Select((v, k) =>
    $"{s.Name},{s.Start.AddMonths(k).ToString("yyyy-MM", CultureInfo.InvariantCulture)},{(float.IsNaN(v) ? "" : v.ToString(CultureInfo.InvariantCulture))}"))]);

var cfg = TimeSeriesConfig.Monthly(kind == "tst" ? "time_series_transformer" : "informer", all.Count, context);
var modelDir = Path.Combine(outDir, "model");
ModelKinds.Write(modelDir, cfg);
Console.WriteLine($"{all.Count} series x {all[0].Values.Length} months ({M(all[0].Start)}..{M(all[0].Start.AddMonths(all[0].Values.Length - 1))}); {cfg.ModelType}, backtest on the last {Horizon} months");

var options = new TrainerOptions
{
    ModelDir = modelDir, OutputDir = outDir, Steps = steps, BatchSize = 64, Lr = 1e-3, Warmup = Math.Min(50, steps), Schedule = ScheduleKind.Cosine,
    ClipNorm = 1, EvalEvery = (int)Math.Max(1, steps / 6), EvalSamples = 0, SaveEvery = 0, Seed = seed,
    Optimizer = new OptimizerConfig { WeightDecay = 0.01 },
    // A model this small runs faster on one ONNX Runtime thread than on two (measured by bench forecast).
    Session = new SessionSettings { IntraOpThreads = 1 },
    Overwrite = true,                                   // a second run trains again from scratch (the model folder and data are kept)
};
try
{
    if (TrainingJob.Run(new TrainingJobOptions(options, [trainFile]), Console.Out).Interrupted) return 130;
}
catch (Exception e) when (ExpectedErrors.Are(e)) { Console.Error.WriteLine($"error: {e.Message}"); return 1; }

// Forecast the held-back months from what precedes them: forecasts.csv, a PNG per series, scores against seasonal naive.
var run = SeriesForecast.Run(new SeriesForecastOptions
{
    ModelDir = Path.Combine(outDir, "final"), Data = trainFile, OutDir = outDir, Samples = 100, Quantiles = [.. ForecastMetrics.DefaultQuantiles],
    Backtest = Horizon, Season = Season, Settings = new SessionSettings { IntraOpThreads = 1 }, Title = $"unemployed (thousands), {cfg.ModelType} 10-90% band",
});
var (model, naive, m, b) = run.Backtest!;
Console.WriteLine();
Console.WriteLine($"backtest {M(all[0].Start.AddMonths(all[0].Values.Length - Horizon))}..{M(all[0].Start.AddMonths(all[0].Values.Length - 1))}, 14 series, 100 paths:");
Console.WriteLine($"  {"",-16} {"MASE",8} {"sMAPE",8} {"CRPS",8} {"mean wQL",9}");
Console.WriteLine($"  {cfg.ModelType,-16} {m.Mase,8:F3} {m.Smape,8:F3} {m.Crps,8:F3} {m.MeanWeightedQuantileLoss,9:F3}");
Console.WriteLine($"  {"seasonal naive",-16} {b.Mase,8:F3} {b.Smape,8:F3} {b.Crps,8:F3} {b.MeanWeightedQuantileLoss,9:F3}");

Console.WriteLine($"  per series (MASE model / naive): " + string.Join(", ", all.Select((s, i) =>
{
    double se = ForecastMetrics.SeasonalError(model[i].History, Season);
    return $"{s.Name} {ForecastMetrics.Mase(model[i].Actual, run.Forecasts[i].Median, se):F1}/{ForecastMetrics.Mase(naive[i].Actual, naive[i].Samples[0], se):F1}";
})));
var plots = Path.Combine(outDir, "forecasts");
var results = new
{
    model = cfg.ModelType, steps, horizon = Horizon, samples = 100,
    metrics = new { mase = m.Mase, smape = m.Smape, crps = m.Crps, mean_wql = m.MeanWeightedQuantileLoss },
    seasonal_naive = new { mase = b.Mase, smape = b.Smape, crps = b.Crps, mean_wql = b.MeanWeightedQuantileLoss },
};
File.WriteAllText(Path.Combine(outDir, "backtest.json"), JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true }) + "\n");
Console.WriteLine($"plots: {plots}/ (one PNG per series); metrics: {Path.Combine(outDir, "backtest.json")}; loss curve: {Path.Combine(outDir, "loss.png")}");
bool beats = m.Mase < b.Mase && m.Crps < b.Crps;
Console.WriteLine(beats ? "the model beats seasonal naive on MASE and CRPS" : "warning: the model does not beat seasonal naive on both MASE and CRPS");
return 0;

static string M(DateTime t) => t.ToString("yyyy-MM", CultureInfo.InvariantCulture);
