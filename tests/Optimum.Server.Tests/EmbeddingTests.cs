using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Configuration;
using Xunit;

namespace Optimum.Server.Tests;

/// <summary>AddOptimum and MapOptimum in an app of one's own, and the typed options.</summary>
[Collection(ModelFixture.Collection)]
public sealed class EmbeddingTests(ModelFixture model)
{
    [Fact]
    public async Task MapOptimum_BesideTheAppsOwnRoutes_KeepsItsKeyAndMetricsToItsOwnRoutes()
    {
        var (app, c) = await Host("s3cret", app =>
        {
            app.MapGet("/hello", () => "hello from the app");
            app.MapOptimum();
        });
        await using var _ = app;

        Assert.Equal("hello from the app", await c.GetStringAsync("/hello"));              // no key needed on the app's routes
        var denied = await c.GetAsync("/v1/models");
        Assert.Equal(HttpStatusCode.Unauthorized, denied.StatusCode);
        Assert.Equal("application/problem+json", denied.Content.Headers.ContentType?.MediaType);
        Assert.Equal(HttpStatusCode.Unauthorized, (await c.PostAsync("/v1/completions", Json("{\"prompt\": \"x\"}"))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await c.GetAsync("/healthz")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await c.GetAsync("/nowhere")).StatusCode);

        c.DefaultRequestHeaders.Authorization = new("Bearer", "s3cret");
        var models = await c.GetFromJsonAsync<JsonElement>("/v1/models");
        Assert.Equal("tiny", models.GetProperty("data")[0].GetProperty("id").GetString());
        var done = await (await c.PostAsync("/v1/completions", Json("{\"prompt\": \"Call me\", \"max_tokens\": 3}"))).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(3, done.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        var unprocessable = await c.PostAsync("/v1/completions", Json("{\"prompt\": \"x\", \"max_tokens\": 0}"));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, unprocessable.StatusCode);
        Assert.Equal("hello from the app", await c.GetStringAsync("/hello"));
        Assert.Equal(HttpStatusCode.NotFound, (await c.GetAsync("/nowhere")).StatusCode);

        var metrics = await c.GetStringAsync("/metrics");
        Assert.Matches(@"optimum_requests_total\{(?=[^}]*route=""/v1/models"")(?=[^}]*status=""401"")[^}]*\} 1\b", metrics);
        Assert.Matches(@"optimum_requests_total\{(?=[^}]*route=""/v1/completions"")(?=[^}]*status=""422"")[^}]*\} 1\b", metrics);
        Assert.DoesNotContain("/hello", metrics);
        Assert.DoesNotContain("/nowhere", metrics);
    }

    [Fact]
    public async Task Exceptions_OnOptimumRoutesAreProblems_AClientMistakeIsNever5xx_TheAppsOwnAreLeftAlone()
    {
        var (app, c) = await Host(apiKey: null, app =>
        {
            var optimum = app.MapOptimum("/ai");
            optimum.MapGet("/slow-upload", () => { throw new BadHttpRequestException("Reading the request body timed out due to data arriving too slowly.", 408); });
            optimum.MapGet("/bug", () => { throw new InvalidOperationException("internal detail"); });
            app.MapGet("/app-bug", () => { throw new InvalidOperationException("the app's own"); });
        });
        await using var _ = app;

        Assert.Equal(HttpStatusCode.OK, (await c.GetAsync("/ai/v1/models")).StatusCode);
        var slow = await c.GetAsync("/ai/slow-upload");
        Assert.Equal(HttpStatusCode.RequestTimeout, slow.StatusCode);
        Assert.Equal("application/problem+json", slow.Content.Headers.ContentType?.MediaType);
        Assert.Contains("arriving too slowly", await slow.Content.ReadAsStringAsync());
        var bug = await c.GetAsync("/ai/bug");
        Assert.Equal(HttpStatusCode.InternalServerError, bug.StatusCode);
        Assert.Equal("application/problem+json", bug.Content.Headers.ContentType?.MediaType);
        Assert.DoesNotContain("internal detail", await bug.Content.ReadAsStringAsync());
        // The app's exception reaches the app's own handling (here the test server, which rethrows it to the client).
        var own = await Assert.ThrowsAsync<InvalidOperationException>(() => c.GetAsync("/app-bug"));
        Assert.Equal("the app's own", own.Message);
    }

    [Fact]
    public async Task Build_WithTypedOptions_ServesThemInPlaceOfTheConfigurationSection()
    {
        await using var app = OptimumServer.Build(new ServerOptions { Models = [new("typed", model.Dir)], Threads = 1 },
            ["--Optimum:ApiKey=from-config", $"--Optimum:Models:0=config={model.T5Dir}"], b => b.WebHost.UseTestServer());
        await app.StartAsync();
        var models = await app.GetTestClient().GetFromJsonAsync<JsonElement>("/v1/models");          // no key: the typed options set none
        Assert.Equal(new[] { "typed" }, models.GetProperty("data").EnumerateArray().Select(m => m.GetProperty("id").GetString()));
    }

    [Fact]
    public void InvalidOptions_FailAtStartUp_NamingEachOption()
    {
        var e = Assert.Throws<InvalidOperationException>(() => OptimumServer.Build(new ServerOptions
        {
            Models = [new("tiny", model.Dir), new("tiny", model.T5Dir), new("gone", Path.Combine(model.Root, "missing"))],
            MaxConcurrent = 0, RequestTimeoutSeconds = -1, MaxBodyBytes = 10, Device = "tpu",
        }));
        Assert.Contains("Optimum:Models:1: models 0 and 1 are both named 'tiny'", e.Message);
        Assert.Contains($"Optimum:Models:2 ('gone'): the folder '{Path.Combine(model.Root, "missing")}' does not exist", e.Message);
        Assert.Contains("Optimum:MaxConcurrent must be at least 1, got 0", e.Message);
        Assert.Contains("Optimum:RequestTimeoutSeconds must be greater than 0, got -1", e.Message);
        Assert.Contains("Optimum:MaxBodyBytes must be at least 64, got 10", e.Message);
        Assert.Contains("Optimum:Device 'tpu' is not a device: expected cpu, cuda or cuda:N with N a device number >= 0", e.Message);
        Assert.DoesNotContain("QueueLimit", e.Message);
        e = Assert.Throws<InvalidOperationException>(() => OptimumServer.Build(new ServerOptions()));
        Assert.StartsWith("Optimum:Models is empty", e.Message);
    }

    [Fact]
    public void Models_BindFromConfiguration_AsNameEqualsPath_APath_OrAnObject()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Optimum:Models:0"] = "g2p=/models/t5=v2",
            ["Optimum:Models:1"] = "/models/tiny-gpt2/",
            ["Optimum:Models:2:Name"] = "informer",
            ["Optimum:Models:2:Folder"] = "/models/ts",
            ["Optimum:MaxTokens"] = "7",
        }).Build();
        var o = config.GetSection(ServerOptions.Section).Get<ServerOptions>()!;
        Assert.Equal(new ServedModel[] { new("g2p", "/models/t5=v2"), new("tiny-gpt2", "/models/tiny-gpt2/"), new("informer", "/models/ts") }, o.Models);
        Assert.Equal(7, o.MaxTokens);
        Assert.Equal(ServedModel.Parse("g2p=/models/t5=v2"), ServedModel.Parse(o.Models[0].ToString()));      // round trip
    }

    /// <summary>An app on a test server whose services add Optimum over the tiny model; <paramref name="map"/> maps its routes and Optimum's.</summary>
    private async Task<(WebApplication App, HttpClient Client)> Host(string? apiKey, Action<WebApplication> map)
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseTestServer();
        builder.Services.AddOptimum(o =>
        {
            o.Models.Add(new ServedModel("tiny", model.Dir));
            o.Threads = 1;
            o.ApiKey = apiKey;
        });
        var app = builder.Build();
        map(app);
        await app.StartAsync();
        return (app, app.GetTestClient());
    }

    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");
}
