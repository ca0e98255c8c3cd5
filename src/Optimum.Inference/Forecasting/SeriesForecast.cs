using System.Globalization;
using Optimum.Core;
using Optimum.Data;
using Optimum.Plots;

namespace Optimum.Inference.Forecasting;

/// <summary>A backtest: each series with its actuals and the model's samples, the same with seasonal naive's forecast, and both scores.</summary>
public sealed record Backtest(ForecastSeries[] Model, ForecastSeries[] Naive, ForecastScores ModelScores, ForecastScores NaiveScores);

/// <summary>What <see cref="SeriesForecast.Run"/> forecast: the file's series, their forecasts, the backtest when there was one.</summary>
public sealed record ForecastRun(IReadOnlyList<TimeSeries> Series, IReadOnlyList<Forecast> Forecasts, Backtest? Backtest);

/// <summary>What <see cref="SeriesForecast.Run"/> forecasts and writes.</summary>
public sealed record SeriesForecastOptions
{
    /// <summary>A trained TimeSeriesTransformer or Informer model folder.</summary>
    public required string ModelDir { get; init; }
    /// <summary>A series file: .csv (series,month,value) or vega's .json.</summary>
    public required string Data { get; init; }
    /// <summary>Receives forecasts.csv and forecasts/*.png.</summary>
    public required string OutDir { get; init; }
    /// <summary>Steps ahead (null = the backtest length, or the model's prediction_length).</summary>
    public int? Horizon { get; init; }
    public int Samples { get; init; } = 100;
    public IReadOnlyList<double> Quantiles { get; init; } = [0.1, 0.5, 0.9];
    public long Seed { get; init; }
    /// <summary>Hold back the last K points, forecast them and score against seasonal naive (0 = forecast the future).</summary>
    public int Backtest { get; init; }
    /// <summary>Season length for MASE and seasonal naive.</summary>
    public int Season { get; init; } = 12;
    public SessionSettings? Settings { get; init; }
    /// <summary>What the plots show, after the series name.</summary>
    public string Title { get; init; } = "median and 10-90% band";
}

/// <summary>
/// Forecasts of every series of a file from a trained time-series model folder: forecasts.csv (mean, median and
/// quantiles per step), one PNG per series, and with a backtest the last K points forecast from what precedes
/// them, scored (MASE, sMAPE, CRPS, weighted quantile loss) against the seasonal-naive forecast.
/// </summary>
public static class SeriesForecast
{
    /// <summary>
    /// Forecasts (and backtests) the file's series; returns them, their forecasts and, with a backtest, the scored
    /// series and scores of the model and of seasonal naive. <paramref name="output"/> gets a summary.
    /// </summary>
    public static ForecastRun Run(SeriesForecastOptions o, TextWriter? output = null)
    {
        output ??= TextWriter.Null;
        var (modelDir, data, outDir, horizon, samples, quantiles, seed, backtest, season, settings, title) =
            (o.ModelDir, o.Data, o.OutDir, o.Horizon, o.Samples, o.Quantiles, o.Seed, o.Backtest, o.Season, o.Settings, o.Title);
        using var forecaster = new Forecaster(modelDir, settings: settings);
        var series = TimeSeriesFiles.Read(data);
        int h = horizon ?? (backtest > 0 ? backtest : forecaster.PredictionLength);
        if (backtest > 0 && backtest != h) throw new ArgumentException($"--backtest {backtest} and --horizon {h} differ; a backtest forecasts exactly the points it holds back.");
        if (forecaster.StaticCategoricalCount > 1 || forecaster.StaticRealCount > 0)
            throw new InvalidDataException($"{modelDir}: the model wants static features a series file does not carry (beyond the series index).");
        if (backtest < 0) throw new ArgumentException($"--backtest must be >= 0, got {backtest}.");
        // Everything is checked before the first file is written.
        if (season < 1) throw new ArgumentException($"--season must be at least 1 (a season of 1 is plain naive), got {season}.");
        if (quantiles.Count == 0 || quantiles.Any(q => !(q > 0 && q < 1)))
            throw new ArgumentException($"--quantiles must be levels in (0, 1), got [{string.Join(", ", quantiles.Select(q => q.ToString(CultureInfo.InvariantCulture)))}].");
        if (backtest > 0 && series.FirstOrDefault(s => s.Values.Length - backtest <= season) is { } noSeason)
            throw new ArgumentException($"--season {season} needs more than {season} points of history before the backtest; series '{noSeason.Name}' has {noSeason.Values.Length - backtest}.");
        if (backtest > 0 && series.FirstOrDefault(s => s.Values.Length - backtest < forecaster.MinHistory) is { } tooShort)
            throw new ArgumentException($"--backtest {backtest} leaves series '{tooShort.Name}' ({tooShort.Values.Length} points) less than the {forecaster.MinHistory} points of history the model needs.");
        // The series index the model was trained with, by name (series.json), else the file's order.
        var names = SeriesIds.Load(modelDir);
        long Id(int i) => names is null ? i : Array.IndexOf(names, series[i].Name) is var k and >= 0 ? k
            : throw new InvalidDataException($"Series '{series[i].Name}' of {data} is not one the model was trained on ({SeriesIds.File} in {modelDir} lists {names.Length}).");
        // The levels asked for are reported; the plots' 80% band needs 0.1 and 0.9 whether asked for or not.
        var levels = quantiles.Distinct().Order().ToArray();
        double[] band = [0.1, 0.9];
        var inputs = series.Select((s, i) => new SeriesInput
        {
            Values = s.Values[..(s.Values.Length - backtest)],
            Start = s.Start,
            StaticCategorical = forecaster.StaticCategoricalCount == 1 ? [Id(i)] : null,
        }).ToArray();
        var forecasts = forecaster.Predict(inputs, new ForecastOptions { Samples = samples, Quantiles = [.. levels.Union(band).Order()], Horizon = h, Seed = seed });
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
        AtomicFile.Write(csv, System.Text.Encoding.UTF8.GetBytes(string.Join("\n", rows) + "\n"));
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
