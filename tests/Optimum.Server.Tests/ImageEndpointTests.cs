using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Optimum.Core;
using Optimum.Core.Diffusion;
using Optimum.Inference.Diffusion;
using Optimum.Models;
using Optimum.Plots;
using Optimum.Tests;
using SkiaSharp;
using Xunit;

namespace Optimum.Server.Tests;

/// <summary>
/// Two small UNets with initial weights: "digits", class-conditional grayscale 8×8 (num_class_embeds 4: labels 0..2,
/// 3 = "no label"), and "colors", unconditional RGB 8×8.
/// </summary>
public sealed class ImageFixture : IDisposable
{
    public ImageFixture()
    {
        Root = Repo.TempDir();
        Conditional = Path.Combine(Root, "digits");
        ModelKinds.WritePreset(Conditional, Config(channels: 1, classes: 4), seed: 3);
        Unconditional = Path.Combine(Root, "colors");
        ModelKinds.WritePreset(Unconditional, Config(channels: 3, classes: null), seed: 4);
    }

    public static UNet2DConfig Config(int channels, int? classes) => new()
    {
        SampleSize = 8, InChannels = channels, OutChannels = channels, BlockOutChannels = [8, 16], LayersPerBlock = 1,
        DownBlockTypes = ["DownBlock2D", "AttnDownBlock2D"], UpBlockTypes = ["AttnUpBlock2D", "UpBlock2D"],
        NormNumGroups = 4, AttentionHeadDim = 8, NumClassEmbeds = classes,
    };

    public string Root { get; }
    public string Conditional { get; }
    public string Unconditional { get; }

    public void Dispose() => Directory.Delete(Root, true);
}

/// <summary>POST /v1/images/generations through WebApplicationFactory: PNG pixels against ImageGenerator, and every error.</summary>
[Collection(ModelFixture.Collection)]
public sealed class ImageEndpointTests(ModelFixture lm, ImageFixture img) : IClassFixture<ImageFixture>
{
    private static readonly byte[] PngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];

    /// <summary>A server with "digits", "colors" (and the language model when asked) and the given "Optimum:*" settings.</summary>
    private WebApplicationFactory<Program> Factory(bool withLm = false, params (string Key, string Value)[] settings) =>
        new WebApplicationFactory<Program>().WithWebHostBuilder(b =>
        {
            b.UseSetting("Optimum:Models:0", img.Conditional);
            b.UseSetting("Optimum:Models:1", img.Unconditional);
            if (withLm) b.UseSetting("Optimum:Models:2", lm.Dir);
            b.UseSetting("Optimum:Threads", "1");
            foreach (var (k, v) in settings) b.UseSetting("Optimum:" + k, v);
        });

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private static async Task<string> Problem(HttpResponseMessage r, HttpStatusCode status)
    {
        Assert.Equal(status, r.StatusCode);
        Assert.Equal("application/problem+json", r.Content.Headers.ContentType?.MediaType);
        var doc = await r.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal((int)status, doc.GetProperty("status").GetInt32());
        return doc.GetProperty("detail").GetString()!;
    }

    /// <summary>Each data[i].b64_json is a PNG of the model's size whose pixels are ImageGrid's bytes of <paramref name="expected"/>'s image i.</summary>
    private static void AssertPngsEqual(GeneratedImages expected, JsonElement data)
    {
        Assert.Equal(expected.Count, data.GetArrayLength());
        var (c, h, w) = (expected.Channels, expected.Height, expected.Width);
        for (int i = 0; i < expected.Count; i++)
        {
            var png = Convert.FromBase64String(data[i].GetProperty("b64_json").GetString()!);
            Assert.Equal(PngSignature, png[..8]);
            using var bitmap = SKBitmap.Decode(png);
            Assert.Equal((w, h), (bitmap.Width, bitmap.Height));
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                {
                    var p = bitmap.GetPixel(x, y);
                    byte At(int ch) => ImageGrid.ToByte(expected.Pixels[((i * c + ch) * h + y) * w + x]);
                    var want = c == 1 ? (At(0), At(0), At(0)) : (At(0), At(1), At(2));
                    Assert.True(want == (p.Red, p.Green, p.Blue), $"image {i} pixel ({y}, {x}): expected {want}, got {(p.Red, p.Green, p.Blue)}");
                }
        }
    }

    [Fact]
    public async Task Images_AreImageGeneratorsPixelsAsPngs_GuidedByDefault_AndSeeded()
    {
        await using var f = Factory();
        var c = f.CreateClient();
        const string request = "{\"model\": \"digits\", \"labels\": [0, 2, 1], \"steps\": 4, \"seed\": 5}";
        var r = await c.PostAsync("/v1/images/generations", Json(request));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var body = await r.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("digits", body.GetProperty("model").GetString());
        Assert.Equal(("ddim", 4, 3.0), (body.GetProperty("scheduler").GetString(), body.GetProperty("steps").GetInt32(), body.GetProperty("guidance").GetDouble()));
        var data = body.GetProperty("data");
        Assert.Equal([0, 2, 1], data.EnumerateArray().Select(d => d.GetProperty("label").GetInt32()));
        Assert.Equal([0, 1, 2], data.EnumerateArray().Select(d => d.GetProperty("index").GetInt32()));
        Assert.All(data.EnumerateArray(), d => Assert.Equal(5, d.GetProperty("seed").GetInt64()));

        using var gen = new ImageGenerator(img.Conditional, new SessionSettings { IntraOpThreads = 1 });
        var expected = gen.Generate(new ImageGenerationOptions { Labels = [0, 2, 1], Count = 3, Steps = 4, Seed = 5, GuidanceScale = 3 });
        AssertPngsEqual(expected, data);

        // Same request, same bytes; another seed, other images.
        var again = (await (await c.PostAsync("/v1/images/generations", Json(request))).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("data");
        Assert.Equal(data.GetRawText(), again.GetRawText());
        var other = (await (await c.PostAsync("/v1/images/generations", Json(request.Replace("\"seed\": 5", "\"seed\": 6")))).Content.ReadFromJsonAsync<JsonElement>()).GetProperty("data");
        Assert.NotEqual(data[0].GetProperty("b64_json").GetString(), other[0].GetProperty("b64_json").GetString());

        // One "label" for "count" images, DDPM, guidance given.
        var ddpm = (await (await c.PostAsync("/v1/images/generations", Json("{\"label\": 1, \"count\": 2, \"steps\": 3, \"scheduler\": \"ddpm\", \"guidance\": 1.5, \"seed\": 9}")))
            .Content.ReadFromJsonAsync<JsonElement>()).GetProperty("data");
        AssertPngsEqual(gen.Generate(new ImageGenerationOptions { Labels = [1], Count = 2, Steps = 3, Scheduler = SamplerKind.Ddpm, GuidanceScale = 1.5, Seed = 9 }), ddpm);
        Assert.Equal([1, 1], ddpm.EnumerateArray().Select(d => d.GetProperty("label").GetInt32()));
    }

    [Fact]
    public async Task UnconditionalRgb_IsTheDefaultModelsOwnRun_WithoutGuidance_AndNullLabels()
    {
        // "colors" first: requests without "model" get it.
        await using var f = new WebApplicationFactory<Program>().WithWebHostBuilder(b =>
        {
            b.UseSetting("Optimum:Models:0", img.Unconditional);
            b.UseSetting("Optimum:Models:1", img.Conditional);
            b.UseSetting("Optimum:Threads", "1");
        });
        var r = await f.CreateClient().PostAsync("/v1/images/generations", Json("{\"n\": 2, \"steps\": 3, \"eta\": 0.5, \"seed\": 1, \"response_format\": \"b64_json\"}"));
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var body = await r.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(("colors", 1.0), (body.GetProperty("model").GetString(), body.GetProperty("guidance").GetDouble()));
        Assert.All(body.GetProperty("data").EnumerateArray(), d => Assert.Equal(JsonValueKind.Null, d.GetProperty("label").ValueKind));
        using var gen = new ImageGenerator(img.Unconditional, new SessionSettings { IntraOpThreads = 1 });
        AssertPngsEqual(gen.Generate(new ImageGenerationOptions { Count = 2, Steps = 3, Eta = 0.5, Seed = 1 }), body.GetProperty("data"));
    }

    [Fact]
    public async Task Models_ReportSizeChannelsAndClasses_AndKindsAreNotMixed()
    {
        await using var f = Factory(withLm: true);
        var c = f.CreateClient();
        var data = (await c.GetFromJsonAsync<JsonElement>("/v1/models")).GetProperty("data").EnumerateArray().ToDictionary(m => m.GetProperty("id").GetString()!);
        int Field(string model, string name) => data[model].GetProperty(name).GetInt32();
        Assert.Equal("image-generation", data["digits"].GetProperty("kind").GetString());
        Assert.Equal((8, 1, 3), (Field("digits", "sample_size"), Field("digits", "channels"), Field("digits", "classes")));
        Assert.Equal((8, 3, 0), (Field("colors", "sample_size"), Field("colors", "channels"), Field("colors", "classes")));
        Assert.False(data["tiny-gpt2"].TryGetProperty("sample_size", out _));

        Assert.Contains("Model 'digits' is of kind 'image-generation'; /v1/completions needs a language model",
            await Problem(await c.PostAsync("/v1/completions", Json("{\"model\": \"digits\", \"prompt\": \"x\"}")), HttpStatusCode.BadRequest));
        Assert.Contains("Model 'digits' is of kind 'image-generation'; /v1/forecast needs a forecaster",
            await Problem(await c.PostAsync("/v1/forecast", Json("{\"model\": \"digits\", \"series\": []}")), HttpStatusCode.BadRequest));
        Assert.Contains("Model 'tiny-gpt2' is of kind 'causal-lm'; /v1/images/generations needs an image generator",
            await Problem(await c.PostAsync("/v1/images/generations", Json("{\"model\": \"tiny-gpt2\"}")), HttpStatusCode.BadRequest));
        Assert.Contains("Model 'sd-turbo' is not served",
            await Problem(await c.PostAsync("/v1/images/generations", Json("{\"model\": \"sd-turbo\"}")), HttpStatusCode.NotFound));
        // Without "model", completions still find the language model behind the image models.
        Assert.Equal(HttpStatusCode.OK, (await c.PostAsync("/v1/completions", Json("{\"prompt\": \"Call me\", \"max_tokens\": 2}"))).StatusCode);

        await using var g = lm.Factory();
        Assert.Contains("/v1/images/generations needs an image generator (a diffusion UNet2DModel); none is served",
            await Problem(await g.CreateClient().PostAsync("/v1/images/generations", Json("{}")), HttpStatusCode.NotFound));
    }

    [Theory]
    [InlineData("{\"label\": 1", "not valid JSON")]
    [InlineData("[1]", "must be a JSON object")]
    [InlineData("{\"model\": 7}", "'model' must be a string")]
    [InlineData("{\"count\": \"two\"}", "'count' must be an integer")]
    [InlineData("{\"n\": 1.5}", "'n' must be an integer")]
    [InlineData("{\"count\": 2, \"n\": 2}", "Give 'count' or OpenAI's 'n', not both")]
    [InlineData("{\"label\": \"seven\"}", "'label' must be an integer (a class label)")]
    [InlineData("{\"labels\": 1}", "'labels' must be an array of class labels")]
    [InlineData("{\"labels\": [0, 1.5]}", "'labels[1]' must be an integer (a class label)")]
    [InlineData("{\"label\": 1, \"labels\": [1]}", "Give 'label' (one for every image) or 'labels' (one per image), not both")]
    [InlineData("{\"steps\": \"50\"}", "'steps' must be an integer")]
    [InlineData("{\"guidance\": \"3\"}", "'guidance' must be a number")]
    [InlineData("{\"eta\": true}", "'eta' must be a number")]
    [InlineData("{\"scheduler\": 1}", "'scheduler' must be a string (ddim or ddpm)")]
    [InlineData("{\"scheduler\": \"dd\\ud800im\"}", "'scheduler' is not valid Unicode text")]
    [InlineData("{\"seed\": 1.5}", "'seed' must be an integer")]
    [InlineData("{\"response_format\": 1}", "'response_format' must be a string")]
    public async Task MalformedRequests_Get400(string body, string expected)
    {
        await using var f = Factory();
        Assert.Contains(expected, await Problem(await f.CreateClient().PostAsync("/v1/images/generations", Json(body)), HttpStatusCode.BadRequest));
    }

    [Theory]
    [InlineData("{\"count\": 0}", "'count' must be in [1, 4], got 0")]
    [InlineData("{\"n\": 5}", "'n' must be in [1, 4], got 5")]
    [InlineData("{\"labels\": [0, 1, 2, 0, 1]}", "'labels' asks for 5 images; a request takes at most 4")]
    [InlineData("{\"labels\": []}", "'labels' is empty")]
    [InlineData("{\"labels\": [0, 1], \"count\": 3}", "'labels' holds 2 labels for 3 images ('count')")]
    [InlineData("{\"label\": 3}", "'label' is 3; model 'digits' takes labels in [0, 3) (3 is reserved as \"no label\")")]
    [InlineData("{\"labels\": [0, -1]}", "'labels[1]' is -1; model 'digits' takes labels in [0, 3)")]
    [InlineData("{\"model\": \"colors\", \"label\": 0}", "Model 'colors' is unconditional (no num_class_embeds); it takes no 'label'")]
    [InlineData("{\"model\": \"colors\", \"guidance\": 3}", "'guidance' 3 needs a class-conditional model; model 'colors' is unconditional")]
    [InlineData("{\"guidance\": 2}", "'guidance' 2 needs a 'label' to guide towards")]
    [InlineData("{\"label\": 0, \"guidance\": 1e400}", "'guidance' must be a finite number")]
    [InlineData("{\"steps\": 0}", "'steps' must be in [1, 1000] (the model's num_train_timesteps), got 0")]
    [InlineData("{\"steps\": 1001}", "'steps' must be in [1, 1000] (the model's num_train_timesteps), got 1001")]
    [InlineData("{\"scheduler\": \"euler\"}", "'scheduler' 'euler' is not one of ddim, ddpm")]
    [InlineData("{\"eta\": -0.5}", "'eta' must be in [0, 1] (0: deterministic DDIM), got -0.5")]
    [InlineData("{\"eta\": 0.5, \"scheduler\": \"ddpm\"}", "'eta' 0.5 is a DDIM setting; the ddpm scheduler takes 0")]
    [InlineData("{\"response_format\": \"url\"}", "'response_format' must be \"b64_json\"")]
    public async Task OutOfRangeValues_Get422(string body, string expected)
    {
        await using var f = Factory(false, ("MaxImages", "4"));
        Assert.Contains(expected, await Problem(await f.CreateClient().PostAsync("/v1/images/generations", Json(body)), HttpStatusCode.UnprocessableEntity));
    }

    [Fact]
    public async Task ApiKey_IsRequired_AndMetricsCountImagesByOutcome()
    {
        await using var f = Factory(false, ("ApiKey", "s3cret"));
        var c = f.CreateClient();
        Assert.Contains("needs an API key", await Problem(await c.PostAsync("/v1/images/generations", Json("{}")), HttpStatusCode.Unauthorized));
        c.DefaultRequestHeaders.Authorization = new("Bearer", "s3cret");
        (await c.PostAsync("/v1/images/generations", Json("{\"label\": 2, \"count\": 3, \"steps\": 2}"))).EnsureSuccessStatusCode();
        var metrics = await c.GetStringAsync("/metrics");
        Assert.Matches(@"optimum_images_generated_total\{[^}]*model=""digits""[^}]*outcome=""ok""[^}]*\} 3", metrics);
    }

    [Fact]
    public async Task SlowGeneration_TimesOutWith504_AndIsCountedAsTimeout()
    {
        await using var f = Factory(false, ("RequestTimeoutSeconds", "0.001"));
        var c = f.CreateClient();
        var detail = await Problem(await c.PostAsync("/v1/images/generations", Json("{\"label\": 1, \"count\": 16, \"steps\": 1000}")), HttpStatusCode.GatewayTimeout);
        Assert.Contains("The image generation took longer than 0.001 s", detail);
        var metrics = await c.GetStringAsync("/metrics");
        Assert.Matches(@"optimum_images_generated_total\{[^}]*model=""digits""[^}]*outcome=""timeout""[^}]*\} 16", metrics);
    }

    [Fact]
    public async Task BusyModel_Gets429_AndAClientThatLeavesStopsItsGeneration()
    {
        await using var f = Factory(false, ("QueueLimit", "0"));
        var c = f.CreateClient();
        // 16 guided images of 1,000 steps: about 9 s on one thread here (0.46 s per 50 steps), 20 times what the probing below takes.
        using var hangUp = new CancellationTokenSource();
        // Let the slow request take the model before probing (a probe sent at the same moment could take it first).
        Task<HttpResponseMessage> slow = null!;
        for (int attempt = 0; attempt < 5; attempt++)
        {
            slow = c.PostAsync("/v1/images/generations", Json("{\"label\": 1, \"count\": 16, \"steps\": 1000}"), hangUp.Token);
            await Task.Delay(300);
            if (!slow.IsCompleted) break;
        }
        string? detail = null;
        for (int i = 0; i < 100 && detail is null && !slow.IsCompleted; i++)
        {
            var r = await c.PostAsync("/v1/images/generations", Json("{\"label\": 1, \"steps\": 1}"));
            if (r.StatusCode == HttpStatusCode.TooManyRequests) detail = await Problem(r, HttpStatusCode.TooManyRequests);
            else await Task.Delay(50);                                                      // the slow request has not taken the model yet
        }
        Assert.False(slow.IsCompleted, "the 1,000-step request ended before a second one was refused");
        Assert.Contains("Model 'digits' generates one request at a time and its 0 queue places are taken", detail);

        hangUp.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => slow);
        string metrics = "";
        for (int i = 0; i < 50 && !metrics.Contains("outcome=\"cancelled\""); i++)
        {
            await Task.Delay(100);
            metrics = await c.GetStringAsync("/metrics");
        }
        Assert.Matches(@"optimum_images_generated_total\{[^}]*model=""digits""[^}]*outcome=""cancelled""[^}]*\} 16", metrics);
        // The model is free again.
        Assert.Equal(HttpStatusCode.OK, (await c.PostAsync("/v1/images/generations", Json("{\"label\": 1, \"steps\": 1}"))).StatusCode);
    }

    [Fact]
    public void ModelOfTwoChannels_IsRefusedAtStartUp_AsNoPngHoldsIt()
    {
        var dir = Path.Combine(img.Root, "latents");
        ModelKinds.WritePreset(dir, ImageFixture.Config(channels: 2, classes: null), seed: 5);
        var e = Assert.Throws<InvalidOperationException>(() => new ModelRegistry(new ServerOptions { Models = [new("latents", dir)], Threads = 1 }));
        Assert.Contains("Model 'latents'", e.Message);
        Assert.Contains("makes images of 2 channels; /v1/images/generations returns PNGs, which take 1 (grayscale) or 3 (RGB)", e.Message);
    }
}
