using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http.Features;
using Optimum.Inference;
using OpenTelemetry.Metrics;

namespace Optimum.Server;

/// <summary>
/// The completions and forecasting microservice (ASP.NET Core minimal API): POST /v1/completions (OpenAI subset,
/// server-sent events when streaming), POST /v1/forecast (probabilistic forecasts, see ForecastEndpoint.cs),
/// GET /v1/models, GET /healthz, GET /metrics (Prometheus).
/// Errors are RFC 7807 problem details; limits: body size (413), context length (413), API key (401),
/// bounded concurrency with a queue (429), per-request timeout (504); a client that disconnects
/// stops its generation or forecast; shutdown lets in-flight requests finish.
/// </summary>
public static partial class OptimumServer
{
    /// <summary>Builds the app from command-line args / configuration (section "Optimum").</summary>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        var builder = WebApplication.CreateSlimBuilder(args);
        configure?.Invoke(builder);
        // Options are read from configuration when first needed (after the host is built), so settings
        // added by hosts and test factories are seen.
        builder.Services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IConfiguration>().GetSection("Optimum").Get<ServerOptions>() ?? new ServerOptions();
            o.Validate();
            return o;
        });
        builder.Services.AddSingleton(sp => new ModelRegistry(sp.GetRequiredService<ServerOptions>()));
        builder.Services.AddSingleton<ServerMetrics>();
        builder.Services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<ServerOptions>();
            return new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = o.MaxConcurrent, QueueLimit = o.QueueLimit, QueueProcessingOrder = QueueProcessingOrder.OldestFirst });
        });
        builder.Services.AddProblemDetails();
        builder.Services.AddOptions<HostOptions>().Configure<ServerOptions>((h, o) => h.ShutdownTimeout = TimeSpan.FromSeconds(Math.Max(30, o.RequestTimeoutSeconds)));
        builder.Services.AddOptions<Microsoft.AspNetCore.Server.Kestrel.Core.KestrelServerOptions>().Configure<ServerOptions>((k, o) => k.Limits.MaxRequestBodySize = o.MaxBodyBytes);
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        builder.Services.AddOpenTelemetry().WithMetrics(m => m.AddMeter(ServerMetrics.MeterName)
            .AddView("optimum.request.duration", new ExplicitBucketHistogramConfiguration { Boundaries = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] })
            .AddPrometheusExporter(p => p.ScrapeResponseCacheDurationMilliseconds = 0));

        var app = builder.Build();
        _ = app.Services.GetRequiredService<ModelRegistry>();           // load the models before taking requests
        app.UseExceptionHandler();
        app.Use(Measure);
        app.Use(Authenticate);
        app.MapGet("/healthz", (ModelRegistry m) => Results.Ok(new { status = "ok", models = m.Names }));
        app.MapGet("/v1/models", (ModelRegistry m) => Results.Ok(new
        {
            @object = "list",
            data = m.Names.Select(n => m.TryGetForecaster(n, out var f)
                ? (object)new { id = n, @object = "model", created = m.Created, owned_by = "optimum-net", kind = m.KindOf(n), prediction_length = f.Model.PredictionLength, context_length = f.Model.ContextLength }
                : new { id = n, @object = "model", created = m.Created, owned_by = "optimum-net", kind = m.KindOf(n) }),
        }));
        app.MapPost("/v1/completions", Complete);
        app.MapPost("/v1/forecast", Forecast);
        app.MapPrometheusScrapingEndpoint("/metrics");
        return app;
    }

    private static async Task Measure(HttpContext ctx, RequestDelegate next)
    {
        var start = Stopwatch.GetTimestamp();
        try { await next(ctx); }
        finally
        {
            var metrics = ctx.RequestServices.GetRequiredService<ServerMetrics>();
            // The endpoint's route pattern, not the raw path: arbitrary paths must not create metric series.
            var route = (ctx.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "unmatched";
            metrics.Requests.Add(1, new("route", route), new("status", ctx.Response.StatusCode));
            metrics.Duration.Record(Stopwatch.GetElapsedTime(start).TotalSeconds, new KeyValuePair<string, object?>("route", route));
        }
    }

    private static async Task Authenticate(HttpContext ctx, RequestDelegate next)
    {
        var key = ctx.RequestServices.GetRequiredService<ServerOptions>().ApiKey;
        if (!string.IsNullOrEmpty(key) && ctx.Request.Path.StartsWithSegments("/v1"))
        {
            var header = ctx.Request.Headers.Authorization.ToString();
            var given = header.StartsWith("Bearer ", StringComparison.Ordinal) ? header["Bearer ".Length..] : "";
            if (!CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(given), Encoding.UTF8.GetBytes(key)))
            {
                ctx.Response.Headers.WWWAuthenticate = "Bearer";
                await Results.Problem(statusCode: 401, title: "Unauthorized",
                    detail: header.Length == 0 ? "This service needs an API key: send 'Authorization: Bearer <key>'." : "The API key is not valid.").ExecuteAsync(ctx);
                return;
            }
        }
        await next(ctx);
    }

    private static IResult Problem(int status, string title, string detail) => Results.Problem(statusCode: status, title: title, detail: detail);

    /// <summary>The request body, or a 413 problem: refused by Content-Length first, then while reading (chunked bodies have no length).</summary>
    private static async Task<(ReadOnlyMemory<byte> Body, IResult? Refusal)> ReadBody(HttpContext ctx, ServerOptions o)
    {
        if (ctx.Request.ContentLength > o.MaxBodyBytes) return (default, Problem(413, "Payload too large", $"The body has {ctx.Request.ContentLength} bytes; the limit is {o.MaxBodyBytes}."));
        var body = new MemoryStream();
        var buffer = new byte[8192];
        try
        {
            int read;
            while ((read = await ctx.Request.Body.ReadAsync(buffer, ctx.RequestAborted)) > 0)
            {
                body.Write(buffer, 0, read);
                if (body.Length > o.MaxBodyBytes) return (default, Problem(413, "Payload too large", $"The body exceeds the limit of {o.MaxBodyBytes} bytes."));
            }
        }
        catch (BadHttpRequestException e) when (e.StatusCode == 413)
        {
            return (default, Problem(413, "Payload too large", $"The body exceeds the limit of {o.MaxBodyBytes} bytes."));
        }
        return (body.GetBuffer().AsMemory(0, (int)body.Length), null);
    }

    private static async Task<IResult> Complete(HttpContext ctx, ServerOptions o, ModelRegistry models, ServerMetrics metrics, ConcurrencyLimiter limiter)
    {
        var (body, refusal) = await ReadBody(ctx, o);
        if (refusal is not null) return refusal;
        CompletionRequest req;
        try { req = CompletionParser.Parse(body.Span, o, models); }
        catch (RequestError e) { return Problem(e.Status, e.Title, e.Message); }
        models.TryGet(req.Model, out var generator);
        foreach (var prompt in req.Prompts)
            if (generator.CheckLength(generator.Encode(prompt).Count, req.MaxTokens) is { } tooLong)
                return Problem(413, "Prompt too long", tooLong);

        RateLimitLease lease;
        try { lease = await limiter.AcquireAsync(1, ctx.RequestAborted); }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested) { return Results.Empty; }   // gave up while queued
        using var _ = lease;
        if (!lease.IsAcquired)
            return Problem(429, "Too many requests", $"All {o.MaxConcurrent} generation slots and {o.QueueLimit} queue places are taken; retry later.");

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted);
        timeout.CancelAfter(TimeSpan.FromSeconds(o.RequestTimeoutSeconds));
        var id = "cmpl-" + Convert.ToHexString(RandomNumberGenerator.GetBytes(12)).ToLowerInvariant();
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        GenerationOptions Options(int index) => new()
        {
            MaxNewTokens = req.MaxTokens, Temperature = req.Temperature, TopP = req.TopP, TopK = req.TopK, RepetitionPenalty = req.RepetitionPenalty,
            Seed = (req.Seed ?? Random.Shared.Next()) + index,
        };
        void Count(Completion c)
        {
            var reason = timeout.IsCancellationRequested && !ctx.RequestAborted.IsCancellationRequested ? "timeout" : c.FinishReason;
            metrics.Tokens.Add(c.CompletionTokens, new KeyValuePair<string, object?>("model", req.Model));
            metrics.Completions.Add(1, new("model", req.Model), new("finish_reason", reason));
        }

        if (!req.Stream)
        {
            var done = new List<Completion>();
            foreach (var (prompt, i) in req.Prompts.Select((p, i) => (p, i)))
            {
                var c = await Task.Run(() => generator.Complete(prompt, Options(i), req.Stop, timeout.Token));
                Count(c);
                done.Add(c);
            }
            if (ctx.RequestAborted.IsCancellationRequested) return Results.Empty;
            if (timeout.IsCancellationRequested)
                return Problem(504, "Timed out", $"The completion took longer than {o.RequestTimeoutSeconds} s.");
            return Results.Ok(new
            {
                id, @object = "text_completion", created, model = req.Model,
                choices = done.Select((c, i) => new { text = c.Text, index = i, logprobs = (object?)null, finish_reason = c.FinishReason }),
                usage = new { prompt_tokens = done.Sum(c => c.PromptTokens), completion_tokens = done.Sum(c => c.CompletionTokens), total_tokens = done.Sum(c => c.PromptTokens + c.CompletionTokens) },
            });
        }

        ctx.Response.ContentType = "text/event-stream";
        ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        async Task Send(object payload)
        {
            await ctx.Response.WriteAsync("data: " + JsonSerializer.Serialize(payload) + "\n\n", CancellationToken.None);
            await ctx.Response.Body.FlushAsync(CancellationToken.None);
        }
        Completion? final = null;
        try
        {
            await foreach (var piece in generator.StreamAsync(req.Prompts[0], Options(0), req.Stop, c => final = c, timeout.Token))
                await Send(new { id, @object = "text_completion", created, model = req.Model, choices = new[] { new { text = piece, index = 0, logprobs = (object?)null, finish_reason = (string?)null } } });
            Count(final!);
            if (timeout.IsCancellationRequested && !ctx.RequestAborted.IsCancellationRequested)
                await Send(new { error = new { message = $"The completion took longer than {o.RequestTimeoutSeconds} s.", type = "timeout" } });
            else
                await Send(new { id, @object = "text_completion", created, model = req.Model, choices = new[] { new { text = "", index = 0, logprobs = (object?)null, finish_reason = (string?)final!.FinishReason } } });
            await ctx.Response.WriteAsync("data: [DONE]\n\n", CancellationToken.None);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException && ctx.RequestAborted.IsCancellationRequested)
        {
            // The client went away: the generation has stopped with the stream.
        }
        return Results.Empty;
    }
}
