using System.Text.Json;
using Optimum.Core;

namespace Optimum.Data;

/// <summary>A monthly series: <c>Values[i]</c> is the month <c>Start.AddMonths(i)</c>; NaN marks a missing value.</summary>
public sealed record TimeSeries(string Name, DateTime Start, float[] Values);

/// <summary>Readers for time-series files.</summary>
public static class TimeSeriesFiles
{
    /// <summary>
    /// Reads vega-datasets' <c>unemployment-across-industries.json</c>: an array of records
    /// <c>{"series", "year", "month", "count", ...}</c>, one series per <c>series</c> name in order of first
    /// appearance, values (<c>count</c>; null = NaN) sorted by date. Months must be contiguous and unique.
    /// The records' <c>date</c> is ignored: it carries a US time-zone offset, <c>year</c>/<c>month</c> do not.
    /// </summary>
    public static IReadOnlyList<TimeSeries> ReadVegaUnemployment(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Time-series file '{path}' does not exist.", path);
        JsonDocument parsed;
        try { parsed = JsonDocument.Parse(File.ReadAllBytes(path)); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: not valid JSON ({e.Message}); expected a JSON array of records {{series, year, month, count}}.", e); }
        using var doc = parsed;
        if (doc.RootElement.ValueKind != JsonValueKind.Array)
            throw new InvalidDataException($"{path}: expected a JSON array of records, got {doc.RootElement.ValueKind}.");

        var byName = new Dictionary<string, List<(int Month, float Value)>>();
        var order = new List<string>();
        int index = 0;
        foreach (var r in doc.RootElement.EnumerateArray())
        {
            string name;
            int year, month;
            float value;
            try
            {
                name = r.GetProperty("series").GetString() ?? throw new InvalidOperationException("\"series\" is null");
                year = r.GetProperty("year").GetInt32();
                month = r.GetProperty("month").GetInt32();
                var count = r.GetProperty("count");
                value = count.ValueKind == JsonValueKind.Null ? float.NaN : count.GetSingle();
            }
            catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
            {
                throw new InvalidDataException($"{path}: record {index}: expected {{\"series\": string, \"year\": int, \"month\": int, \"count\": number}} ({e.Message}).", e);
            }
            if (month is < 1 or > 12) throw new InvalidDataException($"{path}: record {index} (series '{name}'): month {month} is not in 1..12.");
            if (!byName.TryGetValue(name, out var points)) { byName[name] = points = []; order.Add(name); }
            points.Add((year * 12 + month - 1, value));
            index++;
        }
        return Assemble(path, order, byName);
    }

    /// <summary>Reads a time-series file by extension: .json (vega's unemployment layout) or .csv (<see cref="ReadLongCsv"/>).</summary>
    public static IReadOnlyList<TimeSeries> Read(string path) => Path.GetExtension(path).ToLowerInvariant() switch
    {
        ".json" => ReadVegaUnemployment(path),
        ".csv" => ReadLongCsv(path),
        var e => throw new InvalidDataException($"{path}: unknown time-series format '{e}' (use .csv with series,month,value rows or vega's .json)."),
    };

    /// <summary>
    /// Reads monthly series in long CSV form: a header <c>series,month,value</c>, then one row per observation
    /// with the month as YYYY-MM (or YYYY-MM-DD, day ignored) and an empty value for a missing one. Series keep
    /// their order of first appearance; months must be contiguous and unique. Fields must not contain commas.
    /// </summary>
    public static IReadOnlyList<TimeSeries> ReadLongCsv(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Time-series file '{path}' does not exist.", path);
        var lines = File.ReadAllLines(path);
        if (lines.Length == 0 || lines[0].Trim().ToLowerInvariant() != "series,month,value")
            throw new InvalidDataException($"{path}: the first line must be the header 'series,month,value'.");
        var byName = new Dictionary<string, List<(int Month, float Value)>>();
        var order = new List<string>();
        for (int i = 1; i < lines.Length; i++)
        {
            if (lines[i].Length == 0) continue;
            var f = lines[i].Split(',');
            if (f.Length != 3) throw new InvalidDataException($"{path}:{i + 1}: expected 3 fields (series,month,value), got {f.Length}.");
            var m = f[1].Trim();
            if (m.Length < 7 || m[4] != '-' || !int.TryParse(m[..4], out var year) || !int.TryParse(m[5..7], out var month) || month is < 1 or > 12)
                throw new InvalidDataException($"{path}:{i + 1}: month '{m}' is not YYYY-MM.");
            float value = float.NaN;
            if (f[2].Trim().Length > 0 && !float.TryParse(f[2], System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out value))
                throw new InvalidDataException($"{path}:{i + 1}: value '{f[2]}' is not a number.");
            if (float.IsInfinity(value)) throw new InvalidDataException($"{path}:{i + 1}: value '{f[2]}' is not finite.");
            var name = f[0].Trim();
            if (!byName.TryGetValue(name, out var points)) { byName[name] = points = []; order.Add(name); }
            points.Add((year * 12 + month - 1, value));
        }
        return Assemble(path, order, byName);
    }

    private static IReadOnlyList<TimeSeries> Assemble(string path, List<string> order, Dictionary<string, List<(int Month, float Value)>> byName)
    {
        if (order.Count == 0) throw new InvalidDataException($"{path}: no records.");

        var result = new List<TimeSeries>(order.Count);
        foreach (var name in order)
        {
            var points = byName[name];
            points.Sort((a, b) => a.Month.CompareTo(b.Month));      // List.Sort is unstable, but duplicates are refused below
            for (int i = 1; i < points.Count; i++)
                if (points[i].Month != points[i - 1].Month + 1)
                    throw new InvalidDataException(
                        $"{path}: series '{name}' is not contiguous monthly: {Format(points[i - 1].Month)} is followed by {Format(points[i].Month)}"
                        + (points[i].Month == points[i - 1].Month ? " (duplicate month)." : $" (missing {Format(points[i - 1].Month + 1)})."));
            int first = points[0].Month;
            result.Add(new TimeSeries(name, new DateTime(first / 12, first % 12 + 1, 1), points.Select(p => p.Value).ToArray()));
        }
        return result;
    }

    private static string Format(int months) => $"{months / 12:D4}-{months % 12 + 1:D2}";
}

/// <summary>
/// GluonTS's monthly time features, in the order HF's time-series models receive them:
/// month of year (<c>MonthOfYear</c> in <c>gluonts.time_feature</c>) and age (<c>AddAgeFeature</c>, log scale).
/// </summary>
public static class TimeFeatures
{
    /// <summary>Features per step returned by <see cref="Monthly(DateTime, int, int)"/>.</summary>
    public const int MonthlyCount = 2;

    /// <summary>Month of year scaled to [-0.5, 0.5]: January -0.5, December 0.5.</summary>
    public static double MonthOfYear(DateTime t) => (t.Month - 1) / 11.0 - 0.5;

    /// <summary>log10(2 + index), where index counts steps from the series start.</summary>
    public static double Age(int index) => Math.Log10(2 + index);

    /// <summary>
    /// Row-major [length, 2] (month of year, age) for steps offset..offset+length-1 since <paramref name="start"/>.
    /// Negative steps (left padding) get their own calendar month and the age of step 0.
    /// </summary>
    public static float[] Monthly(DateTime start, int offset, int length)
    {
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length), length, "Length must be non-negative.");
        var f = new float[length * MonthlyCount];
        Monthly(start, offset, f);
        return f;
    }

    internal static void Monthly(DateTime start, int offset, Span<float> dest)
    {
        for (int i = 0; i < dest.Length / MonthlyCount; i++)
        {
            int step = offset + i;
            dest[i * MonthlyCount] = (float)MonthOfYear(start.AddMonths(step));
            dest[i * MonthlyCount + 1] = (float)Age(Math.Max(step, 0));
        }
    }
}

/// <summary>
/// Windows over monthly series in the layout of HF's TimeSeriesTransformer / Informer / Autoformer inputs,
/// cut as GluonTS's InstanceSplitter cuts them. A window at time t has the future [t, t+H) and the past
/// [t-P, t), P = contextLength + max(lags) (the model needs max(lags) extra steps to build lagged inputs).
/// <para>
/// Training samples are every (series, t) whose future lies in the series' first (length - holdout) points and
/// t &gt;= minPast, ordered series by series, t ascending. Validation has one sample per series: the window whose
/// future is the series' last H points. Past steps before the series start are padded with value 0, observed 0
/// (as InstanceSplitter pads); NaN values become value 0, observed 0. Padded steps get the time features of
/// their calendar month with the age clamped to step 0; GluonTS pads time features with 0 instead, but a
/// calendar month is a truer input and the observed mask marks those steps either way.
/// </para>
/// </summary>
public sealed class TimeSeriesWindows : IBatchSource
{
    private readonly IReadOnlyList<TimeSeries> _series;
    private readonly (int Series, int T)[] _train, _val;

    /// <param name="series">The series; kept by reference, so do not change their values afterwards.</param>
    /// <param name="contextLength">Past steps the model attends to.</param>
    /// <param name="predictionLength">Future steps H to forecast.</param>
    /// <param name="lags">The model's lags_sequence (each &gt;= 1); the past window is longer by their maximum.</param>
    /// <param name="holdout">Points at each series' end kept out of training (&gt;= H).</param>
    /// <param name="minPast">Smallest t of a training window (GluonTS's min_past; 0 allows all-padding pasts).</param>
    /// <param name="seriesIdAsCategorical">Adds static_categorical_features [B, 1] = series index.</param>
    public TimeSeriesWindows(IReadOnlyList<TimeSeries> series, int contextLength, int predictionLength, IReadOnlyList<int> lags,
        int holdout, int minPast, bool seriesIdAsCategorical)
    {
        ArgumentNullException.ThrowIfNull(series);
        ArgumentNullException.ThrowIfNull(lags);
        if (series.Count == 0) throw new ArgumentException("Need at least one series, got none.", nameof(series));
        if (contextLength < 1) throw new ArgumentOutOfRangeException(nameof(contextLength), contextLength, "Context length must be at least 1.");
        if (predictionLength < 1) throw new ArgumentOutOfRangeException(nameof(predictionLength), predictionLength, "Prediction length must be at least 1.");
        if (lags.Count == 0) throw new ArgumentException("Need at least one lag (e.g. [1]), got none.", nameof(lags));
        if (lags.Min() < 1) throw new ArgumentOutOfRangeException(nameof(lags), $"Lags must be >= 1, got [{string.Join(", ", lags)}].");
        if (holdout < predictionLength)
            throw new ArgumentException($"Holdout {holdout} is shorter than the prediction length {predictionLength}: validation futures would overlap training.", nameof(holdout));
        if (minPast < 0) throw new ArgumentOutOfRangeException(nameof(minPast), minPast, "minPast must be non-negative.");

        ContextLength = contextLength;
        PredictionLength = predictionLength;
        PastLength = contextLength + lags.Max();
        SeriesIdAsCategorical = seriesIdAsCategorical;
        _series = series;

        var train = new List<(int, int)>();
        _val = new (int, int)[series.Count];
        for (int s = 0; s < series.Count; s++)
        {
            var ts = series[s] ?? throw new ArgumentException($"Series {s} is null.", nameof(series));
            int length = ts.Values.Length, last = length - holdout - predictionLength;     // the last training t
            if (last < minPast)
                throw new ArgumentException(
                    $"Series {s} ('{ts.Name}') has {length} points; a training window needs minPast {minPast} + prediction {predictionLength} + holdout {holdout} = {minPast + predictionLength + holdout}.",
                    nameof(series));
            for (int t = minPast; t <= last; t++) train.Add((s, t));
            _val[s] = (s, length - predictionLength);
        }
        _train = train.ToArray();
    }

    public int ContextLength { get; }
    public int PredictionLength { get; }
    /// <summary>P = contextLength + max(lags): the length of past_values.</summary>
    public int PastLength { get; }
    public bool SeriesIdAsCategorical { get; }
    public IReadOnlyList<TimeSeries> Series => _series;
    public long TrainSamples => _train.Length;
    public long ValidationSamples => _val.Length;

    public void FillTrain(ReadOnlySpan<int> samples, Batch batch)
    {
        var rows = new (int, int)[samples.Length];
        for (int i = 0; i < samples.Length; i++)
        {
            if ((uint)samples[i] >= (uint)_train.Length)
                throw new ArgumentOutOfRangeException(nameof(samples), $"Training sample {samples[i]} is not in [0, {_train.Length}).");
            rows[i] = _train[samples[i]];
        }
        Fill(rows, batch);
    }

    public void FillValidation(long first, int count, Batch batch)
    {
        if (first < 0 || count < 0 || first + count > _val.Length)
            throw new ArgumentOutOfRangeException(nameof(first), $"Validation samples [{first}, {first + count}) exceed {_val.Length}.");
        Fill(_val.AsSpan((int)first, count).ToArray(), batch);
    }

    private void Fill((int Series, int T)[] rows, Batch batch)
    {
        int n = rows.Length, p = PastLength, h = PredictionLength, f = TimeFeatures.MonthlyCount;
        var pastValues = Reuse<float>(batch, "past_values", n, p);
        var pastFeatures = Reuse<float>(batch, "past_time_features", n, p, f);
        var pastObserved = Reuse<float>(batch, "past_observed_mask", n, p);
        var futureValues = Reuse<float>(batch, "future_values", n, h);
        var futureFeatures = Reuse<float>(batch, "future_time_features", n, h, f);
        var futureObserved = Reuse<float>(batch, "future_observed_mask", n, h);
        var ids = SeriesIdAsCategorical ? Reuse<long>(batch, "static_categorical_features", n, 1) : null;

        double observed = 0;
        for (int r = 0; r < n; r++)
        {
            var (s, t) = rows[r];
            var ts = _series[s];
            Slice(ts.Values, t - p, pastValues.AsSpan(r * p, p), pastObserved.AsSpan(r * p, p));
            observed += Slice(ts.Values, t, futureValues.AsSpan(r * h, h), futureObserved.AsSpan(r * h, h));
            TimeFeatures.Monthly(ts.Start, t - p, pastFeatures.AsSpan(r * p * f, p * f));
            TimeFeatures.Monthly(ts.Start, t, futureFeatures.AsSpan(r * h * f, h * f));
            if (ids is not null) ids[r] = s;
        }
        batch.Tokens = n;
        batch.LossWeight = observed;                                        // the loss averages observed future steps
    }

    /// <summary>Copies values[from..from+len) into value/mask; steps outside the series or NaN get 0/0. Returns the observed count.</summary>
    private static int Slice(float[] values, int from, Span<float> value, Span<float> mask)
    {
        int observed = 0;
        for (int i = 0; i < value.Length; i++)
        {
            int k = from + i;
            bool ok = k >= 0 && k < values.Length && !float.IsNaN(values[k]);
            value[i] = ok ? values[k] : 0f;
            mask[i] = ok ? 1f : 0f;
            if (ok) observed++;
        }
        return observed;
    }

    /// <summary>Reuses the batch's array when name, type and shape are unchanged, so the session keeps its bindings.</summary>
    private static T[] Reuse<T>(Batch batch, string name, params long[] shape)
    {
        if (batch.TryGetValue(name, out var t) && t.Data is T[] data && t.Shape.AsSpan().SequenceEqual(shape)) return data;
        var a = new T[shape.Aggregate(1L, (x, y) => x * y)];
        batch[name] = new BatchTensor(a, shape);
        return a;
    }
}

/// <summary>Reference forecasts that a trained model has to beat.</summary>
public static class TimeSeriesBaselines
{
    /// <summary>
    /// GluonTS's SeasonalNaivePredictor: ŷ[h] = y[T - season + (h mod season)], i.e. the last season repeated;
    /// the last value repeated when the history is shorter than one season.
    /// </summary>
    public static float[] SeasonalNaive(ReadOnlySpan<float> history, int horizon, int season)
    {
        if (history.IsEmpty) throw new ArgumentException("History is empty: nothing to forecast from.", nameof(history));
        if (horizon < 0) throw new ArgumentOutOfRangeException(nameof(horizon), horizon, "Horizon must be non-negative.");
        if (season < 1) throw new ArgumentOutOfRangeException(nameof(season), season, "Season must be at least 1.");
        var y = new float[horizon];
        int n = history.Length;
        for (int h = 0; h < horizon; h++) y[h] = n >= season ? history[n - season + h % season] : history[n - 1];
        return y;
    }
}

/// <summary>series.json beside a time-series model: the names of the series it was trained on, in id order (the static categorical feature).</summary>
public static class SeriesIds
{
    public const string File = "series.json";

    public static void Save(string dir, IReadOnlyList<string> names) =>
        Optimum.Core.AtomicFile.Write(Path.Combine(dir, File), System.Text.Encoding.UTF8.GetBytes(System.Text.Json.JsonSerializer.Serialize(names) + "\n"));

    /// <summary>The names in id order, or null when the folder has no series.json.</summary>
    public static string[]? Load(string dir)
    {
        var path = Path.Combine(dir, File);
        if (!System.IO.File.Exists(path)) return null;
        try { return System.Text.Json.JsonSerializer.Deserialize<string[]>(System.IO.File.ReadAllText(path)) ?? throw new InvalidDataException("null"); }
        catch (System.Text.Json.JsonException e) { throw new InvalidDataException($"{path}: expected a JSON list of series names ({e.Message}).", e); }
    }
}
