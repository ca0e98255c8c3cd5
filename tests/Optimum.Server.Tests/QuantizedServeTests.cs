using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Mvc.Testing;
using Optimum.Inference.Quantization;
using Optimum.Models;
using Optimum.Tests;
using Xunit;

namespace Optimum.Server.Tests;

/// <summary>Quantized folders of every served kind go through the same loaders and routes; /v1/models says their precision.</summary>
[Collection(ModelFixture.Collection)]
public sealed class QuantizedServeTests(ModelFixture lm, ForecastFixture fc, ImageFixture img) : IClassFixture<ForecastFixture>, IClassFixture<ImageFixture>, IDisposable
{
    private readonly string _root = Repo.TempDir();
    public void Dispose() => Directory.Delete(_root, true);

    [Fact]
    public async Task QuantizedFolders_ServeCompletionsForecastsAndImages_AndReportTheirPrecision()
    {
        string gpt = Path.Combine(_root, "gpt2-int4"), informer = Path.Combine(_root, "informer-int8"), unet = Path.Combine(_root, "digits-int8");
        ModelQuantizer.Quantize(lm.Dir, ModelKinds.InitialWeights(lm.Dir, 0), gpt, new QuantizeOptions { Weights = WeightPrecision.Int4, BlockSize = 16 });
        ModelQuantizer.Quantize(fc.Dir, informer, new QuantizeOptions { Weights = WeightPrecision.Int8 });
        ModelQuantizer.Quantize(img.Conditional, ModelKinds.InitialWeights(img.Conditional, 0), unet, new QuantizeOptions { Weights = WeightPrecision.Int8, BlockSize = 16 });
        await using var f = new WebApplicationFactory<Program>().WithWebHostBuilder(b =>
        {
            b.UseSetting("Optimum:Models:0", $"lm={gpt}");
            b.UseSetting("Optimum:Models:1", $"fc={informer}");
            b.UseSetting("Optimum:Models:2", $"img={unet}");
            b.UseSetting("Optimum:Models:3", $"f32={lm.Dir}");
            b.UseSetting("Optimum:Threads", "1");
        });
        var c = f.CreateClient();
        var data = (await c.GetFromJsonAsync<JsonElement>("/v1/models")).GetProperty("data").EnumerateArray().ToDictionary(m => m.GetProperty("id").GetString()!);
        Assert.Equal(("int4", "causal-lm"), (data["lm"].GetProperty("precision").GetString(), data["lm"].GetProperty("kind").GetString()));
        Assert.Equal(("int8", "forecaster"), (data["fc"].GetProperty("precision").GetString(), data["fc"].GetProperty("kind").GetString()));
        Assert.Equal(("int8", "image-generation"), (data["img"].GetProperty("precision").GetString(), data["img"].GetProperty("kind").GetString()));
        Assert.Equal("fp32", data["f32"].GetProperty("precision").GetString());

        var r = await c.PostAsync("/v1/completions", Json("{\"model\": \"lm\", \"prompt\": \"Call me\", \"max_tokens\": 5, \"temperature\": 0}"));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        Assert.Equal(5, (await r.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        var series = JsonSerializer.Serialize(new
        {
            values = Enumerable.Range(0, 19).Select(k => 10 + 3 * Math.Sin(2 * Math.PI * k / 12)),
            time_features = Enumerable.Range(0, 25).Select(k => new[] { k % 12 / 11.0 - 0.5, k / 24.0 }),
            static_categorical = new[] { 0 },
        });
        r = await c.PostAsync("/v1/forecast", Json($"{{\"model\": \"fc\", \"series\": [{series}], \"samples\": 10}}"));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var mean = (await r.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("forecasts")[0].GetProperty("mean");
        Assert.Equal(6, mean.GetArrayLength());
        Assert.All(mean.EnumerateArray(), v => Assert.True(double.IsFinite(v.GetDouble())));

        r = await c.PostAsync("/v1/images/generations", Json("{\"model\": \"img\", \"labels\": [0, 2], \"steps\": 2, \"seed\": 5}"));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        Assert.Equal(2, (await r.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("data").GetArrayLength());
    }

    private static StringContent Json(string s) => new(s, Encoding.UTF8, "application/json");
}
