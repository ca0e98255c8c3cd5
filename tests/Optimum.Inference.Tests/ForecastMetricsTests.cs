using Optimum.Inference.Forecasting;
using Optimum.Tests;
using Xunit;

namespace Optimum.Inference.Tests;

public sealed class ForecastMetricsTests
{
    private const double Tol = 1e-9;

    /// <summary>|expected - actual| ≤ tol · max(1, |expected|); NaN matches only NaN.</summary>
    private static void Close(double expected, double actual, double tol = Tol) =>
        Assert.True(double.IsNaN(expected) ? double.IsNaN(actual) : Math.Abs(expected - actual) <= tol * Math.Max(1, Math.Abs(expected)),
            $"expected {expected}, got {actual} (tolerance {tol})");

    public static TheoryData<float[], int, double> SeasonalErrors => new()
    {
        { [1, 3, 2, 5], 1, 2.0 },               // |3-1|, |2-3|, |5-2|
        { [1, 3, 2, 5], 2, 1.5 },               // |2-1|, |5-3|
        { [1, 3, 2, 5], 4, 2.0 },               // season not below the length: falls back to m = 1
        { [1, 3, 2, 5], 9, 2.0 },
        { [1, float.NaN, 2, 5], 1, 3.0 },       // only the pair (2, 5) is observed at both ends
        { [7], 1, double.NaN },                 // no pair
    };

    [Theory, MemberData(nameof(SeasonalErrors))]
    public void SeasonalError_IsMeanAbsoluteSeasonalDifferenceOverObservedPairs(float[] history, int season, double expected) =>
        Close(expected, ForecastMetrics.SeasonalError(history, season));

    [Fact]
    public void Mase_OfPerfectForecastIsZero()
    {
        float[] y = [3, 1, 4, 1, 5];
        Assert.Equal(0.0, ForecastMetrics.Mase(y, y, seasonalError: 2.5));
        Close(0.4 / 2.5, ForecastMetrics.Mase(y, [3, 1, 4, 1, 7], 2.5));   // mean|e| = 2/5
    }

    [Fact]
    public void Mase_OfSeasonalNaiveOnPeriodicSeriesIsZero()
    {
        float[] pattern = [1, 4, 2, 7];
        int period = pattern.Length;
        var series = Enumerable.Range(0, 20).Select(t => pattern[t % period]).ToArray();
        var history = series[..16];
        var actual = series[16..];
        var seasonalNaive = history[^period..];

        // Scaled by one-step differences, the seasonal-naive forecast of a periodic series scores 0 ...
        double oneStep = ForecastMetrics.SeasonalError(history, season: 1);
        Assert.True(oneStep > 0);
        Assert.Equal(0.0, ForecastMetrics.Mase(actual, seasonalNaive, oneStep));
        // ... while at its own period the seasonal error is 0 and MASE is 0/0 = NaN, as in GluonTS.
        Assert.Equal(0.0, ForecastMetrics.SeasonalError(history, period));
        Assert.True(double.IsNaN(ForecastMetrics.Mase(actual, seasonalNaive, 0.0)));
    }

    public static TheoryData<float[], float[], double> Smapes => new()
    {
        { [100], [110], 2 * 10.0 / 210 },
        { [1, 2], [3, 2], 2 * (0.5 + 0) / 2 },
        { [1, 2, 0], [3, 2, 0], 2 * (0.5 + 0) / 2 },       // 0/0 step masked, as numpy's masked division does
        { [-1, 1], [1, -1], 2.0 },                          // opposite signs: each term 2/2
        { [1, float.NaN], [3, 5], 2 * 0.5 },                // missing actual skipped
    };

    [Theory, MemberData(nameof(Smapes))]
    public void Smape_MatchesGluonTsDefinition(float[] actual, float[] forecast, double expected) =>
        Close(expected, ForecastMetrics.Smape(actual, forecast));

    public static TheoryData<float[], float[], double, double> QuantileLosses => new()
    {
        // 2 · Σ |(ŷ - y)(1[y ≤ ŷ] - q)|
        { [1, 2, 3], [2, 2, 4], 0.9, 2 * (1 * 0.1 + 0 + 1 * 0.1) },
        { [1, 2, 3], [2, 2, 4], 0.1, 2 * (1 * 0.9 + 0 + 1 * 0.9) },
        { [1, 2, 3], [2, 2, 2], 0.9, 2 * (1 * 0.1 + 0 + 1 * 0.9) },
        { [5], [3], 0.5, 2 * 2 * 0.5 },                     // median: twice the pinball loss = |e|
        { [5, float.NaN], [3, 100], 0.5, 2.0 },
    };

    [Theory, MemberData(nameof(QuantileLosses))]
    public void QuantileLoss_IsTwiceSummedPinballLoss(float[] actual, float[] forecast, double q, double expected) =>
        Close(expected, ForecastMetrics.QuantileLoss(actual, forecast, q));

    [Fact]
    public void WeightedQuantileLoss_DividesByAbsoluteTargetSumAndAveragesLevels()
    {
        float[] y = [1, -2, 3];                     // Σ|y| = 6
        var r = ForecastMetrics.WeightedQuantileLoss(y, new Dictionary<double, float[]>
        {
            [0.9] = [2, -2, 4],                     // QL = 2·(0.1 + 0 + 0.1) = 0.4
            [0.1] = [2, -2, 4],                     // QL = 2·(0.9 + 0 + 0.9) = 3.6
        });
        Assert.Equal([0.1, 0.9], r.ByLevel.Keys);
        Close(3.6 / 6, r.ByLevel[0.1]);
        Close(0.4 / 6, r.ByLevel[0.9]);
        Close(4.0 / 6 / 2, r.Mean);
    }

    public static TheoryData<float[], float, double> CrpsClosedForms => new()
    {
        { [2.5f], 1, 1.5 },                                 // one sample: |x - y|
        { [2.5f], 4, 1.5 },
        { [0, 2], 1, (1 + 1) / 2.0 - 2 / 4.0 },             // (|a-y| + |b-y|)/2 - |a-b|/4
        { [0, 2], 3, (3 + 1) / 2.0 - 2 / 4.0 },
        { [1, 1, 1], 1, 0 },                                // point mass at y
    };

    [Theory, MemberData(nameof(CrpsClosedForms))]
    public void Crps_MatchesClosedForms(float[] draws, float y, double expected)
    {
        var samples = draws.Select(x => new[] { x }).ToArray();
        Close(expected, ForecastMetrics.Crps([y], samples)[0]);
    }

    [Fact]
    public void Crps_OfStandardNormalAtZeroIsClosedForm()
    {
        var rng = new Random(1234);
        const int s = 20000, h = 4;
        var samples = Enumerable.Range(0, s).Select(_ => Enumerable.Range(0, h).Select(_ => (float)Rand.Normal(rng)).ToArray()).ToArray();
        var crps = ForecastMetrics.Crps(new float[h], samples);
        double expected = (Math.Sqrt(2) - 1) / Math.Sqrt(Math.PI);   // 0.2337
        Assert.All(crps, c => Assert.True(Math.Abs(c - expected) < 0.01, $"CRPS {c}, expected {expected} ± 0.01"));
    }

    [Fact]
    public void Crps_SortedFormEqualsNaiveDoubleLoop()
    {
        var rng = new Random(7);
        const int s = 57, h = 6;
        var samples = Enumerable.Range(0, s).Select(_ => Enumerable.Range(0, h).Select(_ => (float)(100 + 3 * Rand.Normal(rng))).ToArray()).ToArray();
        var actual = Enumerable.Range(0, h).Select(_ => (float)(100 + 4 * Rand.Normal(rng))).ToArray();
        var crps = ForecastMetrics.Crps(actual, samples);
        for (int t = 0; t < h; t++)
        {
            double toY = 0, pairs = 0;
            for (int i = 0; i < s; i++)
            {
                toY += Math.Abs((double)samples[i][t] - actual[t]);
                for (int j = 0; j < s; j++) pairs += Math.Abs((double)samples[i][t] - samples[j][t]);
            }
            Close(toY / s - 0.5 * pairs / ((double)s * s), crps[t]);
        }
        Close(crps.Sum() / actual.Sum(Math.Abs), ForecastMetrics.CrpsNormalized(actual, samples));
    }

    [Fact]
    public void SampleQuantile_PicksSortedSampleAtRoundedIndexLikeGluonTs()
    {
        // S = 10, values 0..9 shuffled: index round(9q), half to even.
        var samples = new float[] { 3, 7, 0, 9, 1, 8, 2, 6, 4, 5 }.Select(x => new[] { x, -x }).ToArray();
        Assert.Equal([1f, -8f], ForecastMetrics.SampleQuantile(samples, 0.1));   // 0.9 → 1
        Assert.Equal([4f, -5f], ForecastMetrics.SampleQuantile(samples, 0.5));   // 4.5 → 4
        Assert.Equal([8f, -1f], ForecastMetrics.SampleQuantile(samples, 0.9));   // 8.1 → 8
        Assert.Equal([0f, -9f], ForecastMetrics.SampleQuantile(samples, 0.0));
        Assert.Equal([9f, 0f], ForecastMetrics.SampleQuantile(samples, 1.0));
    }

    [Fact]
    public void Evaluate_AggregatesPerSeriesMetricsLikeGluonTsEvaluator()
    {
        var rng = new Random(42);
        var series = Enumerable.Range(0, 3).Select(i =>
        {
            var history = Enumerable.Range(0, 30).Select(t => (float)(10 + i + Math.Sin(t) + 0.1 * Rand.Normal(rng))).ToArray();
            var actual = Enumerable.Range(0, 5).Select(t => (float)(10 + i + 0.5 * Rand.Normal(rng))).ToArray();
            var samples = Enumerable.Range(0, 40).Select(_ => actual.Select(a => (float)(a + Rand.Normal(rng))).ToArray()).ToArray();
            return new ForecastSeries(history, actual, samples);
        }).ToList();

        var scores = ForecastMetrics.Evaluate(series, season: 7);

        double absSum = series.Sum(s => s.Actual.Sum(Math.Abs));
        var medians = series.Select(s => ForecastMetrics.SampleQuantile(s.Samples, 0.5)).ToArray();
        Close(series.Select((s, i) => ForecastMetrics.Mase(s.Actual, medians[i], ForecastMetrics.SeasonalError(s.History, 7))).Average(), scores.Mase);
        Close(series.Select((s, i) => ForecastMetrics.Smape(s.Actual, medians[i])).Average(), scores.Smape);
        Close(series.Sum(s => ForecastMetrics.Crps(s.Actual, s.Samples).Sum()) / absSum, scores.Crps);
        Assert.Equal(ForecastMetrics.DefaultQuantiles, scores.WeightedQuantileLoss.Keys);
        foreach (var q in ForecastMetrics.DefaultQuantiles)
            Close(series.Sum(s => ForecastMetrics.QuantileLoss(s.Actual, ForecastMetrics.SampleQuantile(s.Samples, q), q)) / absSum, scores.WeightedQuantileLoss[q]);
        Close(scores.WeightedQuantileLoss.Values.Average(), scores.MeanWeightedQuantileLoss);
        // mean wQL over 0.1..0.9 approximates the normalized CRPS.
        Assert.True(Math.Abs(scores.MeanWeightedQuantileLoss - scores.Crps) < 0.2 * scores.Crps, $"mean wQL {scores.MeanWeightedQuantileLoss}, CRPS {scores.Crps}");
    }

    [Fact]
    public void BadInputs_ThrowNamingTheArgument()
    {
        float[] y = [1, 2, 3];
        void Throws(string name, Action act) => Assert.Equal(name, Assert.ThrowsAny<ArgumentException>(act).ParamName);

        Throws("history", () => ForecastMetrics.SeasonalError([], 1));
        Throws("season", () => ForecastMetrics.SeasonalError(y, 0));
        Throws("pointForecast", () => ForecastMetrics.Mase(y, [1, 2], 1));
        Throws("actual", () => ForecastMetrics.Smape([], []));
        Throws("pointForecast", () => ForecastMetrics.Smape(y, [1, 2, 3, 4]));
        Throws("quantileForecast", () => ForecastMetrics.QuantileLoss(y, [1], 0.5));
        Throws("q", () => ForecastMetrics.QuantileLoss(y, y, 1.5));
        Throws("quantileForecasts", () => ForecastMetrics.WeightedQuantileLoss(y, new Dictionary<double, float[]>()));
        Throws("samples", () => ForecastMetrics.Crps(y, []));
        Throws("samples", () => ForecastMetrics.Crps(y, [[1, 2, 3], [1, 2]]));
        Throws("samples", () => ForecastMetrics.Crps(y, [[1, float.NaN, 3]]));
        Throws("actual", () => ForecastMetrics.Crps([], [[]]));
        Throws("series", () => ForecastMetrics.Evaluate([], 1));
        Throws("series", () => ForecastMetrics.Evaluate([new ForecastSeries([], y, [y])], 1));
        Throws("series[0].Samples", () => ForecastMetrics.Evaluate([new ForecastSeries(y, y, [[1, 2]])], 1));
        Throws("season", () => ForecastMetrics.Evaluate([new ForecastSeries(y, y, [y])], 0));
        Throws("quantiles", () => ForecastMetrics.Evaluate([new ForecastSeries(y, y, [y])], 1, [0.5, -0.1]));
    }
}
