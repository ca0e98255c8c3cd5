using System.Threading.RateLimiting;
using Optimum.Inference.Forecasting;

namespace Optimum.Server;

/// <summary>
/// POST /v1/forecast: sample-path forecasts from a TimeSeriesTransformer or Informer folder, summarised as
/// mean, median and quantiles per step. Request and errors: <see cref="ForecastParser"/>. Same limits as
/// completions: body size (413), API key (401), a generation slot with a bounded queue (429), timeout (504),
/// and a client that disconnects stops its forecast.
/// </summary>
public static partial class OptimumServer
{
    private static async Task<IResult> Forecast(HttpContext ctx, ServerOptions o, ModelRegistry models, ServerMetrics metrics, [FromKeyedServices(ServiceKey)] ConcurrencyLimiter limiter)
    {
        var (req, refusal) = await ReadRequest(ctx, o, body => ForecastParser.Parse(body, o, models));
        if (req is null) return refusal!;
        models.TryGetForecaster(req.Model, out var served);

        // A Forecaster takes one call at a time; a client that leaves while queued has its series counted as cancelled.
        var (leases, refused) = await AcquireTurnAndSlot(ctx, o, served.Turn, limiter, req.Model, "forecasts",
            () => metrics.ForecastSeries.Add(req.Series.Count, new("model", req.Model), new("outcome", "cancelled")));
        if (leases is null) return refused!;
        using var _ = leases;

        using var timeout = new RequestDeadline(o.RequestTimeoutSeconds, ctx.RequestAborted);
        var options = new ForecastOptions { Samples = req.Samples, Quantiles = req.Quantiles, Horizon = req.Horizon, Seed = req.Seed };
        IReadOnlyList<Forecast>? forecasts = null;
        string outcome = "ok";
        try { forecasts = await Task.Run(() => served.Model.Predict(req.Series, options, timeout.Token)); }
        catch (OperationCanceledException) when (timeout.Token.IsCancellationRequested)
        {
            outcome = ctx.RequestAborted.IsCancellationRequested ? "cancelled" : "timeout";
        }
        catch (ForecastOverflowException e)
        {
            // The registry checked at start-up that the model forecasts a plain series: a forecast leaving float32's range is the series' doing.
            metrics.ForecastSeries.Add(req.Series.Count, new("model", req.Model), new("outcome", "error"));
            return Problem(422, "Value out of range", e.Message);
        }
        catch (InvalidOperationException e)
        {
            // The model itself failed: say so, not a bare 500.
            metrics.ForecastSeries.Add(req.Series.Count, new("model", req.Model), new("outcome", "error"));
            return Problem(500, "Forecast failed", e.Message);
        }
        if (forecasts is not null && timeout.Expired) (forecasts, outcome) = (null, "timeout");
        metrics.ForecastSeries.Add(req.Series.Count, new("model", req.Model), new("outcome", outcome));
        if (ctx.RequestAborted.IsCancellationRequested) return Results.Empty;
        if (forecasts is null) return Problem(504, "Timed out", $"The forecast took longer than {o.RequestTimeoutSeconds} s.");
        return Results.Ok(new
        {
            model = req.Model,
            horizon = req.Horizon,
            forecasts = forecasts.Select(f => new
            {
                mean = f.Mean,
                median = f.Median,
                quantiles = req.Quantiles.ToDictionary(ForecastParser.Key, q => f.Quantiles[q]),
            }),
        });
    }

    /// <summary>
    /// The model's turn, then a generation slot (a request waiting for its model holds no slot another model could use):
    /// both leases to dispose when done, or the answer instead: 429 naming the full queue, or an empty response after
    /// <paramref name="clientLeft"/> when the client hung up while queued. <paramref name="verb"/> says what the model does ("forecasts").
    /// </summary>
    private static async Task<(IDisposable? Leases, IResult? Answer)> AcquireTurnAndSlot(HttpContext ctx, ServerOptions o, ConcurrencyLimiter turn,
        ConcurrencyLimiter slots, string model, string verb, Action clientLeft)
    {
        var t = await Acquire(turn, ctx);
        if (t is null) { clientLeft(); return (null, Results.Empty); }
        if (!t.IsAcquired)
        {
            t.Dispose();
            return (null, Problem(429, "Too many requests", $"Model '{model}' {verb} one request at a time and its {o.QueueLimit} queue places are taken; retry later."));
        }
        var s = await Acquire(slots, ctx);
        if (s is null || !s.IsAcquired)
        {
            s?.Dispose();
            t.Dispose();
            if (s is null) { clientLeft(); return (null, Results.Empty); }
            return (null, Problem(429, "Too many requests", $"All {o.MaxConcurrent} generation slots and {o.QueueLimit} queue places are taken; retry later."));
        }
        return (new Leases(s, t), null);
    }

    /// <summary>Releases the slot, then the model's turn.</summary>
    private sealed class Leases(RateLimitLease slot, RateLimitLease turn) : IDisposable
    {
        public void Dispose()
        {
            slot.Dispose();
            turn.Dispose();
        }
    }

    /// <summary>A lease from <paramref name="limiter"/> (not acquired when its queue is full), or null when the client left while queued.</summary>
    private static async Task<RateLimitLease?> Acquire(RateLimiter limiter, HttpContext ctx)
    {
        try { return await limiter.AcquireAsync(1, ctx.RequestAborted); }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested) { return null; }
    }
}
