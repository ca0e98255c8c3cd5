using MathNet.Numerics.Distributions;
using MathNet.Numerics.Random;
using Microsoft.ML.OnnxRuntime;
using Optimum.Hub;
using Optimum.Data;
using Optimum.Core;

namespace Optimum.Inference.Forecasting;

/// <summary>
/// One series to forecast: its history (NaN = missing), and what the model was trained with besides.
/// Send the history from the series' first point: the age time feature counts steps from the first value
/// sent, as it did in training, so a history cut short shifts it.
/// <see cref="TimeFeatures"/> covers the history then the horizon, row-major [(history + horizon), T];
/// leave it null for a model with <c>time_features: "monthly"</c> and give <see cref="Start"/> instead.
/// </summary>
public sealed record SeriesInput
{
    public required float[] Values { get; init; }
    public DateTime? Start { get; init; }
    public float[]? TimeFeatures { get; init; }
    public long[]? StaticCategorical { get; init; }
    public float[]? StaticReal { get; init; }
}

/// <summary>How many sample paths, which quantiles, how far ahead and from which seed.</summary>
public sealed record ForecastOptions
{
    public int Samples { get; init; } = 100;
    public IReadOnlyList<double> Quantiles { get; init; } = [0.1, 0.5, 0.9];
    /// <summary>Steps ahead (null = the model's prediction_length, the most it can do).</summary>
    public int? Horizon { get; init; }
    public long Seed { get; init; }
}

/// <summary>
/// A forecast that left float32's range for one series: its scale, a distribution parameter or a draw is not finite.
/// For a model whose weights forecast a plain series, the series' inputs are at fault (values near float32's limit, or far
/// from their context's scale); <see cref="Series"/> is its position in the call.
/// </summary>
public sealed class ForecastOverflowException(int series, string message) : InvalidOperationException(message)
{
    public int Series { get; } = series;
}

/// <summary>Sample paths [samples][horizon] and their mean, median and quantiles (GluonTS's sample-quantile rule).</summary>
public sealed record Forecast(float[][] Samples, float[] Mean, float[] Median, IReadOnlyDictionary<double, float[]> Quantiles);

/// <summary>
/// Probabilistic forecasts from a TimeSeriesTransformer or Informer model folder, as HF's generate makes
/// them: the encoder runs once per series (scaler, static features, encoder output); then for each step of
/// the horizon the decoder reads the prefix of sampled values so far (lags of the scaled path, static and
/// time features) and gives the next step's distribution, from which each path draws its next value with
/// MathNet.Numerics (Student-T, normal or negative binomial, mapped back by loc and scale). Path s of series
/// i (its position in the request) uses its own generator seeded from (seed, i, s), so a series' paths do not depend on the other series sent with it.
/// Weights are embedded as initializers. Owns its sessions; dispose it. Not thread-safe: one call at a time.
/// </summary>
public sealed class Forecaster : IDisposable
{
    private readonly InferenceSession _encoder, _decoder;
    private readonly int[] _lags;
    private readonly int[] _cardinality;
    private readonly DevicePlacement _placement;
    private readonly SessionSettings _settings;
    private Optimum.Onnx.DeviceCopy? _copier;
    /// <summary>The decoder's device allocator (CUDA), kept for the forecaster's lifetime and disposed after every tensor it made.</summary>
    private OrtAllocator? _deviceAllocator;

    /// <summary>The host-to-device copier (CUDA only), made at the first forecast and kept: a session per forecast would cost more than the copy.</summary>
    private Optimum.Onnx.DeviceCopy Copier() => _copier ??= new Optimum.Onnx.DeviceCopy(_settings);

    public Forecaster(string modelDir, IReadOnlyList<float[]>? weights = null, SessionSettings? settings = null)
    {
        ModelDir = modelDir;
        var c = TimeSeriesConfig.FromHf(ModelFolder.ReadConfig(modelDir));      // refuses other model types, naming the file
        var ps = ModelFolder.ReadParameters(modelDir);
        weights ??= HfWeights.Load(Path.Combine(modelDir, ModelFolder.WeightsFile), ps, out _);
        ModelType = c.ModelType;
        (PredictionLength, ContextLength, PastLength, _lags) = (c.PredictionLength, c.ContextLength, c.PastLength, c.LagsSequence);
        (TimeFeatureCount, StaticCategoricalCount, _cardinality, StaticRealCount) = (c.TimeFeatureCount, c.NumStaticCategoricalFeatures, c.Cardinality, c.NumStaticRealFeatures);
        (Distribution, TimeFeatureKind, FeatureSize, EncoderLength, DModel) = (c.DistributionOutput, c.TimeFeatures, c.FeatureSize, c.EncoderOutputLength, c.DModel);
        StaticFeatureCount = c.StaticFeatureCount;
        UsesSeed = ModelFolder.ReadInputs(modelDir, "decoder").Any(i => i.Name == GraphInputs.DropoutSeed);
        SeriesNames = SeriesIds.Load(modelDir);
        settings ??= new SessionSettings();
        _placement = DevicePlacement.Of(settings);
        _settings = settings;
        using var options = settings.CreateOptions();
        _encoder = EmbeddedWeights.Open(Path.Combine(modelDir, ModelFolder.EncoderFile), ps, weights, options);
        try { _decoder = EmbeddedWeights.Open(Path.Combine(modelDir, ModelFolder.DecoderFile), ps, weights, options); }
        catch
        {
            _encoder.Dispose();
            throw;
        }
    }

    /// <summary>Paths decoded together at most (series are chunked to stay under it): bounds memory per call.</summary>
    public const int MaxRowsPerRun = 4096;

    public string ModelDir { get; }
    public string ModelType { get; }
    public int PredictionLength { get; }
    public int ContextLength { get; }
    /// <summary>Values the model reads: context_length + max(lags); shorter histories (down to <see cref="MinHistory"/>) are padded as missing.</summary>
    public int PastLength { get; }
    /// <summary>The shortest history accepted: a full context for the scaler.</summary>
    public int MinHistory => ContextLength;
    public int TimeFeatureCount { get; }
    public int StaticCategoricalCount { get; }
    public IReadOnlyList<int> Cardinality => _cardinality;
    public int StaticRealCount { get; }
    public string Distribution { get; }
    /// <summary>Distribution parameters per step: 3 for Student-T (df, loc, scale), 2 otherwise.</summary>
    public int ParameterCount => Distribution == "student_t" ? 3 : 2;
    /// <summary>"monthly" when the model derives time features from a start date, else null.</summary>
    public string? TimeFeatureKind { get; }
    public int FeatureSize { get; }
    public int EncoderLength { get; }
    public int DModel { get; }
    public int StaticFeatureCount { get; }
    /// <summary>Names of the series the model was trained on, in the order of its series-index categorical feature (series.json), or null.</summary>
    public IReadOnlyList<string>? SeriesNames { get; }

    /// <summary>The series-index categorical value of a series the model was trained on, by name; the message says what is wrong.</summary>
    public long SeriesIndex(string name)
    {
        if (SeriesNames is null) throw new ArgumentException($"'{ModelDir}' has no {SeriesIds.File}: give the series' static_categorical ids instead of its name.");
        if (StaticCategoricalCount != 1) throw new ArgumentException($"'{ModelDir}' has {StaticCategoricalCount} static categorical features; a name picks the one series index.");
        int k = SeriesNames.ToList().IndexOf(name);
        return k >= 0 ? k : throw new ArgumentException($"'{name}' is not a series the model was trained on ({SeriesNames.Count} known, e.g. '{SeriesNames[0]}').");
    }
    private bool UsesSeed { get; }

    /// <summary>Checks one series against the model; the message names the series and what is wrong.</summary>
    public void Validate(SeriesInput s, int horizon, int index = 0)
    {
        string who = $"series {index}";
        if (horizon < 1 || horizon > PredictionLength) throw new ArgumentException($"The horizon {horizon} must be in [1, {PredictionLength}] (the model's prediction_length).");
        if (s.Values is null || s.Values.Length < MinHistory) throw new ArgumentException($"{who}: {s.Values?.Length ?? 0} values; the model needs a history of at least {MinHistory} (its context_length).");
        if (s.Values.Any(float.IsInfinity)) throw new ArgumentException($"{who}: values must be finite (NaN marks a missing value).");
        if (s.Values.AsSpan(s.Values.Length - ContextLength).ToArray().All(float.IsNaN)) throw new ArgumentException($"{who}: the last {ContextLength} values are all missing; nothing to scale by.");
        if (Distribution == "negative_binomial" && s.Values.Any(v => v < 0)) throw new ArgumentException($"{who}: a negative-binomial model forecasts counts; values must be >= 0.");
        int steps = s.Values.Length + horizon;
        if (s.TimeFeatures is { } tf)
        {
            if (tf.Length < steps * TimeFeatureCount || (TimeFeatureCount > 0 && tf.Length % TimeFeatureCount != 0))
                throw new ArgumentException($"{who}: time_features has {tf.Length} values; expected (history {s.Values.Length} + horizon {horizon}) x {TimeFeatureCount} = {steps * TimeFeatureCount} (more steps are ignored).");
            if (tf.Any(v => !float.IsFinite(v))) throw new ArgumentException($"{who}: time_features must be finite.");
        }
        else if (TimeFeatureCount > 0 && !(TimeFeatureKind == "monthly" && s.Start is not null))
            throw new ArgumentException(TimeFeatureKind == "monthly"
                ? $"{who}: give a start date (the model derives monthly time features from it) or time_features."
                : $"{who}: the model needs {TimeFeatureCount} time features per step (history + horizon); none were given.");
        if ((s.StaticCategorical?.Length ?? 0) != StaticCategoricalCount)
            throw new ArgumentException($"{who}: {s.StaticCategorical?.Length ?? 0} static categorical features; the model has {StaticCategoricalCount}.");
        for (int i = 0; i < StaticCategoricalCount; i++)
            if (s.StaticCategorical![i] < 0 || s.StaticCategorical[i] >= _cardinality[i])
                throw new ArgumentException($"{who}: static categorical feature {i} is {s.StaticCategorical[i]}; it must be in [0, {_cardinality[i]}).");
        if ((s.StaticReal?.Length ?? 0) != StaticRealCount)
            throw new ArgumentException($"{who}: {s.StaticReal?.Length ?? 0} static real features; the model has {StaticRealCount}.");
        if (s.StaticReal is { } sr && sr.Any(v => !float.IsFinite(v))) throw new ArgumentException($"{who}: static real features must be finite.");
    }

    /// <summary>Forecasts every series <paramref name="options"/>.Horizon steps ahead.</summary>
    /// <remarks>
    /// Series are decoded in chunks of at most <see cref="MaxRowsPerRun"/> paths; each keeps its own
    /// generators, so chunking changes nothing (except that the mean scaler's fallback scale, used only for
    /// a series without any observed context value, is the chunk's, as HF takes the batch's).
    /// </remarks>
    public IReadOnlyList<Forecast> Predict(IReadOnlyList<SeriesInput> series, ForecastOptions? options = null, CancellationToken cancel = default)
    {
        options ??= new ForecastOptions();
        if (options.Samples < 1 || options.Samples > MaxRowsPerRun) throw new ArgumentException($"samples must be in [1, {MaxRowsPerRun}], got {options.Samples}.", nameof(options));
        int per = Math.Max(1, MaxRowsPerRun / options.Samples);
        if (series.Count <= per) return Run(series, options, null, null, 0, cancel);
        var result = new List<Forecast>(series.Count);
        for (int first = 0; first < series.Count; first += per)
            result.AddRange(Run(series.Skip(first).Take(per).ToArray(), options, null, null, first, cancel));
        return result;
    }

    /// <summary>
    /// Teacher forcing through the forecasting graphs (tests): one path per series follows
    /// <paramref name="paths"/> instead of sampling; returns each step's distribution parameters [step][param][series].
    /// </summary>
    internal List<float[][]> StepParameters(IReadOnlyList<SeriesInput> series, float[][] paths)
    {
        var steps = new List<float[][]>();
        Run(series, new ForecastOptions { Samples = 1, Horizon = paths[0].Length }, paths, steps, 0, default);
        return steps;
    }

    // first: position of series[0] in the caller's request (seeds and messages use request positions);
    // forced: teacher-forced paths instead of draws; stepParams: receives each step's distribution parameters.
    private IReadOnlyList<Forecast> Run(IReadOnlyList<SeriesInput> series, ForecastOptions options, float[][]? forced, List<float[][]>? stepParams, int first, CancellationToken cancel)
    {
        int horizon = options.Horizon ?? PredictionLength;
        if (series.Count == 0) throw new ArgumentException("Give at least one series.", nameof(series));
        if (options.Samples < 1) throw new ArgumentException($"samples must be >= 1, got {options.Samples}.", nameof(options));
        if (options.Quantiles.Any(q => !(q > 0 && q < 1))) throw new ArgumentException($"Quantiles must be in (0, 1), got [{string.Join(", ", options.Quantiles)}].", nameof(options));
        for (int i = 0; i < series.Count; i++) Validate(series[i], horizon, first + i);
        int n = series.Count, p = PastLength, t = TimeFeatureCount, sCount = options.Samples, rows = n * sCount;

        // Encoder inputs: the last PastLength values (left-padded as missing) and their time features.
        var past = new float[n * p];
        var observed = new float[n * p];
        var pastTime = new float[n * p * t];
        var futureTime = new float[n * horizon * t];
        for (int i = 0; i < n; i++)
        {
            var v = series[i].Values;
            int pad = Math.Max(0, p - v.Length);
            var (features, origin) = Features(series[i], horizon, pad);
            for (int k = 0; k < p; k++)
            {
                int at = v.Length - p + k;                                        // index into the history (negative = padding)
                bool real = at >= 0 && !float.IsNaN(v[at]);
                past[i * p + k] = real ? v[at] : 0;
                observed[i * p + k] = real ? 1 : 0;
                if (at + origin >= 0) features.AsSpan((at + origin) * t, t).CopyTo(pastTime.AsSpan((i * p + k) * t, t));
            }
            features.AsSpan((v.Length + origin) * t, horizon * t).CopyTo(futureTime.AsSpan(i * horizon * t, horizon * t));
        }
        var inputs = new Dictionary<string, OrtValue>
        {
            ["past_values"] = OrtValue.CreateTensorValueFromMemory(past, [n, p]),
            ["past_observed_mask"] = OrtValue.CreateTensorValueFromMemory(observed, [n, p]),
            ["past_time_features"] = OrtValue.CreateTensorValueFromMemory(pastTime, [n, p, t]),
        };
        if (StaticCategoricalCount > 0) inputs["static_categorical_features"] = OrtValue.CreateTensorValueFromMemory(series.SelectMany(s => s.StaticCategorical!).ToArray(), [n, StaticCategoricalCount]);
        if (StaticRealCount > 0) inputs["static_real_features"] = OrtValue.CreateTensorValueFromMemory(series.SelectMany(s => s.StaticReal!).ToArray(), [n, StaticRealCount]);
        if (UsesSeed) inputs[GraphInputs.DropoutSeed] = OrtValue.CreateTensorValueFromMemory(new long[] { Seed(options.Seed, 0) }, []);
        float[] enc, loc, scale, stat;
        try
        {
            using var run = new RunOptions();
            using var outs = _encoder.Run(run, inputs.Keys.ToArray(), inputs.Values.ToArray(), ["encoder_last_hidden_state", "loc", "scale", "static_features"]);
            (enc, loc, scale, stat) = (outs[0].GetTensorDataAsSpan<float>().ToArray(), outs[1].GetTensorDataAsSpan<float>().ToArray(),
                outs[2].GetTensorDataAsSpan<float>().ToArray(), outs[3].GetTensorDataAsSpan<float>().ToArray());
        }
        finally
        {
            foreach (var v in inputs.Values) v.Dispose();
        }

        // A context whose mean magnitude overflows float32 (values near 3e38) has no scale to forecast in.
        for (int i = 0; i < n; i++)
            if (!float.IsFinite(scale[i]) || !float.IsFinite(loc[i]))
                throw new ForecastOverflowException(first + i, $"series {first + i}: the mean magnitude of its last {ContextLength} values (its scale) overflows float32 " +
                    $"(values up to {series[i].Values.Where(float.IsFinite).Max(Math.Abs).ToString("G3", System.Globalization.CultureInfo.InvariantCulture)}); scale the series down.");

        // Every path: its scaled sequence (history then samples), the encoder output repeated, its generator.
        int le = EncoderLength, d = DModel, f = FeatureSize, sf = StaticFeatureCount, nl = _lags.Length;
        var encRows = new float[rows * le * d];
        var seq = new float[rows * (p + horizon)];
        var rngs = new System.Random[rows];
        for (int r = 0; r < rows; r++)
        {
            int i = r / sCount;
            enc.AsSpan(i * le * d, le * d).CopyTo(encRows.AsSpan(r * le * d, le * d));
            for (int k = 0; k < p; k++) seq[r * (p + horizon) + k] = (past[i * p + k] - loc[i]) / scale[i];
            rngs[r] = new Xoshiro256StarStar(Seed(options.Seed, (first + i) * 1_000_003L + r % sCount + 1));
        }
        var samples = new float[rows * horizon];
        // Every decoder step reads the same encoder output: on a device it is copied there once, not by every step. The
        // step's other input (the lagged samples) and its outputs (the distribution's parameters, sampled from here) are
        // host arithmetic each step, so they cross.
        using var encValue = _placement.ToResident(_decoder, encRows, [rows, le, d], ref _deviceAllocator, _placement.IsHost ? null : Copier().Copy);
        for (int k = 0; k < horizon; k++)
        {
            cancel.ThrowIfCancellationRequested();
            int len = k + 1;
            var x = new float[rows * len * f];
            for (int r = 0; r < rows; r++)
            {
                int i = r / sCount;
                for (int j = 0; j < len; j++)
                {
                    var row = x.AsSpan((r * len + j) * f, f);
                    for (int l = 0; l < nl; l++) row[l] = seq[r * (p + horizon) + p + j - _lags[l]];
                    stat.AsSpan(i * sf, sf).CopyTo(row[nl..]);
                    futureTime.AsSpan((i * horizon + j) * t, t).CopyTo(row[(nl + sf)..]);
                }
            }
            var dec = new Dictionary<string, OrtValue>
            {
                ["inputs_embeds"] = OrtValue.CreateTensorValueFromMemory(x, [rows, len, f]),
                ["encoder_last_hidden_state"] = encValue,
            };
            if (UsesSeed) dec[GraphInputs.DropoutSeed] = OrtValue.CreateTensorValueFromMemory(new long[] { Seed(options.Seed, k + 1) }, []);
            int np = ParameterCount;
            var ps = new float[np][];
            try
            {
                using var run = new RunOptions();
                using var outs = _decoder.Run(run, dec.Keys.ToArray(), dec.Values.ToArray(), Enumerable.Range(0, np).Select(j => $"params.{j}").ToArray());
                for (int j = 0; j < np; j++) ps[j] = outs[j].GetTensorDataAsSpan<float>().ToArray();
                stepParams?.Add(ps);
                for (int j = 0; j < np; j++)
                    if (Array.FindIndex(ps[j], v => !float.IsFinite(v)) is var bad and >= 0)
                        throw new ForecastOverflowException(first + bad / sCount, $"series {first + bad / sCount}: '{ModelDir}' gave a non-finite distribution parameter ({ps[j][bad]}) " +
                            $"at step {k + 1}: float32 overflowed on the series' inputs (values far from their scale, huge time or static features), or the weights are broken (diverged training?).");
            }
            finally
            {
                foreach (var (name, v) in dec) if (name != "encoder_last_hidden_state") v.Dispose();
            }
            for (int r = 0; r < rows; r++)
            {
                int i = r / sCount;
                double y = forced is null ? Draw(ps, r, loc[i], scale[i], rngs[r]) : forced[i][k];
                if (!float.IsFinite((float)y))
                    throw new ForecastOverflowException(first + i, $"series {first + i}: step {k + 1} drew {y}, beyond float range (loc {loc[i]}, scale {scale[i]}); the history's scale is too large for this model.");
                samples[r * horizon + k] = (float)y;
                seq[r * (p + horizon) + p + k] = (float)((y - loc[i]) / scale[i]);
            }
        }

        var result = new Forecast[n];
        for (int i = 0; i < n; i++)
        {
            var paths = Enumerable.Range(0, sCount).Select(s => samples.AsSpan((i * sCount + s) * horizon, horizon).ToArray()).ToArray();
            var mean = Enumerable.Range(0, horizon).Select(k => (float)paths.Average(s => (double)s[k])).ToArray();
            var quantiles = options.Quantiles.Distinct().ToDictionary(q => q, q => ForecastMetrics.SampleQuantile(paths, q));
            result[i] = new Forecast(paths, mean, ForecastMetrics.SampleQuantile(paths, 0.5), quantiles);
        }
        return result;
    }

    /// <summary>One draw of step k's distribution (row r), mapped back from the scaled space.</summary>
    private double Draw(float[][] ps, int r, float loc, float scale, System.Random rng)
    {
        switch (Distribution)
        {
            case "student_t":
                return loc + scale * StudentT.Sample(rng, ps[1][r], ps[2][r], ps[0][r]);
            case "normal":
                return loc + scale * Normal.Sample(rng, ps[0][r], ps[1][r]);
            default:
            {
                // torch's NegativeBinomial(total_count, logits + log scale) samples as torch does: a Poisson of
                // λ ~ Gamma(total_count, scale e^logits), in double (MathNet's integer samplers overflow for huge λ).
                double lambda = Gamma.Sample(rng, ps[0][r], Math.Exp(-(ps[1][r] + Math.Log(scale))));
                if (!double.IsFinite(lambda)) return lambda;
                if (lambda < 1e6) return Poisson.Sample(rng, lambda);
                return Math.Max(0, Math.Round(lambda + Math.Sqrt(lambda) * Normal.Sample(rng, 0, 1)));       // normal approximation
            }
        }
    }

    /// <summary>
    /// The series' time features over history + horizon, and the row of its first value: given (padding rows stay
    /// zero), or derived monthly from its start, then also for the <paramref name="pad"/> months of padding before it.
    /// </summary>
    private (float[] Features, int Origin) Features(SeriesInput s, int horizon, int pad)
    {
        if (s.TimeFeatures is { } tf) return (tf, 0);
        if (TimeFeatureCount == 0) return ([], 0);
        return (TimeFeatures.Monthly(s.Start!.Value, -pad, pad + s.Values.Length + horizon), pad);
    }

    private static int Seed(long seed, long salt) => (int)((ulong)(seed * 6364136223846793005L + salt * 1442695040888963407L + 1) >> 33);

    public void Dispose()
    {
        _encoder.Dispose();
        _copier?.Dispose();
        _deviceAllocator?.Dispose();
        _decoder.Dispose();
    }
}
