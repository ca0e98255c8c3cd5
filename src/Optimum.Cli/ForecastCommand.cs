namespace Optimum.Cli;

/// <summary><c>optimum-net forecast</c>: <see cref="Optimum.Inference.Forecasting.SeriesForecast.Run"/> with the command's options.</summary>
public static class ForecastCommand
{
    public static int Run(Optimum.Inference.Forecasting.SeriesForecastOptions options, TextWriter output)
    {
        Optimum.Inference.Forecasting.SeriesForecast.Run(options, output);
        return 0;
    }
}
