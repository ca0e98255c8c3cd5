using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Threading.RateLimiting;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using OpenTelemetry.Metrics;

namespace Optimum.Server;

/// <summary>
/// The service's endpoints inside any ASP.NET Core app:
/// <code>
/// builder.Services.AddOptimum(o =&gt; o.Models.Add(new ServedModel("gpt2", "models/gpt2")));
/// var app = builder.Build();
/// app.MapGet("/hello", () =&gt; "hello");    // the app's own routes are left alone
/// app.MapOptimum();
/// </code>
/// Everything the service does is scoped to its endpoints: the API key guards only its /v1 routes, request
/// metrics count only its routes, and its exceptions become problem details on its routes (a client mistake is
/// a 4xx, never a 5xx); no middleware is added to the app's pipeline.
/// </summary>
public static partial class OptimumServer
{
    /// <summary>The key of the generation slots in the container (keyed, so the app's own limiters are not touched).</summary>
    internal const string ServiceKey = "Optimum";

    /// <summary>
    /// Registers the service: its <see cref="ServerOptions"/> (bound from the configuration section "Optimum", then
    /// <paramref name="configure"/>), the <see cref="ModelRegistry"/> (a singleton the container disposes), metrics
    /// and the OpenTelemetry meter with its Prometheus exporter (added to the app's MeterProvider, so /metrics also shows
    /// the app's own meters). Calling it again only adds <paramref name="configure"/>.
    /// Hosting stays the app's: give the host a shutdown timeout of at least
    /// <see cref="ServerOptions.RequestTimeoutSeconds"/> so in-flight requests can finish (<see cref="Build(string[], Action{WebApplicationBuilder}?)"/> does).
    /// </summary>
    public static IServiceCollection AddOptimum(this IServiceCollection services, Action<ServerOptions>? configure = null)
    {
        var options = services.AddOptions<ServerOptions>();
        if (!services.Any(d => d.ServiceType == typeof(ModelRegistry)))
        {
            options.BindConfiguration(ServerOptions.Section);
            services.TryAddSingleton(sp =>
            {
                var o = sp.GetRequiredService<IOptions<ServerOptions>>().Value;
                o.Validate();
                return o;
            });
            services.TryAddSingleton(sp => new ModelRegistry(sp.GetRequiredService<ServerOptions>()));
            services.TryAddSingleton<ServerMetrics>();
            services.TryAddKeyedSingleton(ServiceKey, (sp, _) =>
            {
                var o = sp.GetRequiredService<ServerOptions>();
                return new ConcurrencyLimiter(new ConcurrencyLimiterOptions { PermitLimit = o.MaxConcurrent, QueueLimit = o.QueueLimit, QueueProcessingOrder = QueueProcessingOrder.OldestFirst });
            });
            services.AddOpenTelemetry().WithMetrics(m => m.AddMeter(ServerMetrics.MeterName)
                .AddView("optimum.request.duration", new ExplicitBucketHistogramConfiguration { Boundaries = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] })
                .AddPrometheusExporter(p => p.ScrapeResponseCacheDurationMilliseconds = 0));
        }
        if (configure is not null) options.Configure(configure);
        return services;
    }

    /// <summary>
    /// Maps POST /v1/completions, POST /v1/forecast, POST /v1/images/generations, GET /v1/models, GET /healthz and GET /metrics (Prometheus) under
    /// <paramref name="prefix"/>, and loads the models now, so invalid options or model folders fail at start-up
    /// (<see cref="InvalidOperationException"/> naming the option). Returns the group of all of them, for more conventions.
    /// </summary>
    public static RouteGroupBuilder MapOptimum(this IEndpointRouteBuilder endpoints, string prefix = "")
    {
        var o = endpoints.ServiceProvider.GetService<ServerOptions>()
            ?? throw new InvalidOperationException($"{nameof(MapOptimum)} needs the service's registrations: call builder.Services.{nameof(AddOptimum)}(...) before building the app.");
        _ = endpoints.ServiceProvider.GetRequiredService<ModelRegistry>();
        var group = endpoints.MapGroup(prefix);
        // Per-endpoint middleware: it wraps each Optimum endpoint's delegate (after its filters and result), nothing else.
        ((IEndpointConventionBuilder)group).Add(b =>
        {
            var next = b.RequestDelegate ?? throw new InvalidOperationException($"Endpoint '{b.DisplayName}' has no request delegate.");
            b.RequestDelegate = ctx => Observe(ctx, next);
        });
        group.MapGet("/healthz", (ModelRegistry m) => Results.Ok(new { status = "ok", models = m.Names }));
        var v1 = group.MapGroup("/v1");
        if (!string.IsNullOrEmpty(o.ApiKey)) v1.AddEndpointFilter((fc, next) => Authorize(fc, next, o.ApiKey));
        v1.MapGet("/models", ListModels);
        v1.MapPost("/completions", Complete);
        v1.MapPost("/forecast", Forecast);
        v1.MapPost("/images/generations", GenerateImages);
        // The exporter maps every method; a scrape is a GET.
        group.MapPrometheusScrapingEndpoint("/metrics").WithMetadata(new HttpMethodMetadata(["GET"]));
        return group;
    }

    /// <summary>Every model with its kind, its weights' precision, and what a client needs to call it: a forecaster's lengths, an image generator's size and classes, an adapter's base and LoRA settings.</summary>
    private static IResult ListModels(ModelRegistry m) => Results.Ok(new
    {
        @object = "list",
        data = m.Names.Select(n =>
        {
            var (id, kind, precision) = (n, m.KindOf(n), m.PrecisionOf(n));
            if (m.TryGetForecaster(n, out var f))
                return (object)new { id, @object = "model", created = m.Created, owned_by = "optimum-net", kind, precision, prediction_length = f.Model.PredictionLength, context_length = f.Model.ContextLength };
            if (m.TryGetImageGenerator(n, out var g))
                return new { id, @object = "model", created = m.Created, owned_by = "optimum-net", kind, precision, sample_size = g.Model.SampleSize, channels = g.Model.Channels, classes = g.Model.ClassCount };
            if (m.TryGetAdapter(n, out var a))
                return new
                {
                    id, @object = "model", created = m.Created, owned_by = "optimum-net", kind, precision,
                    adapter = new { @base = a.Base, type = "lora", r = a.Info.Config.R, lora_alpha = a.Info.Config.LoraAlpha, target_modules = a.Info.Targets, modules = a.Info.Modules.Count },
                };
            return new { id, @object = "model", created = m.Created, owned_by = "optimum-net", kind, precision };
        }),
    });

    /// <summary>Counts the request by route and status, and answers an exception thrown before the response started with problem details.</summary>
    private static async Task Observe(HttpContext ctx, RequestDelegate next)
    {
        var start = Stopwatch.GetTimestamp();
        try { await next(ctx); }
        catch (Exception e) when (e is OperationCanceledException or IOException && ctx.RequestAborted.IsCancellationRequested)
        {
            if (!ctx.Response.HasStarted) ctx.Response.StatusCode = StatusCodes.Status499ClientClosedRequest;     // the client left
        }
        catch (Exception e) when (!ctx.Response.HasStarted)
        {
            // A malformed or too slow upload is the client's mistake: its own status (400, 408, 413), not a 500.
            var status = e is BadHttpRequestException bad ? bad.StatusCode : StatusCodes.Status500InternalServerError;
            if (status >= 500)
                ctx.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(OptimumServer).FullName!).LogError(e, "{Method} {Path} failed", ctx.Request.Method, ctx.Request.Path);
            ctx.Response.Clear();
            // A model that outputs NaN is a server-side fault worth naming (its message holds no request data).
            var detail = status < 500 || e is Optimum.Inference.NonFiniteOutputException ? e.Message : null;
            await Results.Problem(statusCode: status, detail: detail).ExecuteAsync(ctx);
        }
        finally
        {
            var metrics = ctx.RequestServices.GetRequiredService<ServerMetrics>();
            // The endpoint's route pattern, not the raw path: arbitrary paths must not create metric series.
            var route = (ctx.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "unmatched";
            metrics.Requests.Add(1, new("route", route), new("status", ctx.Response.StatusCode));
            metrics.Duration.Record(Stopwatch.GetElapsedTime(start).TotalSeconds, new KeyValuePair<string, object?>("route", route));
        }
    }

    /// <summary>The /v1 endpoint filter when an API key is set: 401 unless "Authorization: Bearer &lt;key&gt;".</summary>
    private static async ValueTask<object?> Authorize(EndpointFilterInvocationContext fc, EndpointFilterDelegate next, string key)
    {
        var header = fc.HttpContext.Request.Headers.Authorization.ToString();
        // The scheme is case-insensitive (RFC 9110 §11.1): "bearer <key>" is the same credential.
        var given = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header["Bearer ".Length..] : "";
        if (CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(given), Encoding.UTF8.GetBytes(key))) return await next(fc);
        fc.HttpContext.Response.Headers.WWWAuthenticate = "Bearer";
        return Problem(401, "Unauthorized", header.Length == 0 ? "This service needs an API key: send 'Authorization: Bearer <key>'." : "The API key is not valid.");
    }
}
