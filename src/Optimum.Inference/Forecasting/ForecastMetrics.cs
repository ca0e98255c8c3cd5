namespace Optimum.Inference.Forecasting;

/// <summary>One series to score: its history (before the horizon), the observed values over the horizon,
/// and the forecast's sample paths laid out <c>[sample][step]</c>, each of the horizon's length.</summary>
public sealed record ForecastSeries(float[] History, float[] Actual, float[][] Samples);

/// <summary>Quantile losses weighted by the summed |y|: one per level (sorted by level) and their mean
/// (GluonTS's <c>wQuantileLoss[q]</c> and <c>mean_wQuantileLoss</c>).</summary>
public sealed record WeightedQuantileLosses(IReadOnlyDictionary<double, double> ByLevel, double Mean);

/// <summary>Scores over a set of series, aggregated as the GluonTS <c>Evaluator</c> does.</summary>
/// <param name="Mase">Mean over series of the per-series MASE of the median (NaN series skipped, infinities kept).</param>
/// <param name="Smape">Mean over series of the per-series sMAPE of the median (NaN series skipped).</param>
/// <param name="Crps">Sample CRPS summed over all series and steps, divided by the summed |y| (see <see cref="ForecastMetrics.CrpsNormalized"/>).</param>
/// <param name="WeightedQuantileLoss">Per level: the quantile loss summed over all series, divided by the summed |y|.</param>
/// <param name="MeanWeightedQuantileLoss">Mean of <paramref name="WeightedQuantileLoss"/> over the levels (GluonTS's <c>mean_wQuantileLoss</c>).</param>
public sealed record ForecastScores(double Mase, double Smape, double Crps, IReadOnlyDictionary<double, double> WeightedQuantileLoss, double MeanWeightedQuantileLoss);

/// <summary>
/// Point and probabilistic forecast metrics with the definitions of GluonTS (<c>gluonts.evaluation.metrics</c>
/// and <c>Evaluator</c> with its defaults). As there, non-finite targets (missing values) are masked: a step whose
/// observed value is NaN or infinite is left out of every sum and mean, and a mean over nothing is NaN.
/// Sums and means are accumulated in double.
/// </summary>
public static class ForecastMetrics
{
    /// <summary>GluonTS's default quantile levels: 0.1, 0.2, ..., 0.9.</summary>
    public static IReadOnlyList<double> DefaultQuantiles { get; } = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

    /// <summary>
    /// seasonal_error = mean over t of |y[t] - y[t-m]|, over the pairs of <paramref name="history"/> with both ends finite.
    /// As in GluonTS, m = <paramref name="season"/> when it is smaller than the history's length, else 1.
    /// NaN when no pair is observed (a history of length 1, or all missing).
    /// </summary>
    public static double SeasonalError(ReadOnlySpan<float> history, int season)
    {
        if (history.IsEmpty) throw new ArgumentException("The history is empty; the seasonal error needs at least two observed values.", nameof(history));
        if (season < 1) throw new ArgumentOutOfRangeException(nameof(season), season, "The season must be at least 1.");
        int m = season < history.Length ? season : 1;
        double sum = 0;
        int n = 0;
        for (int t = m; t < history.Length; t++)
        {
            if (!float.IsFinite(history[t]) || !float.IsFinite(history[t - m])) continue;
            sum += Math.Abs((double)history[t] - history[t - m]);
            n++;
        }
        return n == 0 ? double.NaN : sum / n;
    }

    /// <summary>
    /// MASE = mean(|y - ŷ|) / seasonal_error, with ŷ the point forecast (GluonTS uses the median) and the seasonal error
    /// from <see cref="SeasonalError"/>. Division follows IEEE rules as GluonTS's numpy does: a zero seasonal error gives
    /// +∞, or NaN when the forecast is also exact.
    /// </summary>
    public static double Mase(ReadOnlySpan<float> actual, ReadOnlySpan<float> pointForecast, double seasonalError)
    {
        CheckPair(actual, pointForecast, nameof(pointForecast));
        double sum = 0;
        int n = 0;
        for (int t = 0; t < actual.Length; t++)
        {
            if (!float.IsFinite(actual[t])) continue;
            sum += Math.Abs((double)actual[t] - pointForecast[t]);
            n++;
        }
        return n == 0 ? double.NaN : sum / n / seasonalError;
    }

    /// <summary>
    /// sMAPE = 2 · mean(|y - ŷ| / (|y| + |ŷ|)). Steps with |y| + |ŷ| = 0 are left out of the mean: GluonTS's Evaluator
    /// divides masked arrays, and numpy's masked division masks a zero divisor (the bare <c>metrics.smape</c> on plain
    /// arrays would give NaN instead). NaN when no step remains.
    /// </summary>
    public static double Smape(ReadOnlySpan<float> actual, ReadOnlySpan<float> pointForecast)
    {
        CheckPair(actual, pointForecast, nameof(pointForecast));
        double sum = 0;
        int n = 0;
        for (int t = 0; t < actual.Length; t++)
        {
            if (!float.IsFinite(actual[t])) continue;
            double den = Math.Abs((double)actual[t]) + Math.Abs((double)pointForecast[t]);
            if (den == 0) continue;
            sum += Math.Abs((double)actual[t] - pointForecast[t]) / den;
            n++;
        }
        return n == 0 ? double.NaN : 2 * sum / n;
    }

    /// <summary>
    /// quantile_loss = 2 · Σ_t |(ŷ_q - y) · (1[y ≤ ŷ_q] - q)|, twice the pinball loss of the level-<paramref name="q"/>
    /// forecast, summed (not averaged) over the steps.
    /// </summary>
    public static double QuantileLoss(ReadOnlySpan<float> actual, ReadOnlySpan<float> quantileForecast, double q)
    {
        CheckPair(actual, quantileForecast, nameof(quantileForecast));
        CheckLevel(q, nameof(q));
        double sum = 0;
        for (int t = 0; t < actual.Length; t++)
        {
            if (!float.IsFinite(actual[t])) continue;
            double y = actual[t], f = quantileForecast[t];
            sum += Math.Abs((f - y) * ((y <= f ? 1.0 : 0.0) - q));
        }
        return 2 * sum;
    }

    /// <summary>
    /// wQuantileLoss[q] = quantile_loss(y, ŷ_q, q) / Σ|y| for each level of <paramref name="quantileForecasts"/>
    /// (level → forecast over the horizon), and mean_wQuantileLoss, their mean over the levels. A zero Σ|y| gives
    /// +∞ or NaN, as in GluonTS.
    /// </summary>
    public static WeightedQuantileLosses WeightedQuantileLoss(ReadOnlySpan<float> actual, IReadOnlyDictionary<double, float[]> quantileForecasts)
    {
        if (quantileForecasts.Count == 0) throw new ArgumentException("No quantile levels were given.", nameof(quantileForecasts));
        if (actual.IsEmpty) throw new ArgumentException("The actual values are empty.", nameof(actual));
        double absSum = AbsTargetSum(actual);
        var byLevel = new SortedDictionary<double, double>();
        foreach (var (q, forecast) in quantileForecasts)
            byLevel[q] = QuantileLoss(actual, forecast, q) / absSum;
        return new WeightedQuantileLosses(byLevel, byLevel.Values.Average());
    }

    /// <summary>
    /// The CRPS of the empirical distribution of the samples at each step, in the energy form
    /// CRPS(F, y) = E|X - y| - ½ E|X - X'|, with X, X' drawn independently from the S samples (both expectations over all
    /// S or S² pairs, so one sample gives |x - y|). Computed exactly in O(S log S) per step: with the samples sorted,
    /// Σ_{i,j} |x_i - x_j| = 2 Σ_k x_(k) (2k - S - 1) for k = 1..S. NaN at steps whose actual value is missing.
    /// </summary>
    /// <param name="actual">Observed values over the horizon, length H.</param>
    /// <param name="samples">Sample paths <c>[S][H]</c>, finite.</param>
    public static double[] Crps(ReadOnlySpan<float> actual, float[][] samples)
    {
        if (actual.IsEmpty) throw new ArgumentException("The actual values are empty.", nameof(actual));
        var sorted = SortedSteps(samples, actual.Length, nameof(samples));
        var crps = new double[actual.Length];
        for (int t = 0; t < crps.Length; t++)
            crps[t] = float.IsFinite(actual[t]) ? CrpsSorted(sorted[t], actual[t]) : double.NaN;
        return crps;
    }

    /// <summary>
    /// Σ_t CRPS_t / Σ_t |y_t| over the observed steps: the sample CRPS of <see cref="Crps"/> weighted like GluonTS's
    /// quantile losses. GluonTS's Evaluator reports no sample CRPS; its <c>mean_wQuantileLoss</c> over levels
    /// 0.1..0.9 is the usual approximation of this number, since CRPS = ∫₀¹ 2·pinball_q dq.
    /// </summary>
    public static double CrpsNormalized(ReadOnlySpan<float> actual, float[][] samples)
    {
        var crps = Crps(actual, samples);
        double sum = 0;
        foreach (var c in crps) if (!double.IsNaN(c)) sum += c;
        return sum / AbsTargetSum(actual);
    }

    /// <summary>
    /// The level-<paramref name="q"/> quantile of the samples at each step, by GluonTS's <c>SampleForecast.quantile</c>:
    /// the sorted samples' element at index round((S - 1)·q), rounding half to even like numpy.round (no interpolation;
    /// numpy.quantile's linear rule would give different values).
    /// </summary>
    /// <param name="samples">Sample paths <c>[S][H]</c>, finite.</param>
    /// <param name="q">Level in [0, 1].</param>
    public static float[] SampleQuantile(float[][] samples, double q)
    {
        CheckLevel(q, nameof(q));
        if (samples.Length == 0) throw new ArgumentException("No samples were given.", nameof(samples));
        return Quantile(SortedSteps(samples, samples[0].Length, nameof(samples)), q);
    }

    /// <summary>
    /// Scores a set of series like GluonTS's Evaluator: per series, MASE and sMAPE of the median forecast
    /// (<see cref="SampleQuantile"/> at 0.5) with the seasonal error of its history, averaged over series skipping NaN;
    /// quantile losses at <paramref name="quantiles"/> (default <see cref="DefaultQuantiles"/>) and the sample CRPS summed
    /// over all series and steps, each divided by the summed |y| of all series.
    /// </summary>
    /// <param name="series">The series; each needs a non-empty history and samples covering its horizon.</param>
    /// <param name="season">Seasonal period m for the seasonal error (e.g. 24 for hourly data, 7 for daily).</param>
    /// <param name="quantiles">Quantile levels in [0, 1].</param>
    public static ForecastScores Evaluate(IReadOnlyList<ForecastSeries> series, int season, IReadOnlyList<double>? quantiles = null)
    {
        if (series.Count == 0) throw new ArgumentException("No series were given.", nameof(series));
        if (season < 1) throw new ArgumentOutOfRangeException(nameof(season), season, "The season must be at least 1.");
        quantiles ??= DefaultQuantiles;
        if (quantiles.Count == 0) throw new ArgumentException("No quantile levels were given.", nameof(quantiles));
        foreach (var q in quantiles) CheckLevel(q, nameof(quantiles));

        var mase = new double[series.Count];
        var smape = new double[series.Count];
        var quantileLoss = new double[quantiles.Count];
        double crpsSum = 0, absSum = 0;
        for (int i = 0; i < series.Count; i++)
        {
            var (history, actual, samples) = series[i];
            if (history.Length == 0) throw new ArgumentException($"series[{i}] has an empty history.", nameof(series));
            if (actual.Length == 0) throw new ArgumentException($"series[{i}] has no actual values.", nameof(series));
            var sorted = SortedSteps(samples, actual.Length, $"{nameof(series)}[{i}].{nameof(ForecastSeries.Samples)}");

            var median = Quantile(sorted, 0.5);
            mase[i] = Mase(actual, median, SeasonalError(history, season));
            smape[i] = Smape(actual, median);
            for (int k = 0; k < quantiles.Count; k++)
                quantileLoss[k] += QuantileLoss(actual, Quantile(sorted, quantiles[k]), quantiles[k]);
            for (int t = 0; t < actual.Length; t++)
                if (float.IsFinite(actual[t])) crpsSum += CrpsSorted(sorted[t], actual[t]);
            absSum += AbsTargetSum(actual);
        }

        var weighted = new SortedDictionary<double, double>();
        for (int k = 0; k < quantiles.Count; k++) weighted[quantiles[k]] = quantileLoss[k] / absSum;
        return new ForecastScores(MeanSkippingNaN(mase), MeanSkippingNaN(smape), crpsSum / absSum, weighted,
            quantiles.Select((_, k) => quantileLoss[k] / absSum).Average());
    }

    /// <summary>Energy-form CRPS at one step from its sorted samples.</summary>
    private static double CrpsSorted(double[] sorted, double y)
    {
        int s = sorted.Length;
        double toY = 0, spread = 0;
        for (int k = 0; k < s; k++)
        {
            // Centring on y leaves the spread unchanged (the weights sum to zero) and avoids cancellation
            // when the values are far from zero.
            double x = sorted[k] - y;
            toY += Math.Abs(x);
            spread += x * (2 * k + 1 - s);      // 0-based k: weight 2(k+1) - S - 1
        }
        // ½ E|X - X'| = ½ · 2 Σ_k x_(k)(2k - S - 1) / S²
        return toY / s - spread / ((double)s * s);
    }

    /// <summary>The samples transposed to <c>[step][sample]</c> and sorted per step, after checking their shape.</summary>
    private static double[][] SortedSteps(float[][] samples, int horizon, string name)
    {
        if (samples.Length == 0) throw new ArgumentException("No samples were given.", name);
        if (horizon == 0) throw new ArgumentException("The horizon is empty.", name);
        var steps = new double[horizon][];
        for (int t = 0; t < horizon; t++) steps[t] = new double[samples.Length];
        for (int s = 0; s < samples.Length; s++)
        {
            var path = samples[s];
            if (path.Length != horizon)
                throw new ArgumentException($"{name}[{s}] has {path.Length} steps; expected {horizon}, the length of the actual values.", name);
            for (int t = 0; t < horizon; t++)
            {
                if (float.IsNaN(path[t])) throw new ArgumentException($"{name}[{s}][{t}] is NaN; forecasts must not contain NaN.", name);
                steps[t][s] = path[t];
            }
        }
        foreach (var step in steps) Array.Sort(step);
        return steps;
    }

    private static float[] Quantile(double[][] sorted, double q) =>
        sorted.Select(step => (float)step[QuantileIndex(step.Length, q)]).ToArray();

    private static int QuantileIndex(int count, double q) => (int)Math.Round((count - 1) * q, MidpointRounding.ToEven);

    private static double AbsTargetSum(ReadOnlySpan<float> actual)
    {
        double sum = 0;
        foreach (var y in actual) if (float.IsFinite(y)) sum += Math.Abs((double)y);
        return sum;
    }

    /// <summary>GluonTS's default aggregation (<c>aggregate_no_nan</c>): NaN skipped, infinities kept.</summary>
    private static double MeanSkippingNaN(double[] values)
    {
        double sum = 0;
        int n = 0;
        foreach (var v in values) if (!double.IsNaN(v)) { sum += v; n++; }
        return n == 0 ? double.NaN : sum / n;
    }

    private static void CheckPair(ReadOnlySpan<float> actual, ReadOnlySpan<float> forecast, string forecastName)
    {
        if (actual.IsEmpty) throw new ArgumentException("The actual values are empty.", nameof(actual));
        if (forecast.Length != actual.Length)
            throw new ArgumentException($"{forecastName} has {forecast.Length} steps; expected {actual.Length}, the length of the actual values.", forecastName);
    }

    private static void CheckLevel(double q, string name)
    {
        if (!(q >= 0 && q <= 1)) throw new ArgumentOutOfRangeException(name, q, "Quantile levels must lie in [0, 1].");
    }
}
