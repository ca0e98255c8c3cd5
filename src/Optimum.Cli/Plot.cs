namespace Optimum.Cli;

/// <summary>PNG charts of training runs.</summary>
internal static class Plot
{
    /// <summary>Train and validation loss per epoch, with validation accuracy in the legend; written atomically.</summary>
    public static void Losses(IReadOnlyList<(double Train, double Val, double Acc)> history, string path)
    {
        var plt = new ScottPlot.Plot();
        double[] epochs = Enumerable.Range(1, history.Count).Select(i => (double)i).ToArray();
        plt.Add.Scatter(epochs, history.Select(h => h.Train).ToArray()).LegendText = "train loss";
        plt.Add.Scatter(epochs, history.Select(h => h.Val).ToArray()).LegendText = $"validation loss (final accuracy {history[^1].Acc:P1})";
        plt.Title("MLP on 8x8 digits, trained through ONNX Runtime");
        plt.XLabel("epoch");
        plt.YLabel("cross-entropy");
        plt.ShowLegend(ScottPlot.Alignment.UpperRight);
        var tmp = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, $".{Path.GetFileNameWithoutExtension(path)}.{Environment.ProcessId}.png");
        plt.SavePng(tmp, 900, 540);
        File.Move(tmp, path, overwrite: true);
    }
}
