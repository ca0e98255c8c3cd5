using System.Globalization;
using System.Text.Json;
using Optimum.Inference.Forecasting;
using static Optimum.Server.RequestJson;
using Optimum.Data;

namespace Optimum.Server;

/// <summary>A validated POST /v1/forecast request; every series has passed <see cref="Forecaster.Validate"/>.</summary>
public sealed record ForecastRequest(string Model, IReadOnlyList<SeriesInput> Series, int Horizon, IReadOnlyList<double> Quantiles, int Samples, long Seed);

/// <summary>
/// Parses and checks a forecast request body, naming the field at fault (e.g. 'series[1].values[3]'):
/// 400 for malformed JSON and wrong types, 404 for an unknown model, 422 for values the model cannot take.
/// </summary>
public static class ForecastParser
{
    public const int MaxQuantiles = 19;
    public static readonly IReadOnlyList<double> DefaultQuantiles = [0.1, 0.5, 0.9];
    public const int DefaultSamples = 100;
    private static readonly string[] DateFormats = ["yyyy-MM", "yyyy-MM-dd"];

    public static ForecastRequest Parse(ReadOnlySpan<byte> body, ServerOptions o, ModelRegistry models)
    {
        using var doc = RequestJson.Parse(body);
        var root = doc.RootElement;
        string model = Model(root, models, ServedKind.Forecaster);
        models.TryGetForecaster(model, out var served);
        var f = served.Model;

        if (!root.TryGetProperty("series", out var ss) || ss.ValueKind == JsonValueKind.Null) throw Bad("'series' is required.");
        if (ss.ValueKind != JsonValueKind.Array) throw Type("series", "an array of series objects", ss);
        int horizon = Int(root, "horizon", f.PredictionLength);
        var quantiles = Quantiles(root);
        int samples = Int(root, "samples", DefaultSamples);
        long seed = 0;
        if (root.TryGetProperty("seed", out var sd) && sd.ValueKind != JsonValueKind.Null && (sd.ValueKind != JsonValueKind.Number || !sd.TryGetInt64(out seed)))
            throw Type("seed", "an integer", sd);
        // All series are read (wrong types: 400) before the counts and ranges are checked (422).
        var read = ss.EnumerateArray().Select((s, i) => Series(s, i)).ToList();

        if (read.Count == 0 || read.Count > o.MaxForecastSeries) throw Range($"'series' must hold 1 to {o.MaxForecastSeries} series, got {read.Count}.");
        if (horizon < 1 || horizon > f.PredictionLength) throw Range($"'horizon' must be in [1, {f.PredictionLength}] (the model's prediction_length), got {horizon}.");
        if (quantiles.Count == 0 || quantiles.Count > MaxQuantiles) throw Range($"'quantiles' must hold 1 to {MaxQuantiles} levels, got {quantiles.Count}.");
        foreach (var q in quantiles)
            if (!(q > 0 && q < 1)) throw Range($"'quantiles' must be in (0, 1), got {Key(q)}.");
        if (samples < 1 || samples > o.MaxForecastSamples) throw Range($"'samples' must be in [1, {o.MaxForecastSamples}], got {samples}.");
        var series = new List<SeriesInput>(read.Count);
        for (int i = 0; i < read.Count; i++)
        {
            var (s, rows, name) = read[i];
            if (name is not null)
            {
                try { s = s with { StaticCategorical = [f.SeriesIndex(name)] }; }
                catch (ArgumentException e) { throw Range($"series {i}: {e.Message}", e); }
            }
            if (rows is not null)
            {
                int bad = Array.FindIndex(rows, r => r.Length != f.TimeFeatureCount);
                if (bad >= 0) throw Range($"'series[{i}].time_features[{bad}]' has {rows[bad].Length} numbers; the model takes {f.TimeFeatureCount} time features per step.");
                s = s with { TimeFeatures = rows.SelectMany(r => r).ToArray() };
            }
            try { f.Validate(s, horizon, i); }
            catch (ArgumentException e) { throw Range(e.Message, e); }
            series.Add(s);
        }
        return new ForecastRequest(model, series, horizon, quantiles.Distinct().ToList(), samples, seed);
    }

    /// <summary>The quantile key in responses: invariant culture, shortest round trip ("0.1", "0.975").</summary>
    public static string Key(double q) => q.ToString(CultureInfo.InvariantCulture);

    private static List<double> Quantiles(JsonElement root)
    {
        if (!root.TryGetProperty("quantiles", out var qs) || qs.ValueKind == JsonValueKind.Null) return [.. DefaultQuantiles];
        if (qs.ValueKind != JsonValueKind.Array) throw Type("quantiles", "an array of numbers in (0, 1)", qs);
        return qs.EnumerateArray().Select((q, i) => q.ValueKind == JsonValueKind.Number ? q.GetDouble() : throw Type($"quantiles[{i}]", "a number in (0, 1)", q)).ToList();
    }

    /// <summary>One series' fields, its time features still as rows (their width is checked against the model later).</summary>
    private static (SeriesInput Input, float[][]? TimeRows, string? Name) Series(JsonElement s, int i)
    {
        string at = $"series[{i}]";
        if (s.ValueKind != JsonValueKind.Object) throw Type(at, "an object with 'values'", s);
        if (!s.TryGetProperty("values", out var v) || v.ValueKind == JsonValueKind.Null) throw Bad($"'{at}.values' is required.");
        var values = Items(v, $"{at}.values", "an array of numbers or nulls", (x, name) => x.ValueKind == JsonValueKind.Null ? float.NaN : Float(x, name, "a number or null"));

        DateTime? start = null;
        if (s.TryGetProperty("start", out var st) && st.ValueKind != JsonValueKind.Null)
        {
            if (st.ValueKind != JsonValueKind.String || !DateTime.TryParseExact(RequestJson.Text(st, $"{at}.start"), DateFormats, CultureInfo.InvariantCulture, DateTimeStyles.None, out var date))
                throw Type($"{at}.start", "a date \"YYYY-MM\" or \"YYYY-MM-DD\"", st);
            start = date;
        }

        float[][]? time = null;
        if (s.TryGetProperty("time_features", out var tf) && tf.ValueKind != JsonValueKind.Null)
            time = Items(tf, $"{at}.time_features", "an array of rows (one per step of history + horizon)",
                (row, name) => Items(row, name, "an array of numbers", (x, n) => Float(x, n, "a number")));

        long[]? categorical = null;
        if (s.TryGetProperty("static_categorical", out var sc) && sc.ValueKind != JsonValueKind.Null)
            categorical = Items(sc, $"{at}.static_categorical", "an array of integers",
                (x, name) => x.ValueKind == JsonValueKind.Number && x.TryGetInt64(out var c) ? c : throw Type(name, "an integer", x));
        float[]? real = null;
        if (s.TryGetProperty("static_real", out var sr) && sr.ValueKind != JsonValueKind.Null)
            real = Items(sr, $"{at}.static_real", "an array of numbers", (x, name) => Float(x, name, "a number"));
        string? seriesName = null;
        if (s.TryGetProperty("name", out var nm) && nm.ValueKind != JsonValueKind.Null)
            seriesName = nm.ValueKind == JsonValueKind.String ? RequestJson.Text(nm, $"{at}.name") : throw Type($"{at}.name", "a string (a series the model was trained on)", nm);
        if (seriesName is not null && categorical is not null) throw Bad($"'{at}' gives both 'name' and 'static_categorical'; the name picks the series index, give one of them.");
        return (new SeriesInput { Values = values, Start = start, StaticCategorical = categorical, StaticReal = real }, time, seriesName);
    }

    private static T[] Items<T>(JsonElement a, string name, string expected, Func<JsonElement, string, T> item)
    {
        if (a.ValueKind != JsonValueKind.Array) throw Type(name, expected, a);
        var result = new T[a.GetArrayLength()];
        int k = 0;
        foreach (var x in a.EnumerateArray()) { result[k] = item(x, $"{name}[{k}]"); k++; }
        return result;
    }

    /// <summary>A JSON number as float32; strings such as "NaN" are refused (JSON has no NaN), as are numbers beyond float32's range.</summary>
    private static float Float(JsonElement x, string name, string expected)
    {
        if (x.ValueKind != JsonValueKind.Number) throw Type(name, expected, x);
        if (!x.TryGetDouble(out var d) || !float.IsFinite((float)d)) throw Range($"'{name}' is {Clip(x.GetRawText())}, beyond the range of float32.");
        return (float)d;
    }
}
