using Optimum.Inference.Forecasting;
using System.Globalization;
using Optimum.Models;
using Optimum.Tests;
using Optimum.Training;
using Xunit;
using Optimum.Core;
using Optimum.Data;

namespace Optimum.Cli.Tests;

/// <summary>train on a series file, then forecast and backtest it, through the command implementations.</summary>
public sealed class ForecastCommandTests
{
    [Fact]
    public void TrainThenForecast_WritesCsvPngsAndBacktestScores()
    {
        var tmp = Repo.TempDir();
        try
        {
            // Three monthly series with a season and a trend, one value missing.
            var csv = Path.Combine(tmp, "series.csv");
            var lines = new List<string> { "series,month,value" };
            for (int s = 0; s < 3; s++)
                for (int k = 0; k < 60; k++)
                    lines.Add($"s{s},{new DateTime(2015, 1, 1).AddMonths(k).ToString("yyyy-MM", CultureInfo.InvariantCulture)},{(s == 1 && k == 30 ? "" : (100 + 10 * s + k + 20 * Math.Sin(2 * Math.PI * k / 12)).ToString(CultureInfo.InvariantCulture))}");
            File.WriteAllLines(csv, lines);
            var cfg = new TimeSeriesConfig
            {
                ModelType = "informer", PredictionLength = 6, ContextLength = 12, LagsSequence = [1, 12], NumTimeFeatures = 2, TimeFeatures = "monthly",
                NumStaticCategoricalFeatures = 1, Cardinality = [3], EmbeddingDimension = [2], DModel = 8, EncoderLayers = 2, DecoderLayers = 1,
                EncoderFfnDim = 8, DecoderFfnDim = 8, Dropout = 0, EncoderLayerdrop = 0, DecoderLayerdrop = 0,
            };
            var model = Path.Combine(tmp, "model");
            ModelKinds.Write(model, cfg);
            var options = new TrainerOptions
            {
                ModelDir = model, OutputDir = Path.Combine(tmp, "run"), Steps = 20, BatchSize = 8, Lr = 3e-3, Warmup = 2, EvalEvery = 0, SaveEvery = 0,
                Session = new SessionSettings { IntraOpThreads = 1 },
            };
            var r = TrainCommand.Run(new TrainingJobOptions(options, [csv]));
            Assert.Equal(20, r.Steps);
            Assert.True(File.Exists(Path.Combine(tmp, "run", "loss.png")));
            var output = new StringWriter();
            var run = SeriesForecast.Run(new SeriesForecastOptions { ModelDir = Path.Combine(tmp, "run", "final"), Data = csv, OutDir = Path.Combine(tmp, "fc"), Samples = 50, Backtest = 6, Season = 12 }, output);
            Assert.Equal(3, run.Forecasts.Count);
            var rows = File.ReadAllLines(Path.Combine(tmp, "fc", "forecasts.csv"));
            Assert.Equal("series,month,mean,median,q0.1,q0.5,q0.9,actual", rows[0]);
            Assert.Equal(1 + 3 * 6, rows.Length);
            Assert.StartsWith("s0,2019-07,", rows[1]);                   // the first held-back month
            Assert.Equal(3, Directory.GetFiles(Path.Combine(tmp, "fc", "forecasts"), "*.png").Length);
            Assert.Matches(@"backtest of the last 6 points: MASE \d+\.\d{3} \(seasonal naive \d+\.\d{3}\)", output.ToString());
            var bad = Assert.Throws<ArgumentException>(() => SeriesForecast.Run(new SeriesForecastOptions { ModelDir = Path.Combine(tmp, "run", "final"), Data = csv, OutDir = Path.Combine(tmp, "fc2"), Horizon = 3, Samples = 10, Quantiles = [0.5], Backtest = 6, Season = 12 }, TextWriter.Null));
            Assert.Contains("--backtest 6 and --horizon 3 differ", bad.Message);

            // Refused before anything is written: a season of 0 (it wrote every output, then failed), levels outside (0, 1).
            SeriesForecastOptions Opts(string dir) => new() { ModelDir = Path.Combine(tmp, "run", "final"), Data = csv, OutDir = Path.Combine(tmp, dir), Samples = 10, Backtest = 6 };
            Assert.Contains("--season must be at least 1", Assert.Throws<ArgumentException>(() => SeriesForecast.Run(Opts("s0") with { Season = 0 })).Message);
            Assert.Contains("--quantiles must be levels in (0, 1), got [0.5, 1]", Assert.Throws<ArgumentException>(() => SeriesForecast.Run(Opts("q1") with { Quantiles = [0.5, 1] })).Message);
            Assert.False(Directory.Exists(Path.Combine(tmp, "s0")));
            Assert.False(Directory.Exists(Path.Combine(tmp, "q1")));
            // Only the levels asked for are reported (0.1 and 0.9 were added silently).
            SeriesForecast.Run(Opts("q3") with { Quantiles = [0.3] });
            Assert.Equal("series,month,mean,median,q0.3,actual", File.ReadLines(Path.Combine(tmp, "q3", "forecasts.csv")).First());
        }
        finally { Directory.Delete(tmp, true); }
    }
}
