using System.Globalization;
using System.Text.Json;
using static Optimum.Server.Tests.Fuzz.Outcome;

namespace Optimum.Server.Tests.Fuzz;

/// <summary>
/// A field of a request body the corpus mutates, and the rule for what the service must answer to any JSON value
/// there (the judge). <see cref="Path"/> may hold "*": an index drawn from the base body's array at that place.
/// The judge sees only JSON that is syntactically fine, within the depth limit, without duplicate keys or lone
/// surrogates (those are decided before it). <see cref="Removed"/>: the answer when the field is left out.
/// </summary>
internal sealed record Slot(object[] Path, Func<Lit, string, Outcome> Judge, string[] Pool, Outcome Removed);

/// <summary>A POST endpoint: its valid base body, its fields, and what an empty object gets.</summary>
internal sealed record PostSpec(string Route, J Base, IReadOnlyList<Slot> Slots, Outcome EmptyObject);

/// <summary>
/// The request specifications the corpus judges against, written from the API's documentation and the models the fuzz
/// server serves (not from the parsers): "tiny-gpt2" (GPT-2 vocabulary, 128 positions), "informer" (the HF informer-tiny
/// fixture: prediction_length 6, context_length 12, 2 time features, one static categorical of cardinality 3, no static
/// reals, Student-T), "digits" (a class-conditional 8×8 UNet: labels 0..2, num_train_timesteps 1000). Server options:
/// the defaults (MaxTokens 1024, MaxForecastSeries 64, MaxForecastSamples 1000, MaxImages 16, MaxBodyBytes 64 KiB).
/// </summary>
internal static class EndpointSpecs
{
    public const int MaxBodyBytes = 64 * 1024;
    public const string Lm = "tiny-gpt2", Forecaster = "informer", Images = "digits";

    // ---- judges ------------------------------------------------------------------------------------------------

    /// <summary>An integer field: null is the default (or <paramref name="ifNull"/>), a non-integer a 400, out of [lo, hi] a 422.</summary>
    private static Outcome Int(Lit v, string f, long lo, long hi, Outcome? ifNull = null, long typeMin = int.MinValue, long typeMax = int.MaxValue)
    {
        if (v.IsNull) return ifNull ?? Ok;
        if (!v.IsInteger(typeMin, typeMax)) return Bad(f);
        return v.Long >= lo && v.Long <= hi ? Ok : Range(f);
    }

    private static Outcome Num(Lit v, string f, Func<double, bool> ok) => v.IsNull ? Ok : !v.IsNumber ? Bad(f) : ok(v.Double) ? Ok : Range(f);

    private static Outcome Bool(Lit v, string f) => v.IsNull || v.Kind is JsonValueKind.True or JsonValueKind.False ? Ok : Bad(f);

    /// <summary>"model": present and null is a wrong type; another served model is of the wrong kind (400); an unknown one a 404.</summary>
    private static Outcome Model(Lit v, string own)
    {
        if (v.Kind != JsonValueKind.String) return Bad("model");
        if (v.String == own) return Ok;
        return v.String is Lm or Forecaster or Images ? Bad("model") : new(404, "model");
    }

    /// <summary>A float32 element of a forecast array: a wrong type is a 400, a number float32 cannot hold a 422.</summary>
    private static Outcome Float(Lit v, string f) => !v.IsNumber ? Bad(f) : float.IsFinite((float)v.Double) ? Ok : Range(f);

    /// <summary>An array field read element by element: the first element at fault decides.</summary>
    private static Outcome? Elements(Lit v, string f, Func<Lit, string, Outcome> element)
    {
        if (v.Kind != JsonValueKind.Array) return Bad(f);
        for (int i = 0; i < v.Items!.Count; i++)
            if (element(v.Items[i], $"{f}[{i}]") is { Valid: false } o) return o;
        return null;
    }

    // ---- literals any field may get ----------------------------------------------------------------------------

    public static string Deep(int n) => new string('[', n) + "1" + new string(']', n);
    public static string BigArray(int n, string item = "0") => "[" + string.Join(",", Enumerable.Repeat(item, n)) + "]";
    private static readonly string LongString = "\"" + new string('a', 3000) + "\"";

    /// <summary>Wrong types, huge and negative numbers, NaN and Infinity, strings .NET cannot hold, deep nesting, huge arrays.</summary>
    public static readonly string[] Generic =
    [
        "\"x\"", "\"\"", "\"5\"", "\"NaN\"", "\"Infinity\"", "true", "false", "null", "{}", "{\"a\":1}", "[]", "[1]", "[\"a\"]", "[null]",
        "0", "-0", "1", "-1", "2", "3", "4", "0.5", "1.5", "-1.5", "1.0", "1e2", "1E-2", "-0.0",
        "2147483647", "2147483648", "-2147483648", "-2147483649", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
        "1e308", "-1e308", "1e400", "-1e400", "1e-400", "3.4e38", "3.5e38", "-3.5e38", "1e30", "123456789012345678901234567890",
        "NaN", "-NaN", "Infinity", "-Infinity", "+1", "01", ".5", "1.", "0x10", "'x'", "undefined", "tru", "nul", "1e", "--1", "\"unterminated",
        "\"\\ud800\"", "\"a\\udfffb\"", "\"\\u0000\"", "\"é漢😀\"", "\"tab\\there\"", LongString, "{\"a\":1,\"a\":2}", "[{\"k\":\"\\udbff\"}]",
        Deep(8), Deep(200), Deep(5000), BigArray(3000), BigArray(40_000), BigArray(500, "\"a\""),
    ];

    // ---- /v1/completions ---------------------------------------------------------------------------------------

    /// <summary>Prompt tokens of the base prompt "Call me Ishmael" (GPT-2 makes 5 of it); with max_tokens beyond 128 - 5 it no longer fits.</summary>
    private const int BasePromptTokens = 5, Positions = 128;

    /// <summary>A prompt string: empty is a 422; 1,000 characters or more are over 128 tokens (413); shorter ones in this corpus fit.</summary>
    private static Outcome PromptText(Lit s) => s.String!.Length == 0 ? Range("prompt") : s.String.Length >= 1000 ? new(413, "prompt") : Ok;

    public static PostSpec Completions { get; } = new("/v1/completions",
        new JObj([("model", new JLit($"\"{Lm}\"")), ("prompt", new JLit("\"Call me Ishmael\"")), ("max_tokens", new JLit("4")), ("temperature", new JLit("0")), ("seed", new JLit("1"))]),
        [
            new(["model"], (v, _) => Model(v, Lm), [$"\"{Lm}\"", $"\"{Forecaster}\"", $"\"{Images}\"", "\"gpt-5\"", "\"TINY-GPT2\""], Ok),
            new(["prompt"], (v, f) => v.Kind switch
            {
                JsonValueKind.String => PromptText(v),
                JsonValueKind.Array when v.Items!.Any(x => x.Kind != JsonValueKind.String) => Bad(f),
                JsonValueKind.Array when v.Items!.Count is 0 or > 8 || v.Items.Any(x => x.String!.Length == 0) => Range(f),
                JsonValueKind.Array => v.Items!.Select(PromptText).FirstOrDefault(o => !o.Valid) ?? Ok,
                _ => Bad(f),
            }, ["\"Call me\"", "[\"a\", \"b c\"]", "[\"a\"]", "[]", "[\"\"]", "[\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\",\"a\"]", "[\"a\", 1]", "\"" + new string('a', 4000) + "\""], Bad("prompt")),
            new(["max_tokens"], (v, f) => v.IsInteger() && v.Long > Positions - BasePromptTokens && v.Long <= 1024 ? new(413, f) : Int(v, f, 1, Positions - BasePromptTokens),
                ["1", "2", "8", "123", "124", "1024", "1025", "0", "-1"], Ok),
            new(["temperature"], (v, f) => Num(v, f, t => t is >= 0 and <= 2), ["0", "0.7", "2", "2.0001", "-0.1", "1e-300"], Ok),
            new(["top_p"], (v, f) => Num(v, f, p => p is > 0 and <= 1), ["0.9", "1", "0", "1.01", "1e-300"], Ok),
            new(["top_k"], (v, f) => Int(v, f, 0, int.MaxValue), ["0", "1", "50", "-1", "2147483647"], Ok),
            new(["repetition_penalty"], (v, f) => Num(v, f, p => p is > 0 and <= 10), ["1", "1.3", "10", "0", "10.5", "1e-300"], Ok),
            new(["n"], (v, f) => Int(v, f, 1, 1), ["1", "2", "0"], Ok),
            new(["seed"], (v, f) => Int(v, f, int.MinValue, int.MaxValue), ["0", "7", "-7", "2147483647", "-2147483648"], Ok),
            new(["stream"], Bool, ["true", "false", "\"true\"", "1"], Ok),
            new(["stop"], (v, f) => v.Kind switch
            {
                JsonValueKind.Null => Ok,
                JsonValueKind.String => v.String!.Length is >= 1 and <= 64 ? Ok : Range(f),
                JsonValueKind.Array when v.Items!.Any(x => x.Kind != JsonValueKind.String) => Bad(f),
                JsonValueKind.Array => v.Items!.Count <= 4 && v.Items.All(x => x.String!.Length is >= 1 and <= 64) ? Ok : Range(f),
                _ => Bad(f),
            }, ["\".\"", "[\".\", \"\\n\"]", "[]", "[\"a\",\"b\",\"c\",\"d\",\"e\"]", "\"" + new string('s', 65) + "\"", "[\"\"]"], Ok),
        ],
        EmptyObject: Bad("prompt"));

    // ---- /v1/forecast ------------------------------------------------------------------------------------------

    private const int History = 19, Horizon = 6, TimeFeatures = 2, ContextLength = 12, Cardinality = 3;

    private static J BaseSeries()
    {
        var values = Enumerable.Range(0, History).Select(k => new JLit((10 + 3 * Math.Sin(2 * Math.PI * k / 12)).ToString("F2", CultureInfo.InvariantCulture)));
        var rows = Enumerable.Range(0, History + Horizon).Select(k => (J)new JArr(
            [new JLit((k % 12 / 11.0 - 0.5).ToString("F4", CultureInfo.InvariantCulture)), new JLit((k / 24.0).ToString("F4", CultureInfo.InvariantCulture))]));
        return new JObj([("values", new JArr([.. values])), ("time_features", new JArr([.. rows])), ("static_categorical", new JLit("[0]"))]);
    }

    private static readonly string BaseSeriesText = BaseSeries().Text();

    /// <summary>A series' values after its element checks: too short for the context, too long for the time features given, or all missing at the end.</summary>
    private static Outcome Values(Lit v, string f)
    {
        if (v.IsNull) return Bad(f);
        if (Elements(v, f, (x, n) => x.IsNull ? Ok : Float(x, n)) is { } o) return o;
        int n = v.Items!.Count;
        if (n < ContextLength || n + Horizon > History + Horizon) return Range("series 0");
        if (v.Items.Skip(n - ContextLength).All(x => x.IsNull)) return Range("series 0");
        return Overflows(v.Items.Select(x => x.IsNull ? (float?)null : (float)x.Double).ToArray()) ? Range("series 0") : Ok;
    }

    /// <summary>
    /// Whether the model's float32 arithmetic overflows on these values (HF's mean scaler): the mean magnitude of the last
    /// context_length observed values, at least 1e-10, is the scale; it, or a value of the past window divided by it, is infinite.
    /// </summary>
    private static bool Overflows(float?[] values)
    {
        float sum = 0;
        int count = 0;
        foreach (var x in values[^ContextLength..]) if (x is { } f) { sum += Math.Abs(f); count++; }
        float scale = Math.Max(sum / count, 1e-10f);
        return !float.IsFinite(scale) || values.Any(x => x is { } f && !float.IsFinite(f / scale));
    }

    private static readonly float?[] BaseValues = ((JArr)((JObj)BaseSeries()).Fields[0].Value).Items.Select(x => (float?)float.Parse(((JLit)x).Raw, CultureInfo.InvariantCulture)).ToArray();

    private static Outcome TimeFeatureRows(Lit v, string f)
    {
        if (v.IsNull) return Range("series 0");                                 // the model needs time features
        if (Elements(v, f, (row, r) => Elements(row, r, Float) ?? Ok) is { } o) return o;
        int bad = v.Items!.ToList().FindIndex(row => row.Items!.Count != TimeFeatures);
        if (bad >= 0) return Range($"{f}[{bad}]");
        return v.Items!.Count < History + Horizon ? Range("series 0") : Ok;
    }

    private static Outcome Series(Lit v, string f)
    {
        if (v.Kind != JsonValueKind.Array) return Bad(f);
        for (int i = 0; i < v.Items!.Count; i++)
        {
            var s = v.Items[i];
            if (s.Raw == BaseSeriesText) continue;
            if (s.Kind != JsonValueKind.Object) return Bad($"{f}[{i}]");
            return Bad($"{f}[{i}].values");                                      // the objects of the pools have no "values"
        }
        return v.Items.Count is >= 1 and <= 64 ? Ok : Range(f);
    }

    public static PostSpec Forecast { get; } = new("/v1/forecast",
        new JObj([("model", new JLit($"\"{Forecaster}\"")), ("series", new JArr([BaseSeries()])), ("horizon", new JLit("6")), ("quantiles", new JArr([new JLit("0.1"), new JLit("0.5"), new JLit("0.9")])),
            ("samples", new JLit("4")), ("seed", new JLit("1"))]),
        [
            new(["model"], (v, _) => Model(v, Forecaster), [$"\"{Forecaster}\"", $"\"{Lm}\"", $"\"{Images}\"", "\"arima\""], Ok),
            new(["series"], Series, ["[]", $"[{BaseSeries().Text()},{BaseSeries().Text()}]", BigArray(65, BaseSeries().Text()), "[1]", "[{}]"], Bad("series")),
            new(["series", 0], (v, f) => v.Kind != JsonValueKind.Object ? Bad(f) : Bad($"{f}.values"), ["{}", "{\"value\": [1]}"], Range("series")),
            new(["series", 0, "values"], Values, [BigArray(12, "1"), BigArray(11, "1"), BigArray(20, "1"), BigArray(19, "null"),
                "[" + string.Join(",", Enumerable.Repeat("1", 7).Concat(Enumerable.Repeat("null", 12))) + "]", "[1,2,\"3\"]", BigArray(19, "3e38"), BigArray(19, "-3e38"), "[" + string.Join(",", Enumerable.Repeat("3e38", 7).Concat(Enumerable.Repeat("1e-30", 12))) + "]",
                BigArray(19, "1e-45"), BigArray(19, "0")], Bad("series[0].values")),
            new(["series", 0, "values", "*"], (v, f) => v.IsNull ? Ok : Float(v, f) is { Valid: false } o ? o
                : Overflows([.. BaseValues.Select((x, k) => $"series[0].values[{k}]" == f ? (float)v.Double : x)]) ? Range("series 0") : Ok, ["null", "0", "-5", "1e20", "3.4028235e38", "3.5e38", "1e-45"], Ok),
            new(["series", 0, "time_features"], TimeFeatureRows, [BigArray(25, "[0,0]"), BigArray(24, "[0,0]"), BigArray(40, "[0,0]"), BigArray(25, "[0]"),
                BigArray(25, "[3e38,-3e38]"), BigArray(25, "[1e20,1e20]")], Range("series 0")),
            new(["series", 0, "time_features", "*"], (v, f) => Elements(v, f, Float) ?? (v.Items!.Count == TimeFeatures ? Ok : Range(f)), ["[0,0]", "[1]", "[1,2,3]", "[\"a\",1]", "[1e39,0]"], Range("series 0")),
            new(["series", 0, "time_features", "*", "*"], Float, ["0", "-1", "1e10", "3.5e38", "\"0\""], Range("series[0].time_features")),
            new(["series", 0, "static_categorical"], (v, f) => v.IsNull ? Range("series 0")
                : Elements(v, f, (x, n) => x.IsInteger(long.MinValue, long.MaxValue) ? Ok : Bad(n))
                  ?? (v.Items!.Count == 1 && v.Items[0].Long is >= 0 and < Cardinality ? Ok : Range("series 0")),
                ["[0]", "[1]", "[2]", "[3]", "[-1]", "[0,0]", "[1.5]", "[\"a\"]", "[9223372036854775807]"], Range("series 0")),
            new(["series", 0, "static_real"], (v, f) => v.IsNull ? Ok : Elements(v, f, Float) ?? (v.Items!.Count == 0 ? Ok : Range("series 0")), ["[]", "[1]", "[1e39]", "[\"a\"]"], Ok),
            new(["series", 0, "name"], (v, f) => v.IsNull ? Ok : v.Kind == JsonValueKind.String ? Bad("series[0]") : Bad(f), ["\"alpha\"", "\"delta\"", "null", "1"], Ok),
            new(["series", 0, "start"], (v, f) => v.IsNull ? Ok : v.Kind == JsonValueKind.String && v.String is "2000-01" or "1999-12-31" ? Ok : Bad(f),
                ["\"2000-01\"", "\"1999-12-31\"", "\"2000-13\"", "\"2000-02-30\"", "\"01/2000\"", "\"2000-01-01T00:00:00Z\""], Ok),
            new(["horizon"], (v, f) => Int(v, f, 1, Horizon), ["1", "6", "0", "7", "-6"], Ok),
            new(["quantiles"], (v, f) => v.IsNull ? Ok : Elements(v, f, (x, n) => x.IsNumber ? Ok : Bad(n))
                ?? (v.Items!.Count is 0 or > 19 || v.Items.Any(x => !(x.Double > 0 && x.Double < 1)) ? Range(f) : Ok),
                ["[0.5]", "[0.01,0.99]", "[]", "[0]", "[1]", BigArray(20, "0.5"), "[0.5,0.5]", "[\"0.5\"]"], Ok),
            new(["quantiles", "*"], (v, f) => !v.IsNumber ? Bad(f) : v.Double > 0 && v.Double < 1 ? Ok : Range("quantiles"), ["0.25", "0", "1", "-0.5", "1e-300"], Ok),
            new(["samples"], (v, f) => Int(v, f, 1, 1000), ["1", "2", "1000", "1001", "0"], Ok),
            new(["seed"], (v, f) => Int(v, f, long.MinValue, long.MaxValue, typeMin: long.MinValue, typeMax: long.MaxValue), ["0", "-1", "9223372036854775807"], Ok),
        ],
        EmptyObject: Bad("series"));

    // ---- /v1/images/generations --------------------------------------------------------------------------------

    private const int Classes = 3, TrainTimesteps = 1000;

    public static PostSpec Images_ { get; } = new("/v1/images/generations",
        new JObj([("model", new JLit($"\"{Images}\"")), ("label", new JLit("1")), ("count", new JLit("1")), ("steps", new JLit("2")), ("seed", new JLit("1"))]),
        [
            new(["model"], (v, _) => Model(v, Images), [$"\"{Images}\"", $"\"{Lm}\"", $"\"{Forecaster}\"", "\"dall-e-3\""], Ok),
            new(["count"], (v, f) => Int(v, f, 1, 16), ["1", "2", "16", "17", "0"], Ok),
            new(["n"], (v, f) => v.IsNull ? Ok : Bad(f), ["1", "2", "null"], Ok),                          // beside "count": give one, not both
            new(["label"], (v, f) => Int(v, f, 0, Classes - 1), ["0", "2", "3", "-1", "null"], Ok),
            new(["labels"], (v, f) => v.IsNull ? Ok : Bad(f), ["[0]", "[0,1]", "null"], Ok),                // beside "label": likewise
            new(["steps"], (v, f) => Int(v, f, 1, TrainTimesteps), ["1", "3", "0", "1001", "1000000"], Ok),
            new(["guidance"], (v, f) => Num(v, f, double.IsFinite), ["1", "3", "0", "-2", "1e400"], Ok),
            new(["eta"], (v, f) => Num(v, f, e => e is >= 0 and <= 1), ["0", "1", "0.5", "-0.1", "1.5"], Ok),
            new(["scheduler"], (v, f) => v.IsNull ? Ok : v.Kind != JsonValueKind.String ? Bad(f)
                : v.String!.ToLowerInvariant() is "ddim" or "ddpm" ? Ok : Range(f), ["\"ddim\"", "\"DDPM\"", "\"euler\"", "\"\""], Ok),
            new(["seed"], (v, f) => Int(v, f, long.MinValue, long.MaxValue, typeMin: long.MinValue, typeMax: long.MaxValue), ["0", "-1", "9223372036854775807"], Ok),
            new(["response_format"], (v, f) => v.IsNull ? Ok : v.Kind != JsonValueKind.String ? Bad(f) : v.String == "b64_json" ? Ok : Range(f), ["\"b64_json\"", "\"url\""], Ok),
        ],
        EmptyObject: Ok);                                                       // every field has a default: one unconditional image of 50 steps

    public static IReadOnlyList<PostSpec> Posts { get; } = [Completions, Forecast, Images_];
}
