using System.Security.Cryptography;
using System.Text.Json;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Optimum.Core;
using Optimum.Inference;

namespace Optimum.Server;

/// <summary>
/// The completions, forecasting and image generation microservice (ASP.NET Core minimal API): POST /v1/completions (OpenAI subset,
/// server-sent events when streaming), POST /v1/forecast (probabilistic forecasts, see ForecastEndpoint.cs),
/// POST /v1/images/generations (diffusion samples as PNGs, see ImagesEndpoint.cs), GET /v1/models, GET /healthz, GET /metrics (Prometheus).
/// Errors are RFC 7807 problem details; limits: JSON bodies only (415), body size (413), a body's time and rate (408,
/// RequestBody.cs, which also has Kestrel's connection limits), context length (413), API key (401), bounded concurrency
/// with a queue (429), per-request timeout (504); a client that disconnects stops its generation, forecast or sampling;
/// shutdown lets in-flight requests finish.
/// In an app of your own: <see cref="AddOptimum"/> and <see cref="MapOptimum"/> (OptimumEndpoints.cs); on its own: Build.
/// </summary>
public static partial class OptimumServer
{
    /// <summary>The service on its own, configured by command-line args / configuration (section "Optimum"). The caller runs and disposes the app.</summary>
    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null) => Create(args, configure, null);

    /// <summary>
    /// The service on its own with <paramref name="options"/>, which replace the configuration section "Optimum";
    /// <paramref name="args"/> configure the host (--urls, logging). The caller runs and disposes the app.
    /// </summary>
    public static WebApplication Build(ServerOptions options, string[]? args = null, Action<WebApplicationBuilder>? configure = null) =>
        Create(args ?? [], configure, o =>
        {
            // Every property, so that one added later cannot be forgotten here.
            foreach (var p in typeof(ServerOptions).GetProperties()) p.SetValue(o, p.GetValue(options));
            o.Models = [.. options.Models];
        });

    private static WebApplication Create(string[] args, Action<WebApplicationBuilder>? configure, Action<ServerOptions>? options)
    {
        var builder = WebApplication.CreateSlimBuilder(args);
        configure?.Invoke(builder);
        builder.Services.AddOptimum(options);
        // What a host decides for all its routes, decided here for the service on its own: problem details with
        // the framework's defaults (trace id), time for in-flight requests to finish at shutdown, Kestrel's limits (ApplyLimits), quieter logs.
        builder.Services.AddProblemDetails();
        builder.Services.AddOptions<HostOptions>().Configure<ServerOptions>((h, o) => h.ShutdownTimeout = TimeSpan.FromSeconds(Math.Max(30, o.RequestTimeoutSeconds)));
        builder.Services.AddOptions<KestrelServerOptions>().Configure<ServerOptions>((k, o) => ApplyLimits(k.Limits, o));
        builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
        var app = builder.Build();
        app.MapOptimum();
        return app;
    }

    private static IResult Problem(int status, string title, string detail) => Results.Problem(statusCode: status, title: title, detail: detail);

    private static async Task<IResult> Complete(HttpContext ctx, ServerOptions o, ModelRegistry models, ServerMetrics metrics, [FromKeyedServices(ServiceKey)] ConcurrencyLimiter limiter)
    {
        var (req, refusal) = await ReadRequest(ctx, o, body => CompletionParser.Parse(body, o, models));
        if (req is null) return refusal!;
        models.TryGet(req.Model, out var generator);
        foreach (var prompt in req.Prompts)
            if (generator.CheckLength(generator.Encode(prompt).Count, req.MaxTokens) is { } tooLong)
                return Problem(413, "Prompt too long", tooLong);

        using var lease = await Acquire(limiter, ctx);
        if (lease is null) return Results.Empty;                                                // gave up while queued
        if (!lease.IsAcquired)
            return Problem(429, "Too many requests", $"All {o.MaxConcurrent} generation slots and {o.QueueLimit} queue places are taken; retry later.");

        using var timeout = new RequestDeadline(o.RequestTimeoutSeconds, ctx.RequestAborted);
        var id = "cmpl-" + Convert.ToHexString(RandomNumberGenerator.GetBytes(12)).ToLowerInvariant();
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        GenerationOptions Options(int index) => new()
        {
            MaxNewTokens = req.MaxTokens, Temperature = req.Temperature, TopP = req.TopP, TopK = req.TopK, RepetitionPenalty = req.RepetitionPenalty,
            Seed = (req.Seed ?? Random.Shared.Next()) + index,
        };
        void Count(Completion c)                                                                // may run after the request ended (a client that hung up)
        {
            var reason = timeout.Expired ? "timeout" : EnumNames.Name(c.FinishReason);
            metrics.Tokens.Add(c.CompletionTokens, new KeyValuePair<string, object?>("model", req.Model));
            metrics.Completions.Add(1, new("model", req.Model), new("finish_reason", reason));
        }

        if (!req.Stream)
        {
            var done = new List<Completion>();
            foreach (var (prompt, i) in req.Prompts.Select((p, i) => (p, i)))
            {
                // A dedicated thread: the generation blocks it until the row finishes (see TextGenerator.StreamAsync).
                var c = await Task.Factory.StartNew(() => generator.Complete(prompt, Options(i), req.Stop, timeout.Token),
                    CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
                Count(c);
                done.Add(c);
            }
            if (ctx.RequestAborted.IsCancellationRequested) return Results.Empty;
            if (timeout.Expired)
                return Problem(504, "Timed out", $"The completion took longer than {o.RequestTimeoutSeconds} s.");
            return Results.Ok(new
            {
                id, @object = "text_completion", created, model = req.Model,
                choices = done.Select((c, i) => new { text = c.Text, index = i, logprobs = (object?)null, finish_reason = EnumNames.Name(c.FinishReason) }),
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
            // Counted when the generation ends, also when a write to a client that hung up throws first.
            await foreach (var piece in generator.StreamAsync(req.Prompts[0], Options(0), req.Stop, c => { final = c; Count(c); }, timeout.Token))
                await Send(new { id, @object = "text_completion", created, model = req.Model, choices = new[] { new { text = piece, index = 0, logprobs = (object?)null, finish_reason = (string?)null } } });
            if (timeout.Expired)
                await Send(new { error = new { message = $"The completion took longer than {o.RequestTimeoutSeconds} s.", type = "timeout" } });
            else
                await Send(new { id, @object = "text_completion", created, model = req.Model, choices = new[] { new { text = "", index = 0, logprobs = (object?)null, finish_reason = (string?)EnumNames.Name(final!.FinishReason) } } });
            await ctx.Response.WriteAsync("data: [DONE]\n\n", CancellationToken.None);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException && ctx.RequestAborted.IsCancellationRequested)
        {
            // The client went away: the generation has stopped with the stream.
        }
        catch (Optimum.Inference.NonFiniteOutputException e)
        {
            // The model broke mid-stream (the 200 is already sent): an error event and a clean end, not a cut connection.
            await Send(new { error = new { message = e.Message, type = "model_error" } });
            await ctx.Response.WriteAsync("data: [DONE]\n\n", CancellationToken.None);
        }
        return Results.Empty;
    }
}
