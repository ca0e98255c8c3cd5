using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.DependencyInjection;
using Optimum.Inference.Forecasting;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Optimum.Core;
using Optimum.Data;

namespace Optimum.Server.Tests;

/// <summary>
/// The HF informer-tiny fixture exported to a model folder: prediction_length 6, context_length 12,
/// lags up to 7, 2 time features (no time_features kind, so requests send them), 1 static categorical of cardinality 3.
/// </summary>
public sealed class ForecastFixture : IDisposable
{
    public ForecastFixture()
    {
        Root = Repo.TempDir();
        Dir = Path.Combine(Root, "informer");
        Assert.Empty(ModelKinds.Export(Repo.Fixture("informer-tiny"), Dir));
        Optimum.Data.SeriesIds.Save(Dir, ["alpha", "beta", "gamma"]);       // the series-index categorical by name
    }

    public string Root { get; }
    public string Dir { get; }

    public void Dispose() => Directory.Delete(Root, true);
}

/// <summary>POST /v1/forecast through WebApplicationFactory: numbers against Forecaster.Predict, and every error.</summary>
[Collection(ModelFixture.Collection)]
public sealed class ForecastEndpointTests(ModelFixture lm, ForecastFixture fc) : IClassFixture<ForecastFixture>
{
    private const int History = 19, PredictionLength = 6;
    /// <summary>Server and direct forecasts agree to this, relative and absolute (float32 through JSON round trips exactly).</summary>
    private const double Tolerance = 1e-6;

    /// <summary>A server with only the forecaster (or the forecaster then the language model) and the given "Optimum:*" settings.</summary>
    private WebApplicationFactory<Program> Factory(bool withLm = false, params (string Key, string Value)[] settings) =>
        new WebApplicationFactory<Program>().WithWebHostBuilder(b =>
        {
            b.UseSetting("Optimum:Models:0", fc.Dir);
            if (withLm) b.UseSetting("Optimum:Models:1", lm.Dir);
            b.UseSetting("Optimum:Threads", "1");
            foreach (var (k, v) in settings) b.UseSetting("Optimum:" + k, v);
        });

    /// <summary>Series i: a yearly wave around 10 + i (series 1 misses its 6th value), time features for history + 6 steps, category i mod 3.</summary>
    private static SeriesInput Input(int i, int history = History)
    {
        var values = Enumerable.Range(0, history).Select(k => (float)(10 + i + 3 * Math.Sin(2 * Math.PI * k / 12))).ToArray();
        if (i == 1) values[5] = float.NaN;
        var time = Enumerable.Range(0, history + PredictionLength).SelectMany(k => new[] { (float)(k % 12 / 11.0 - 0.5), k / 24f }).ToArray();
        return new SeriesInput { Values = values, TimeFeatures = time, StaticCategorical = [i % 3] };
    }

    private static string Json(SeriesInput s) => JsonSerializer.Serialize(new
    {
        values = s.Values.Select(v => float.IsNaN(v) ? (float?)null : v),
        time_features = s.TimeFeatures!.Chunk(2),
        static_categorical = s.StaticCategorical,
    });

    /// <summary>A body from a template: $S = a valid series, $V = its values, $TF = its time-feature rows.</summary>
    private static StringContent Body(string template)
    {
        var s = Input(0);
        var body = template.Replace("$S", Json(s)).Replace("$V", JsonSerializer.Serialize(s.Values)).Replace("$TF", JsonSerializer.Serialize(s.TimeFeatures!.Chunk(2)));
        return new StringContent(body, Encoding.UTF8, "application/json");
    }

    private static async Task<string> Problem(HttpResponseMessage r, HttpStatusCode status)
    {
        Assert.Equal(status, r.StatusCode);
        Assert.Equal("application/problem+json", r.Content.Headers.ContentType?.MediaType);
        var doc = await r.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal((int)status, doc.GetProperty("status").GetInt32());
        return doc.GetProperty("detail").GetString()!;
    }

    private static float[] Floats(JsonElement a) => a.EnumerateArray().Select(x => x.GetSingle()).ToArray();

    private static void AssertClose(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int k = 0; k < expected.Length; k++)
            Assert.True(Math.Abs(expected[k] - actual[k]) <= Tolerance * (1 + Math.Abs(expected[k])), $"step {k}: expected {expected[k]}, got {actual[k]}");
    }

    [Fact]
    public async Task Forecast_EqualsForecasterPredict_WithOrderedQuantiles_AndIsSeeded()
    {
        await using var f = Factory();
        var c = f.CreateClient();
        var request = $"{{\"model\": \"informer\", \"series\": [{Json(Input(0))}, {Json(Input(1))}], \"horizon\": 4, \"samples\": 200, \"seed\": 7}}";
        var r = await c.PostAsync("/v1/forecast", Body(request));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var text = await r.Content.ReadAsStringAsync();
        Assert.Equal(text, await (await c.PostAsync("/v1/forecast", Body(request))).Content.ReadAsStringAsync());
        Assert.NotEqual(text, await (await c.PostAsync("/v1/forecast", Body(request.Replace("\"seed\": 7", "\"seed\": 8")))).Content.ReadAsStringAsync());

        var body = JsonDocument.Parse(text).RootElement;
        Assert.Equal("informer", body.GetProperty("model").GetString());
        Assert.Equal(4, body.GetProperty("horizon").GetInt32());
        var got = body.GetProperty("forecasts").EnumerateArray().ToArray();
        Assert.Equal(2, got.Length);

        using var model = new Forecaster(fc.Dir, settings: new SessionSettings { IntraOpThreads = 1 });
        var expected = model.Predict([Input(0), Input(1)], new ForecastOptions { Samples = 200, Horizon = 4, Seed = 7 });
        for (int i = 0; i < 2; i++)
        {
            var q = got[i].GetProperty("quantiles");
            Assert.Equal(["0.1", "0.5", "0.9"], q.EnumerateObject().Select(p => p.Name));
            var (lo, median, hi) = (Floats(q.GetProperty("0.1")), Floats(got[i].GetProperty("median")), Floats(q.GetProperty("0.9")));
            Assert.Equal(4, median.Length);
            for (int k = 0; k < 4; k++) Assert.True(lo[k] <= median[k] && median[k] <= hi[k], $"series {i} step {k}: {lo[k]} <= {median[k]} <= {hi[k]}");
            Assert.True(hi.Zip(lo).Any(p => p.First > p.Second), $"series {i}: the samples do not spread");
            AssertClose(expected[i].Mean, Floats(got[i].GetProperty("mean")));
            AssertClose(expected[i].Median, median);
            AssertClose(expected[i].Median, Floats(q.GetProperty("0.5")));
            AssertClose(expected[i].Quantiles[0.1], lo);
            AssertClose(expected[i].Quantiles[0.9], hi);
        }
    }

    [Fact]
    public async Task Defaults_AreTheOnlyModel_ItsPredictionLength_AndQuantileKeysRoundTrip()
    {
        await using var f = Factory();
        var c = f.CreateClient();
        var body = await (await c.PostAsync("/v1/forecast", Body("{\"series\": [$S], \"samples\": 20}"))).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("informer", body.GetProperty("model").GetString());
        Assert.Equal(PredictionLength, body.GetProperty("horizon").GetInt32());
        var first = body.GetProperty("forecasts")[0];
        Assert.Equal(PredictionLength, first.GetProperty("mean").GetArrayLength());
        Assert.Equal(["0.1", "0.5", "0.9"], first.GetProperty("quantiles").EnumerateObject().Select(p => p.Name));

        body = await (await c.PostAsync("/v1/forecast", Body("{\"series\": [$S], \"samples\": 20, \"horizon\": 1, \"quantiles\": [0.975, 0.05, 0.25, 0.05]}"))).Content.ReadFromJsonAsync<JsonElement>();
        var q = body.GetProperty("forecasts")[0].GetProperty("quantiles");
        Assert.Equal(["0.975", "0.05", "0.25"], q.EnumerateObject().Select(p => p.Name));
        Assert.Equal(1, q.GetProperty("0.975").GetArrayLength());
    }

    [Fact]
    public async Task Models_ListTheForecasterWithItsLengths_AndKindsAreNotMixed()
    {
        await using var f = Factory(withLm: true);
        var c = f.CreateClient();
        var data = (await c.GetFromJsonAsync<JsonElement>("/v1/models")).GetProperty("data").EnumerateArray().ToDictionary(m => m.GetProperty("id").GetString()!);
        Assert.Equal("forecaster", data["informer"].GetProperty("kind").GetString());
        Assert.Equal(6, data["informer"].GetProperty("prediction_length").GetInt32());
        Assert.Equal(12, data["informer"].GetProperty("context_length").GetInt32());
        Assert.Equal("causal-lm", data["tiny-gpt2"].GetProperty("kind").GetString());
        Assert.False(data["tiny-gpt2"].TryGetProperty("prediction_length", out _));

        var detail = await Problem(await c.PostAsync("/v1/completions", Body("{\"model\": \"informer\", \"prompt\": \"x\"}")), HttpStatusCode.BadRequest);
        Assert.Contains("Model 'informer' is of kind 'forecaster'; /v1/completions needs a language model", detail);
        detail = await Problem(await c.PostAsync("/v1/forecast", Body("{\"model\": \"tiny-gpt2\", \"series\": [$S]}")), HttpStatusCode.BadRequest);
        Assert.Contains("Model 'tiny-gpt2' is of kind 'causal-lm'; /v1/forecast needs a forecaster", detail);
        // Without "model", each route takes the first model of its kind.
        Assert.Equal(HttpStatusCode.OK, (await c.PostAsync("/v1/completions", Body("{\"prompt\": \"Call me\", \"max_tokens\": 2}"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await c.PostAsync("/v1/forecast", Body("{\"series\": [$S], \"samples\": 5}"))).StatusCode);
    }

    [Fact]
    public async Task NoForecaster_OrAnUnknownModel_Gets404()
    {
        await using (var f = lm.Factory())
        {
            var detail = await Problem(await f.CreateClient().PostAsync("/v1/forecast", Body("{\"series\": [$S]}")), HttpStatusCode.NotFound);
            Assert.Contains("/v1/forecast needs a forecaster", detail);
        }
        await using var g = Factory();
        var p = await Problem(await g.CreateClient().PostAsync("/v1/forecast", Body("{\"model\": \"chronos\", \"series\": [$S]}")), HttpStatusCode.NotFound);
        Assert.Contains("Model 'chronos' is not served", p);
    }

    [Theory]
    [InlineData("{\"series\": [$S", "not valid JSON")]
    [InlineData("{\"series\": [{\"values\": [1, NaN]}]}", "not valid JSON")]
    [InlineData("[1]", "must be a JSON object")]
    [InlineData("{\"horizon\": 3}", "'series' is required")]
    [InlineData("{\"series\": {\"values\": [1]}}", "'series' must be an array of series objects")]
    [InlineData("{\"series\": [$S, 5]}", "'series[1]' must be an object with 'values'")]
    [InlineData("{\"series\": [{\"start\": \"2020-01\"}]}", "'series[0].values' is required")]
    [InlineData("{\"series\": [{\"values\": \"1,2\"}]}", "'series[0].values' must be an array of numbers or nulls")]
    [InlineData("{\"series\": [$S, {\"values\": [1, 2, 3, \"NaN\"]}]}", "'series[1].values[3]' must be a number or null, got string \"NaN\"")]
    [InlineData("{\"series\": [{\"values\": [1], \"start\": \"01/2020\"}]}", "'series[0].start' must be a date \"YYYY-MM\" or \"YYYY-MM-DD\"")]
    [InlineData("{\"series\": [{\"values\": [1], \"time_features\": [0.5]}]}", "'series[0].time_features[0]' must be an array of numbers")]
    [InlineData("{\"series\": [{\"values\": [1], \"time_features\": [[0, \"x\"]]}]}", "'series[0].time_features[0][1]' must be a number")]
    [InlineData("{\"series\": [{\"values\": [1], \"static_categorical\": [1.5]}]}", "'series[0].static_categorical[0]' must be an integer")]
    [InlineData("{\"series\": [{\"values\": [1], \"static_real\": [\"Infinity\"]}]}", "'series[0].static_real[0]' must be a number")]
    [InlineData("{\"series\": [$S], \"horizon\": \"six\"}", "'horizon' must be an integer")]
    [InlineData("{\"series\": [$S], \"quantiles\": [0.5, \"0.9\"]}", "'quantiles[1]' must be a number in (0, 1)")]
    [InlineData("{\"series\": [$S], \"quantiles\": 0.5}", "'quantiles' must be an array of numbers")]
    [InlineData("{\"series\": [$S], \"samples\": 2.5}", "'samples' must be an integer")]
    [InlineData("{\"series\": [$S], \"seed\": \"x\"}", "'seed' must be an integer")]
    [InlineData("{\"series\": [$S], \"model\": 7}", "'model' must be a string")]
    [InlineData("{\"series\": [{\"values\": [1], \"name\": \"\\udfff\"}]}", "'series[0].name' is not valid Unicode text")]
    [InlineData("{\"series\": [{\"values\": [1], \"start\": \"2020-\\ud800\"}]}", "'series[0].start' is not valid Unicode text")]
    public async Task MalformedRequests_Get400(string template, string expected)
    {
        await using var f = Factory();
        Assert.Contains(expected, await Problem(await f.CreateClient().PostAsync("/v1/forecast", Body(template)), HttpStatusCode.BadRequest));
    }

    [Theory]
    [InlineData("{\"series\": []}", "'series' must hold 1 to 3 series, got 0")]
    [InlineData("{\"series\": [$S, $S, $S, $S]}", "'series' must hold 1 to 3 series, got 4")]
    [InlineData("{\"series\": [$S], \"horizon\": 0}", "'horizon' must be in [1, 6] (the model's prediction_length), got 0")]
    [InlineData("{\"series\": [$S], \"horizon\": 7}", "'horizon' must be in [1, 6] (the model's prediction_length), got 7")]
    [InlineData("{\"series\": [$S], \"quantiles\": [0.5, 1]}", "'quantiles' must be in (0, 1), got 1")]
    [InlineData("{\"series\": [$S], \"quantiles\": [-0.25]}", "'quantiles' must be in (0, 1), got -0.25")]
    [InlineData("{\"series\": [$S], \"quantiles\": []}", "'quantiles' must hold 1 to 19 levels, got 0")]
    [InlineData("{\"series\": [$S], \"quantiles\": [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99]}", "got 20")]
    [InlineData("{\"series\": [$S], \"samples\": 0}", "'samples' must be in [1, 200], got 0")]
    [InlineData("{\"series\": [$S], \"samples\": 201}", "'samples' must be in [1, 200], got 201")]
    [InlineData("{\"series\": [{\"values\": [1, 2, 3, 4, 5]}]}", "series 0: 5 values; the model needs a history of at least 12 (its context_length)")]
    [InlineData("{\"series\": [{\"values\": [1e39]}]}", "'series[0].values[0]' is 1e39, beyond the range of float32")]
    [InlineData("{\"series\": [{\"values\": [1, 2, 3, 4, 5, 6, 7, 8, null, null, null, null, null, null, null, null, null, null, null, null], \"time_features\": $TF, \"static_categorical\": [0]}]}",
        "series 0: the last 12 values are all missing")]
    [InlineData("{\"series\": [{\"values\": $V, \"time_features\": [[1, 2, 3]], \"static_categorical\": [0]}]}", "'series[0].time_features[0]' has 3 numbers; the model takes 2 time features per step")]
    [InlineData("{\"series\": [{\"values\": $V, \"time_features\": [[1, 2], [3, 4]], \"static_categorical\": [0]}]}", "series 0: time_features has 4 values; expected (history 19 + horizon 6) x 2 = 50")]
    [InlineData("{\"series\": [{\"values\": $V, \"static_categorical\": [0]}]}", "series 0: the model needs 2 time features per step (history + horizon); none were given")]
    [InlineData("{\"series\": [{\"values\": $V, \"time_features\": $TF}]}", "series 0: 0 static categorical features; the model has 1")]
    [InlineData("{\"series\": [$S, {\"values\": $V, \"time_features\": $TF, \"static_categorical\": [3]}]}", "series 1: static categorical feature 0 is 3; it must be in [0, 3)")]
    [InlineData("{\"series\": [{\"values\": $V, \"time_features\": $TF, \"static_categorical\": [-1]}]}", "series 0: static categorical feature 0 is -1; it must be in [0, 3)")]
    [InlineData("{\"series\": [{\"values\": $V, \"time_features\": $TF, \"static_categorical\": [0], \"static_real\": [1.5]}]}", "series 0: 1 static real features; the model has 0")]
    public async Task OutOfRangeValues_Get422(string template, string expected)
    {
        await using var f = Factory(false, ("MaxForecastSeries", "3"), ("MaxForecastSamples", "200"));
        Assert.Contains(expected, await Problem(await f.CreateClient().PostAsync("/v1/forecast", Body(template)), HttpStatusCode.UnprocessableEntity));
    }

    [Fact]
    public async Task OversizeBody_Gets413_AndApiKeyIsRequired()
    {
        await using (var f = Factory(false, ("MaxBodyBytes", "2048")))
        {
            var detail = await Problem(await f.CreateClient().PostAsync("/v1/forecast", Body("{\"series\": [$S, $S, $S, $S]}")), HttpStatusCode.RequestEntityTooLarge);
            Assert.Contains("limit is 2048", detail);
        }
        await using var g = Factory(false, ("ApiKey", "s3cret"));
        var c = g.CreateClient();
        Assert.Contains("needs an API key", await Problem(await c.PostAsync("/v1/forecast", Body("{\"series\": [$S]}")), HttpStatusCode.Unauthorized));
        c.DefaultRequestHeaders.Authorization = new("Bearer", "s3cret");
        Assert.Equal(HttpStatusCode.OK, (await c.PostAsync("/v1/forecast", Body("{\"series\": [$S], \"samples\": 5}"))).StatusCode);
    }

    [Fact]
    public async Task FullQueue_Gets429()
    {
        await using var f = Factory(false, ("MaxConcurrent", "1"), ("QueueLimit", "0"), ("MaxForecastSamples", "1000"), ("MaxForecastSeries", "64"), ("MaxBodyBytes", "1000000"));
        var c = f.CreateClient();
        // A long forecast (64 series of 1,000 paths, seconds) takes the model first (8 requests sent at once could also run one after another and never meet);
        // requests sent while it runs find no place.
        Task<HttpResponseMessage> slow = null!;
        for (int attempt = 0; attempt < 5; attempt++)
        {
            slow = c.PostAsync("/v1/forecast", Body("{\"series\": [" + string.Join(", ", Enumerable.Repeat("$S", 64)) + "], \"samples\": 1000}"));
            await Task.Delay(300);
            if (!slow.IsCompleted) break;
        }
        HttpResponseMessage? refused = null;
        for (int i = 0; i < 40 && refused is null && !slow.IsCompleted; i++)
        {
            var r = await c.PostAsync("/v1/forecast", Body("{\"series\": [$S], \"samples\": 10}"));
            Assert.True(r.StatusCode is HttpStatusCode.OK or HttpStatusCode.TooManyRequests, $"probe {i}: {(int)r.StatusCode} {await r.Content.ReadAsStringAsync()}");
            if (r.StatusCode == HttpStatusCode.TooManyRequests) refused = r;
        }
        var first = await slow;
        Assert.True(first.StatusCode == HttpStatusCode.OK, $"the long forecast: {(int)first.StatusCode} {await first.Content.ReadAsStringAsync()}");
        Assert.True(refused is not null, "no probe was refused while the long forecast ran");
        var detail = await Problem(refused!, HttpStatusCode.TooManyRequests);
        Assert.Contains("Model 'informer' forecasts one request at a time and its 0 queue places are taken", detail);
    }

    [Fact]
    public async Task SlowForecast_TimesOutWith504_AndMetricsCountSeriesByOutcome()
    {
        await using var f = Factory(false, ("RequestTimeoutSeconds", "0.001"));
        var c = f.CreateClient();
        var detail = await Problem(await c.PostAsync("/v1/forecast", Body("{\"series\": [$S, $S, $S, $S, $S, $S, $S, $S], \"samples\": 200}")), HttpStatusCode.GatewayTimeout);
        Assert.Contains("The forecast took longer than 0.001 s", detail);
        var metrics = await c.GetStringAsync("/metrics");
        Assert.Matches(@"optimum_forecast_series_total\{[^}]*model=""informer""[^}]*outcome=""timeout""[^}]*\} 8", metrics);
    }

    [Fact]
    public async Task Metrics_CountForecastSeries()
    {
        await using var f = Factory();
        var c = f.CreateClient();
        (await c.PostAsync("/v1/forecast", Body("{\"series\": [$S, $S, $S], \"samples\": 10}"))).EnsureSuccessStatusCode();
        var metrics = await c.GetStringAsync("/metrics");
        Assert.Matches(@"optimum_forecast_series_total\{[^}]*model=""informer""[^}]*outcome=""ok""[^}]*\} 3", metrics);
    }

    /// <summary>The service on a real Kestrel over the forecaster, with a body limit that takes 64 series.</summary>
    private async Task<(WebApplication App, HttpClient Client)> Kestrel()
    {
        var app = OptimumServer.Build(["--urls", "http://127.0.0.1:0", $"--Optimum:Models:0={fc.Dir}", "--Optimum:Threads=1", "--Optimum:MaxBodyBytes=1000000"]);
        await app.StartAsync();
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return (app, new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(60) });
    }

    /// <summary>64 series of 200 paths: about a second of forecasting on one thread, long enough to hang up on or shut down under.</summary>
    private static StringContent Slow() => Body("{\"series\": [" + string.Join(", ", Enumerable.Repeat("$S", 64)) + "], \"samples\": 200}");

    [Fact]
    public async Task ClientDisconnect_StopsTheForecast()
    {
        var (app, c) = await Kestrel();
        await using var _ = app;
        // 64 series of 1,000 paths (about five seconds here) and a hang-up after one: the forecast is running by then
        // even on a loaded machine, where 200 ms could end the request before the server had read it.
        var slower = Body("{\"series\": [" + string.Join(", ", Enumerable.Repeat("$S", 64)) + "], \"samples\": 1000}");
        using (var hangUp = new CancellationTokenSource(TimeSpan.FromMilliseconds(1000)))
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => c.PostAsync("/v1/forecast", slower, hangUp.Token));
        string metrics = "";
        for (int i = 0; i < 50 && !metrics.Contains("outcome=\"cancelled\""); i++)
        {
            await Task.Delay(100);
            metrics = await c.GetStringAsync("/metrics");
        }
        Assert.Matches(@"optimum_forecast_series_total\{[^}]*outcome=""cancelled""[^}]*\} 64", metrics);
        Assert.DoesNotContain("outcome=\"ok\"", metrics);
    }

    [Fact]
    public async Task Shutdown_LetsAnInFlightForecastFinish()
    {
        var (app, c) = await Kestrel();
        var inflight = c.PostAsync("/v1/forecast", Slow());
        await Task.Delay(200);
        var stopping = app.StopAsync();
        var r = await inflight;
        await stopping;
        await app.DisposeAsync();
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var body = await r.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(64, body.GetProperty("forecasts").GetArrayLength());
    }

    [Fact]
    public async Task SeriesName_PicksTheTrainedSeriesIndex()
    {
        await using var f = Factory();
        var c = f.CreateClient();
        string ById = "{\"series\": [$S], \"samples\": 30, \"seed\": 3}";
        string ByName = ById.Replace("$S", Json(Input(0)).Replace("\"static_categorical\":[0]", "\"name\":\"alpha\""));
        Assert.DoesNotContain("static_categorical", ByName);
        var byId = await (await c.PostAsync("/v1/forecast", Body(ById))).Content.ReadAsStringAsync();
        var byName = await c.PostAsync("/v1/forecast", new StringContent(ByName, Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.OK, byName.StatusCode);
        Assert.Equal(byId, await byName.Content.ReadAsStringAsync());
        var unknown = ByName.Replace("\"alpha\"", "\"delta\"");
        Assert.Contains("'delta' is not a series the model was trained on (3 known", await Problem(await c.PostAsync("/v1/forecast", new StringContent(unknown, Encoding.UTF8, "application/json")), HttpStatusCode.UnprocessableEntity));
        var both = ByName.Replace("\"name\":\"alpha\"", "\"name\":\"alpha\",\"static_categorical\":[0]");
        Assert.Contains("gives both 'name' and 'static_categorical'", await Problem(await c.PostAsync("/v1/forecast", new StringContent(both, Encoding.UTF8, "application/json")), HttpStatusCode.BadRequest));
    }

    [Fact]
    public async Task ValuesThatOverflowFloat32_Get422NamingTheSeries_NotA500()
    {
        await using var f = Factory();
        var c = f.CreateClient();
        var huge = Input(0) with { Values = Enumerable.Repeat(3e38f, History).ToArray() };          // the context's mean magnitude overflows
        var detail = await Problem(await c.PostAsync("/v1/forecast", Body($"{{\"series\": [{Json(Input(1))}, {Json(huge)}]}}")), HttpStatusCode.UnprocessableEntity);
        Assert.Contains("series 1: the mean magnitude of its last 12 values (its scale) overflows float32", detail);
        // Far beyond the scale of its context (tiny values): the model's inputs overflow, not its weights.
        var far = Input(0) with { Values = [.. Enumerable.Repeat(3e38f, 7), .. Enumerable.Repeat(1e-30f, 12)] };
        detail = await Problem(await c.PostAsync("/v1/forecast", Body($"{{\"series\": [{Json(far)}]}}")), HttpStatusCode.UnprocessableEntity);
        Assert.Contains("series 0:", detail);
        Assert.Equal(HttpStatusCode.OK, (await c.PostAsync("/v1/forecast", Body("{\"series\": [$S], \"samples\": 5}"))).StatusCode);
    }

    [Fact]
    public void AForecasterWithBrokenWeights_IsRefusedAtStart()
    {
        var dir = Path.Combine(fc.Root, "broken");
        Directory.CreateDirectory(dir);
        foreach (var file in Directory.GetFiles(fc.Dir)) File.Copy(file, Path.Combine(dir, Path.GetFileName(file)), true);
        var weights = Path.Combine(dir, "model.safetensors");
        var original = Optimum.Hub.SafeTensorsFile.ReadAll(weights).Values.ToList();
        void Fill(float value) => Optimum.Hub.SafeTensorsFile.Write(weights, original
            .Select(t => t.Type == Optimum.Onnx.DType.Float ? Optimum.Hub.SafeTensor.FromFloats(t.Name, Enumerable.Repeat(value, (int)t.Count).ToArray(), t.Shape) : t).ToList());
        // NaN weights are refused when the file is read, naming it; finite weights that overflow by the start-up forecast.
        Fill(float.NaN);
        Assert.Contains("holds NaN", Assert.Throws<InvalidDataException>(() => new ModelRegistry(new ServerOptions { Models = [new("broken", dir)], Threads = 1 })).Message);
        Fill(3e38f);
        var e = Assert.Throws<InvalidOperationException>(() => new ModelRegistry(new ServerOptions { Models = [new("broken", dir)], Threads = 1 }));
        Assert.Contains("Model 'broken'", e.Message);
        Assert.Contains("weights are broken", e.Message);
    }
}
