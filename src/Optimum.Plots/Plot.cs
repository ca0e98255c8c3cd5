namespace Optimum.Plots;

/// <summary>PNG charts of training runs.</summary>
public static class Plot
{
    /// <summary>Training loss per step (and its running mean) with validation losses; written atomically.</summary>
    public static void TrainingCurve(IReadOnlyList<(long Step, double Loss)> steps, IReadOnlyList<(long Step, double Loss)> evals, string path, string title)
    {
        var plt = new ScottPlot.Plot();
        var xs = steps.Select(m => (double)m.Step).ToArray();
        var ys = steps.Select(m => m.Loss).ToArray();
        var raw = plt.Add.Scatter(xs, ys);
        raw.LegendText = "train loss";
        raw.MarkerSize = 0;
        raw.LineWidth = 1;
        int w = Math.Max(1, steps.Count / 25);
        var smooth = ys.Select((_, i) => ys.Skip(Math.Max(0, i - w + 1)).Take(Math.Min(w, i + 1)).Average()).ToArray();
        var s = plt.Add.Scatter(xs, smooth);
        s.LegendText = $"train loss (mean of {w})";
        s.MarkerSize = 0;
        s.LineWidth = 2;
        if (evals.Count > 0)
        {
            var v = plt.Add.Scatter(evals.Select(e => (double)e.Step).ToArray(), evals.Select(e => e.Loss).ToArray());
            v.LegendText = $"validation loss (last {evals[^1].Loss:F3})";
            v.MarkerSize = 7;
        }
        plt.Title(title);
        plt.XLabel("step");
        plt.YLabel("cross-entropy");
        plt.ShowLegend(ScottPlot.Alignment.UpperRight);
        Save(plt, path);
    }

    /// <summary>Writes the chart as a 900x540 PNG to a temporary name beside <paramref name="path"/>, then renames it.</summary>
    public static void Save(ScottPlot.Plot plt, string path)
    {
        var tmp = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, $".{Path.GetFileNameWithoutExtension(path)}.{Environment.ProcessId}.png");
        plt.SavePng(tmp, 900, 540);
        File.Move(tmp, path, overwrite: true);
    }
}
