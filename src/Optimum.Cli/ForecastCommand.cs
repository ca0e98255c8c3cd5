using System.Globalization;
using Optimum.Inference.Forecasting;
using Optimum.Training;
using Optimum.Data;
using Optimum.Core;

namespace Optimum.Cli;

/// <summary>A backtest: each series with its actuals and the model's samples, the same with seasonal naive's forecast, and both scores.</summary>
public sealed record Backtest(ForecastSeries[] Model, ForecastSeries[] Naive, ForecastScores ModelScores, ForecastScores NaiveScores);

/// <summary>What <see cref="ForecastCommand.Execute"/> forecast: the file's series, their forecasts, the backtest when there was one.</summary>
public sealed record ForecastRun(IReadOnlyList<TimeSeries> Series, IReadOnlyList<Forecast> Forecasts, Backtest? Backtest);

/// <summary>
/// <c>optimum-net forecast</c>: sample paths for every series of a .csv/.json file from a trained
/// TimeSeriesTransformer or Informer folder; writes forecasts.csv (mean, median and quantiles per step),
/// one PNG per series, and with <c>--backtest K</c> forecasts the last K points from what precedes them and
/// reports MASE, sMAPE, CRPS and weighted quantile loss against the seasonal-naive forecast.
/// </summary>
public static class ForecastCommand
{
    public static int Run(string modelDir, string data, string outDir, int? horizon, int samples, double[] quantiles, long seed, int backtest, int season, TextWriter output)
    {
        Execute(modelDir, data, outDir, horizon, samples, quantiles, seed, backtest, season, output);
        return 0;
    }

    /// <summary>
    /// What <see cref="Run"/> does, returning the series, their forecasts and, with a backtest, the scored
    /// series and scores of the model and of seasonal naive. <paramref name="title"/> names what is plotted.
    /// </summary>
    public static ForecastRun Execute(string modelDir, string data, string outDir, int? horizon, int samples, double[] quantiles, long seed, int backtest, int season,
        TextWriter output, SessionSettings? settings = null, string title = "median and 10-90% band")
    {
        using var forecaster = new Forecaster(modelDir, settings: settings);
        var series = TimeSeriesFiles.Read(data);
        int h = horizon ?? (backtest > 0 ? backtest : forecaster.PredictionLength);
        if (backtest > 0 && backtest != h) throw new ArgumentException($"--backtest {backtest} and --horizon {h} differ; a backtest forecasts exactly the points it holds back.");
        if (forecaster.StaticCategoricalCount > 1 || forecaster.StaticRealCount > 0)
            throw new InvalidDataException($"{modelDir}: the model wants static features a series file does not carry (beyond the series index).");
        if (backtest < 0) throw new ArgumentException($"--backtest must be >= 0, got {backtest}.");
        if (backtest > 0 && series.FirstOrDefault(s => s.Values.Length - backtest < forecaster.MinHistory) is { } tooShort)
            throw new ArgumentException($"--backtest {backtest} leaves series '{tooShort.Name}' ({tooShort.Values.Length} points) less than the {forecaster.MinHistory} points of history the model needs.");
        // The series index the model was trained with, by name (series.json), else the file's order.
        var names = SeriesIds.Load(modelDir);
        long Id(int i) => names is null ? i : Array.IndexOf(names, series[i].Name) is var k and >= 0 ? k
            : throw new InvalidDataException($"Series '{series[i].Name}' of {data} is not one the model was trained on ({SeriesIds.File} in {modelDir} lists {names.Length}).");
        var levels = quantiles.Append(0.1).Append(0.9).Distinct().Order().ToArray();
        var inputs = series.Select((s, i) => new SeriesInput
        {
            Values = s.Values[..(s.Values.Length - backtest)],
            Start = s.Start,
            StaticCategorical = forecaster.StaticCategoricalCount == 1 ? [Id(i)] : null,
        }).ToArray();
        var forecasts = forecaster.Predict(inputs, new ForecastOptions { Samples = samples, Quantiles = levels, Horizon = h, Seed = seed });
        Directory.CreateDirectory(outDir);
        var rows = new List<string> { "series,month,mean,median," + string.Join(",", levels.Select(q => "q" + q.ToString(CultureInfo.InvariantCulture))) + (backtest > 0 ? ",actual" : "") };
        var plots = Path.Combine(outDir, "forecasts");
        Directory.CreateDirectory(plots);
        for (int i = 0; i < series.Count; i++)
        {
            var s = series[i];
            var f = forecasts[i];
            int n = inputs[i].Values.Length;
            for (int k = 0; k < h; k++)
                rows.Add(string.Join(",", [s.Name, s.Start.AddMonths(n + k).ToString("yyyy-MM", CultureInfo.InvariantCulture), F(f.Mean[k]), F(f.Median[k]),
                    .. levels.Select(q => F(f.Quantiles[q][k])), .. backtest > 0 ? [F(s.Values[n + k])] : Array.Empty<string>()]));
            int shown = Math.Min(n, 4 * h);
            ForecastPlot.Save(Path.Combine(plots, $"{i:D2}-{string.Concat(s.Name.Where(char.IsLetterOrDigit))}.png"), $"{s.Name}: {title}",
                Enumerable.Range(n - shown, shown).Select(k => s.Start.AddMonths(k)).ToArray(), s.Values[(n - shown)..n],
                Enumerable.Range(n, h).Select(k => s.Start.AddMonths(k)).ToArray(), f.Median, f.Quantiles[0.1], f.Quantiles[0.9], backtest > 0 ? s.Values[n..] : null);
        }
        var csv = Path.Combine(outDir, "forecasts.csv");
        Optimum.Core.AtomicFile.Write(csv, System.Text.Encoding.UTF8.GetBytes(string.Join("\n", rows) + "\n"));
        output.WriteLine($"{series.Count} series, {h} steps, {samples} paths: {csv}, {plots}/");
        if (backtest == 0) return new ForecastRun(series, forecasts, null);
        var model = series.Select((s, i) => new ForecastSeries(inputs[i].Values, s.Values[^backtest..], forecasts[i].Samples)).ToArray();
        var naive = series.Select((s, i) => new ForecastSeries(inputs[i].Values, s.Values[^backtest..], [Filled(TimeSeriesBaselines.SeasonalNaive(inputs[i].Values, h, season), inputs[i].Values)])).ToArray();
        var m = ForecastMetrics.Evaluate(model, season);
        var b = ForecastMetrics.Evaluate(naive, season);
        output.WriteLine($"backtest of the last {backtest} points: MASE {m.Mase:F3} (seasonal naive {b.Mase:F3}), sMAPE {m.Smape:F3} ({b.Smape:F3}), CRPS {m.Crps:F3} ({b.Crps:F3}), mean wQL {m.MeanWeightedQuantileLoss:F3} ({b.MeanWeightedQuantileLoss:F3})");
        return new ForecastRun(series, forecasts, new Backtest(model, naive, m, b));
    }

    /// <summary>Seasonal naive with a missing source value falls back to the last observed value.</summary>
    private static float[] Filled(float[] forecast, float[] history)
    {
        float last = history.LastOrDefault(v => !float.IsNaN(v));
        return forecast.Select(v => float.IsNaN(v) ? last : v).ToArray();
    }

    private static string F(float v) => float.IsNaN(v) ? "" : v.ToString("R", CultureInfo.InvariantCulture);
}
