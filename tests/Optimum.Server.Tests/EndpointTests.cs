using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Optimum.Server.Tests;

/// <summary>Every endpoint and every error, through WebApplicationFactory.</summary>
[Collection(ModelFixture.Collection)]
public sealed class EndpointTests(ModelFixture model) 
{
    private static StringContent Json(string body) => new(body, Encoding.UTF8, "application/json");

    private static async Task<JsonElement> Problem(HttpResponseMessage r, HttpStatusCode status)
    {
        Assert.Equal(status, r.StatusCode);
        Assert.Equal("application/problem+json", r.Content.Headers.ContentType?.MediaType);
        var doc = await r.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal((int)status, doc.GetProperty("status").GetInt32());
        return doc;
    }

    [Fact]
    public async Task Healthz_Models_AndMetrics()
    {
        await using var f = model.Factory();
        var c = f.CreateClient();
        var health = await c.GetFromJsonAsync<JsonElement>("/healthz");
        Assert.Equal("ok", health.GetProperty("status").GetString());
        var models = await c.GetFromJsonAsync<JsonElement>("/v1/models");
        Assert.Equal("list", models.GetProperty("object").GetString());
        Assert.Equal("tiny-gpt2", models.GetProperty("data")[0].GetProperty("id").GetString());
        (await c.PostAsync("/v1/completions", Json("{\"prompt\": \"Call me\", \"max_tokens\": 5}"))).EnsureSuccessStatusCode();
        var metrics = await c.GetStringAsync("/metrics");
        Assert.Contains("optimum_requests_total{", metrics);
        Assert.Contains("optimum_request_duration_seconds_bucket{", metrics);
        Assert.Matches(@"optimum_tokens_generated_total\{[^}]*model=""tiny-gpt2""[^}]*\} 5", metrics);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, (await c.PostAsync("/metrics", Json("{}"))).StatusCode);        // a scrape is a GET
    }

    [Fact]
    public async Task Completion_ReturnsTextUsageAndIsSeeded()
    {
        await using var f = model.Factory();
        var c = f.CreateClient();
        var body = "{\"model\": \"tiny-gpt2\", \"prompt\": \"Call me Ishmael.\", \"max_tokens\": 7, \"temperature\": 0.9, \"top_p\": 0.95, \"seed\": 11}";
        var a = await (await c.PostAsync("/v1/completions", Json(body))).Content.ReadFromJsonAsync<JsonElement>();
        var b = await (await c.PostAsync("/v1/completions", Json(body))).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("text_completion", a.GetProperty("object").GetString());
        Assert.StartsWith("cmpl-", a.GetProperty("id").GetString());
        var choice = a.GetProperty("choices")[0];
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(choice.GetProperty("text").GetString(), b.GetProperty("choices")[0].GetProperty("text").GetString());
        var usage = a.GetProperty("usage");
        Assert.Equal(6, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(7, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(13, usage.GetProperty("total_tokens").GetInt32());
        var two = await (await c.PostAsync("/v1/completions", Json("{\"prompt\": [\"a\", \"b c\"], \"max_tokens\": 2, \"temperature\": 0}"))).Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(2, two.GetProperty("choices").GetArrayLength());
        Assert.Equal(1, two.GetProperty("choices")[1].GetProperty("index").GetInt32());
    }

    [Fact]
    public async Task Streaming_SendsEventsEndingWithDone_ThatConcatenateToTheCompletion()
    {
        await using var f = model.Factory();
        var c = f.CreateClient();
        var whole = await (await c.PostAsync("/v1/completions", Json("{\"prompt\": \"The whale\", \"max_tokens\": 12, \"seed\": 4}"))).Content.ReadFromJsonAsync<JsonElement>();
        var r = await c.PostAsync("/v1/completions", Json("{\"prompt\": \"The whale\", \"max_tokens\": 12, \"seed\": 4, \"stream\": true}"));
        Assert.Equal("text/event-stream", r.Content.Headers.ContentType?.MediaType);
        var events = (await r.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.All(events, e => Assert.StartsWith("data: ", e));
        Assert.Equal("data: [DONE]", events[^1]);
        var chunks = events[..^1].Select(e => JsonDocument.Parse(e["data: ".Length..]).RootElement.GetProperty("choices")[0]).ToArray();
        Assert.Equal(whole.GetProperty("choices")[0].GetProperty("text").GetString(), string.Concat(chunks.Select(x => x.GetProperty("text").GetString())));
        Assert.Equal("length", chunks[^1].GetProperty("finish_reason").GetString());
    }

    [Theory]
    [InlineData("{\"prompt\": \"x\"", "not valid JSON")]
    [InlineData("[1, 2]", "must be a JSON object")]
    [InlineData("{\"max_tokens\": 3}", "'prompt' is required")]
    [InlineData("{\"prompt\": 5}", "'prompt' must be a string or an array of strings")]
    [InlineData("{\"prompt\": \"\\ud800\"}", "'prompt' is not valid Unicode text")]
    [InlineData("{\"prompt\": [\"ok\", \"a\\udc00b\"]}", "'prompt[1]' is not valid Unicode text")]
    [InlineData("{\"prompt\": \"x\", \"stop\": [\"\\ud83d\"]}", "'stop[0]' is not valid Unicode text")]
    [InlineData("{\"prompt\": \"x\", \"model\": \"\\ud800\"}", "'model' is not valid Unicode text")]
    [InlineData("{\"prompt\": \"x\", \"max_tokens\": \"ten\"}", "'max_tokens' must be an integer")]
    [InlineData("{\"prompt\": \"x\", \"max_tokens\": 2.5}", "'max_tokens' must be an integer")]
    [InlineData("{\"prompt\": \"x\", \"temperature\": \"hot\"}", "'temperature' must be a number")]
    [InlineData("{\"prompt\": \"x\", \"stream\": \"yes\"}", "'stream' must be true or false")]
    [InlineData("{\"prompt\": \"x\", \"stop\": 7}", "'stop' must be a string or an array of strings")]
    [InlineData("{\"prompt\": \"x\", \"model\": 1}", "'model' must be a string")]
    [InlineData("{\"prompt\": \"x\", \"prompt\": \"y\"}", "The body has the key 'prompt' twice")]
    [InlineData("{\"prompt\": \"x\", \"\\u0070rompt\": \"y\"}", "The body has the key 'prompt' twice")]
    [InlineData("{\"prompt\": \"x\", \"user\": {\"id\": 1, \"id\": 2}}", "'user' has the key 'id' twice")]
    [InlineData("{\"prompt\": \"x\", \"user\": [\"a\", \"\\ud800\"]}", "'user[1]' is not valid Unicode text")]
    [InlineData("{\"prompt\": \"x\", \"\\ud800\": 1}", "A key of the body is not valid Unicode text")]
    public async Task MalformedRequests_Get400(string body, string expected)
    {
        await using var f = model.Factory();
        var p = await Problem(await f.CreateClient().PostAsync("/v1/completions", Json(body)), HttpStatusCode.BadRequest);
        Assert.Contains(expected, p.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task JsonIsUtf8_AByteOrderMarkIsSkipped_InvalidBytesGet400()
    {
        await using var f = model.Factory();
        var c = f.CreateClient();
        var body = "{\"prompt\": \"Call me\", \"max_tokens\": 2, \"temperature\": 0, \"user\": \"x\"}"u8.ToArray();
        async Task<HttpResponseMessage> Send(byte[] bytes)
        {
            var content = new ByteArrayContent(bytes);
            content.Headers.ContentType = new("application/json");
            return await c.PostAsync("/v1/completions", content);
        }
        Assert.Equal(HttpStatusCode.OK, (await Send([0xEF, 0xBB, 0xBF, .. body])).StatusCode);
        int at = Array.IndexOf(body, (byte)'x');                                    // in a field the endpoint does not read
        var p = await Problem(await Send([.. body[..at], 0xFF, .. body[(at + 1)..]]), HttpStatusCode.BadRequest);
        Assert.Contains($"not valid UTF-8: byte {at} (0xFF)", p.GetProperty("detail").GetString());
        p = await Problem(await Send([.. body[..at], 0xED, 0xA0, 0x80, .. body[(at + 1)..]]), HttpStatusCode.BadRequest);   // a surrogate, encoded
        Assert.Contains("not valid UTF-8", p.GetProperty("detail").GetString());
    }

    [Theory]
    [InlineData("text/plain")]
    [InlineData("application/x-www-form-urlencoded")]
    [InlineData("application/json; charset=utf-16")]
    [InlineData("application/xml")]
    public async Task ABodyThatIsNotJson_Gets415NamingTheContentType(string type)
    {
        await using var f = model.Factory();
        var c = f.CreateClient();
        var content = new StringContent("{\"prompt\": \"x\", \"max_tokens\": 2}");
        content.Headers.Remove("Content-Type");
        content.Headers.TryAddWithoutValidation("Content-Type", type);
        var p = await Problem(await c.PostAsync("/v1/completions", content), HttpStatusCode.UnsupportedMediaType);
        Assert.Contains($"The Content-Type is '{type}'", p.GetProperty("detail").GetString());
        foreach (var ok in new[] { "application/json", "Application/JSON; charset=UTF-8", null })
        {
            content = new StringContent("{\"prompt\": \"x\", \"max_tokens\": 2}");
            content.Headers.Remove("Content-Type");
            if (ok is not null) content.Headers.TryAddWithoutValidation("Content-Type", ok);
            Assert.Equal(HttpStatusCode.OK, (await c.PostAsync("/v1/completions", content)).StatusCode);
        }
    }

    [Theory]
    [InlineData("{\"prompt\": \"x\", \"max_tokens\": 0}", "'max_tokens' must be in [1, 1024], got 0")]
    [InlineData("{\"prompt\": \"x\", \"max_tokens\": 5000}", "'max_tokens' must be in [1, 1024], got 5000")]
    [InlineData("{\"prompt\": \"x\", \"temperature\": 2.5}", "'temperature' must be in [0, 2]")]
    [InlineData("{\"prompt\": \"x\", \"top_p\": 0}", "'top_p' must be in (0, 1]")]
    [InlineData("{\"prompt\": \"x\", \"stop\": [\"a\", \"b\", \"c\", \"d\", \"e\"]}", "'stop' must hold at most 4")]
    [InlineData("{\"prompt\": \"\"}", "'prompt' must not be empty")]
    [InlineData("{\"prompt\": [\"a\", \"b\"], \"stream\": true}", "'stream' works with a single prompt")]
    [InlineData("{\"prompt\": \"x\", \"n\": 3}", "'n' must be 1")]
    public async Task OutOfRangeValues_Get422(string body, string expected)
    {
        await using var f = model.Factory();
        var p = await Problem(await f.CreateClient().PostAsync("/v1/completions", Json(body)), HttpStatusCode.UnprocessableEntity);
        Assert.Contains(expected, p.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task T5Models_AreServedAndReportTheirKind()
    {
        await using var f = new Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactory<Program>().WithWebHostBuilder(b =>
        {
            b.UseSetting("Optimum:Models:0", model.Dir);
            b.UseSetting("Optimum:Models:1", $"g2p={model.T5Dir}");
            b.UseSetting("Optimum:Threads", "1");
        });
        var c = f.CreateClient();
        var models = await c.GetFromJsonAsync<JsonElement>("/v1/models");
        var kinds = models.GetProperty("data").EnumerateArray().ToDictionary(m => m.GetProperty("id").GetString()!, m => m.GetProperty("kind").GetString());
        Assert.Equal("causal-lm", kinds["tiny-gpt2"]);
        Assert.Equal("seq2seq", kinds["g2p"]);
        var r = await (await c.PostAsync("/v1/completions", Json("{\"model\": \"g2p\", \"prompt\": \"cat\", \"max_tokens\": 5, \"temperature\": 0}"))).Content.ReadFromJsonAsync<JsonElement>();
        var text = r.GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.All(text.Split(' ', StringSplitOptions.RemoveEmptyEntries), s => Assert.Contains(s, new[] { "K", "AE", "T", "D", "AO", "G", "a", "c", "d", "g", "o", "t" }));
        Assert.Equal(4, r.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());       // c, a, t, </s>
        var stream = await (await c.PostAsync("/v1/completions", Json("{\"model\": \"g2p\", \"prompt\": \"cat\", \"max_tokens\": 5, \"temperature\": 0, \"stream\": true}"))).Content.ReadAsStringAsync();
        Assert.EndsWith("data: [DONE]\n\n", stream);
        var p = await Problem(await c.PostAsync("/v1/completions", Json("{\"model\": \"g2p\", \"prompt\": \"" + new string('a', 30) + "\"}")), HttpStatusCode.RequestEntityTooLarge);
        Assert.Contains("the model's input holds 24", p.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task UnknownModel_Gets404()
    {
        await using var f = model.Factory();
        var p = await Problem(await f.CreateClient().PostAsync("/v1/completions", Json("{\"model\": \"gpt-5\", \"prompt\": \"x\"}")), HttpStatusCode.NotFound);
        Assert.Contains("Model 'gpt-5' is not served", p.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task OversizeBodyAndTooLongPrompt_Get413()
    {
        await using var f = model.Factory(("MaxBodyBytes", "2048"));
        var c = f.CreateClient();
        var big = "{\"prompt\": \"" + new string('a', 3000) + "\"}";
        var p = await Problem(await c.PostAsync("/v1/completions", Json(big)), HttpStatusCode.RequestEntityTooLarge);
        Assert.Contains("limit is 2048", p.GetProperty("detail").GetString());
        var words = string.Join(" ", Enumerable.Repeat("whale", 120));      // 120 tokens + 16 > 128 positions
        p = await Problem(await c.PostAsync("/v1/completions", Json($"{{\"prompt\": \"{words}\"}}")), HttpStatusCode.RequestEntityTooLarge);
        Assert.Contains("exceeds the model's context of 128 tokens", p.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task ApiKey_IsRequiredOnV1()
    {
        await using var f = model.Factory(("ApiKey", "s3cret"));
        var c = f.CreateClient();
        var p = await Problem(await c.GetAsync("/v1/models"), HttpStatusCode.Unauthorized);
        Assert.Contains("needs an API key", p.GetProperty("detail").GetString());
        c.DefaultRequestHeaders.Authorization = new("Bearer", "wrong");
        await Problem(await c.PostAsync("/v1/completions", Json("{\"prompt\": \"x\"}")), HttpStatusCode.Unauthorized);
        c.DefaultRequestHeaders.Authorization = new("Bearer", "s3cret");
        Assert.Equal(HttpStatusCode.OK, (await c.GetAsync("/v1/models")).StatusCode);
        foreach (var scheme in new[] { "bearer", "BEARER" })                                // the scheme is case-insensitive
        {
            c.DefaultRequestHeaders.Authorization = new(scheme, "s3cret");
            Assert.Equal(HttpStatusCode.OK, (await c.GetAsync("/v1/models")).StatusCode);
        }
        c.DefaultRequestHeaders.Authorization = new("bearer", "S3CRET");                    // the key is not
        await Problem(await c.GetAsync("/v1/models"), HttpStatusCode.Unauthorized);
        c.DefaultRequestHeaders.Authorization = null;
        Assert.Equal(HttpStatusCode.OK, (await c.GetAsync("/healthz")).StatusCode);      // health stays open
    }

    [Fact]
    public async Task FullQueue_Gets429()
    {
        await using var f = model.Factory(("MaxConcurrent", "1"), ("QueueLimit", "0"));
        var c = f.CreateClient();
        var body = "{\"prompt\": \"Call me\", \"max_tokens\": 100, \"temperature\": 0}";
        var responses = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => c.PostAsync("/v1/completions", Json(body))));
        Assert.All(responses, r => Assert.Contains(r.StatusCode, new[] { HttpStatusCode.OK, HttpStatusCode.TooManyRequests }));
        Assert.Contains(responses, r => r.StatusCode == HttpStatusCode.TooManyRequests);
        Assert.Contains(responses, r => r.StatusCode == HttpStatusCode.OK);
        var p = await Problem(responses.First(r => r.StatusCode == HttpStatusCode.TooManyRequests), HttpStatusCode.TooManyRequests);
        Assert.Contains("generation slots", p.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task SlowCompletion_TimesOutWith504()
    {
        await using var f = model.Factory(("RequestTimeoutSeconds", "0.001"));
        var c = f.CreateClient();
        var p = await Problem(await c.PostAsync("/v1/completions", Json("{\"prompt\": \"Call me\", \"max_tokens\": 100}")), HttpStatusCode.GatewayTimeout);
        Assert.Contains("longer than 0.001 s", p.GetProperty("detail").GetString());
        var metrics = await c.GetStringAsync("/metrics");
        Assert.Contains("finish_reason=\"timeout\"", metrics);
    }

    [Fact]
    public async Task ConcurrentGreedyCompletions_SharingTheBatch_EqualEachCompletionAlone()
    {
        string[] prompts = ["Call me Ishmael.", "a", "The quick brown fox jumps over the lazy dog and", "Hello", "It was the best of times", "x y"];
        int[] maxTokens = [9, 20, 4, 14, 1, 30];
        string[] stop = [" the", "\n"];
        await using var f = model.Factory(("MaxConcurrent", "4"));
        var c = f.CreateClient();
        var answers = await Task.WhenAll(prompts.Select(async (p, i) =>
        {
            await Task.Delay(5 * i);                                             // arrivals while others are decoding
            var body = JsonSerializer.Serialize(new { prompt = p, max_tokens = maxTokens[i], temperature = 0, stop });
            var r = await c.PostAsync("/v1/completions", Json(body));
            r.EnsureSuccessStatusCode();
            return (await r.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("choices")[0];
        }));
        using var lm = new Optimum.Inference.CausalLm(model.Dir);
        var alone = new Optimum.Inference.TextGenerator(lm, Optimum.Hub.Gpt2Tokenizer.Create());
        for (int i = 0; i < prompts.Length; i++)
        {
            var expected = alone.Complete(prompts[i], new Optimum.Inference.GenerationOptions { MaxNewTokens = maxTokens[i] }, stop);
            Assert.Equal(expected.Text, answers[i].GetProperty("text").GetString());
            Assert.Equal(Optimum.Core.EnumNames.Name(expected.FinishReason), answers[i].GetProperty("finish_reason").GetString());
        }
    }
    [Theory]
    [InlineData(true)]
    [InlineData(false)]                                                          // serve --no-batching
    public async Task ConcurrentT5Completions_SharingTheBatch_EqualEachCompletionAlone(bool batching)
    {
        string[] prompts = ["cat", "dogcat", "a", "catcatdogdog", "god", "tac"];
        int[] maxTokens = [9, 20, 4, 14, 1, 23];
        string[] stop = ["AO", "T K"];
        await using var f = new Microsoft.AspNetCore.Mvc.Testing.WebApplicationFactory<Program>().WithWebHostBuilder(b =>
        {
            b.UseSetting("Optimum:Models:0", $"g2p={model.T5Dir}");
            b.UseSetting("Optimum:Threads", "1");
            b.UseSetting("Optimum:MaxConcurrent", "4");
            b.UseSetting("Optimum:ContinuousBatching", batching ? "true" : "false");
        });
        var c = f.CreateClient();
        var answers = await Task.WhenAll(prompts.Select(async (p, i) =>
        {
            await Task.Delay(5 * i);                                             // arrivals while others are decoding
            var body = JsonSerializer.Serialize(new { prompt = p, max_tokens = maxTokens[i], temperature = 0, stop, stream = i % 2 == 1 });
            var r = await c.PostAsync("/v1/completions", Json(body));
            r.EnsureSuccessStatusCode();
            var text = await r.Content.ReadAsStringAsync();
            if (i % 2 == 0) return JsonDocument.Parse(text).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
            return string.Concat(text.Split('\n').Where(l => l.StartsWith("data: {", StringComparison.Ordinal))
                .Select(l => JsonDocument.Parse(l[6..]).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()));
        }));
        var registry = f.Services.GetRequiredService<ModelRegistry>();
        Assert.Equal(batching, registry.TryGetScheduler("g2p", out var scheduler));
        if (batching) Assert.True(scheduler.Stats.Steps > 0, "no decode step ran in the batch");
        using var loaded = Optimum.Models.ModelKinds.Load(model.T5Dir);
        for (int i = 0; i < prompts.Length; i++)
        {
            var expected = loaded.Generator!.Complete(prompts[i], new Optimum.Inference.GenerationOptions { MaxNewTokens = maxTokens[i] }, stop);
            Assert.Equal(expected.Text, answers[i]);
        }
    }
}
