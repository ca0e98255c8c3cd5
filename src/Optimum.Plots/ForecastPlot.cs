namespace Optimum.Plots;

/// <summary>PNG charts of probabilistic forecasts.</summary>
public static class ForecastPlot
{
    /// <summary>
    /// One series and its forecast as a 900x540 PNG, written atomically: the history as a line, the median forecast as a
    /// line over a shaded band from <paramref name="lower"/> to <paramref name="upper"/>, the observed values over the
    /// horizon as markers when <paramref name="actuals"/> is given, dates on the bottom axis and a legend.
    /// </summary>
    /// <param name="path">The PNG to write; replaced if it exists.</param>
    /// <param name="title">Chart title.</param>
    /// <param name="historyTimes">Time of each history value.</param>
    /// <param name="history">Observed values before the horizon; NaN for missing.</param>
    /// <param name="futureTimes">Time of each forecast step.</param>
    /// <param name="median">Median forecast, one per forecast step.</param>
    /// <param name="lower">Lower edge of the band, one per forecast step.</param>
    /// <param name="upper">Upper edge of the band, one per forecast step.</param>
    /// <param name="actuals">Observed values over the horizon, when known.</param>
    /// <param name="bandLabel">Legend text of the band.</param>
    public static void Save(string path, string title, DateTime[] historyTimes, float[] history, DateTime[] futureTimes,
        float[] median, float[] lower, float[] upper, float[]? actuals, string bandLabel = "10–90%")
    {
        SameLength(history.Length, historyTimes.Length, nameof(history), nameof(historyTimes));
        if (futureTimes.Length == 0) throw new ArgumentException("The forecast horizon is empty.", nameof(futureTimes));
        SameLength(median.Length, futureTimes.Length, nameof(median), nameof(futureTimes));
        SameLength(lower.Length, futureTimes.Length, nameof(lower), nameof(futureTimes));
        SameLength(upper.Length, futureTimes.Length, nameof(upper), nameof(futureTimes));
        if (actuals is not null) SameLength(actuals.Length, futureTimes.Length, nameof(actuals), nameof(futureTimes));

        var plt = new ScottPlot.Plot();
        double[] hx = historyTimes.Select(t => t.ToOADate()).ToArray();
        double[] fx = futureTimes.Select(t => t.ToOADate()).ToArray();

        var band = plt.Add.FillY(fx, ToDouble(lower), ToDouble(upper));
        band.FillColor = ScottPlot.Colors.C1.WithAlpha(0.3);
        band.LineWidth = 0;
        band.LegendText = bandLabel;

        if (history.Length > 0)
        {
            var h = plt.Add.Scatter(hx, ToDouble(history));
            h.LegendText = "history";
            h.Color = ScottPlot.Colors.C0;
            h.MarkerSize = 0;
            h.LineWidth = 1.5f;
        }

        var m = plt.Add.Scatter(fx, ToDouble(median));
        m.LegendText = "median forecast";
        m.Color = ScottPlot.Colors.C1;
        m.MarkerSize = 0;
        m.LineWidth = 2;

        if (actuals is not null)
        {
            var a = plt.Add.Scatter(fx, ToDouble(actuals));
            a.LegendText = "actual";
            a.Color = ScottPlot.Colors.Black;
            a.LineWidth = 0;
            a.MarkerSize = 6;
        }

        plt.Axes.DateTimeTicksBottom();
        plt.Title(title);
        plt.ShowLegend(ScottPlot.Alignment.UpperLeft);
        Plot.Save(plt, path);
    }

    private static double[] ToDouble(float[] xs) => Array.ConvertAll(xs, x => (double)x);

    private static void SameLength(int length, int expected, string name, string times)
    {
        if (length != expected)
            throw new ArgumentException($"{name} has {length} values but {times} has {expected}; they must match.", name);
    }
}
