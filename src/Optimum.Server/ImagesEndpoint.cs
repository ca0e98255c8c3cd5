using System.Threading.RateLimiting;
using Optimum.Core;
using Optimum.Inference.Diffusion;
using Optimum.Plots;

namespace Optimum.Server;

/// <summary>
/// POST /v1/images/generations: samples from a diffusion UNet folder, in the shape of OpenAI's images API
/// (<c>data[].b64_json</c>: one PNG per image, at the model's sample size, pixels mapped as <see cref="ImageGrid"/> does).
/// Request and errors: <see cref="ImageParser"/>. Same limits as the other endpoints: body size (413), API key (401),
/// the model's turn and a generation slot with bounded queues (429), timeout (504), and a client that disconnects
/// stops its sampling.
/// </summary>
public static partial class OptimumServer
{
    private static async Task<IResult> GenerateImages(HttpContext ctx, ServerOptions o, ModelRegistry models, ServerMetrics metrics, [FromKeyedServices(ServiceKey)] ConcurrencyLimiter limiter)
    {
        var (req, refusal) = await ReadRequest(ctx, o, body => ImageParser.Parse(body, o, models));
        if (req is null) return refusal!;
        models.TryGetImageGenerator(req.Model, out var served);
        void Count(string outcome) => metrics.Images.Add(req.Count, new("model", req.Model), new("outcome", outcome));

        var (leases, busy) = await AcquireTurnAndSlot(ctx, o, served.Turn, limiter, req.Model, "generates", () => Count("cancelled"));
        if (leases is null) return busy!;
        using var _ = leases;

        using var timeout = new RequestDeadline(o.RequestTimeoutSeconds, ctx.RequestAborted);
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string[]? pngs = null;
        string outcome = "ok";
        try
        {
            pngs = await Task.Run(() =>
            {
                var images = served.Model.Generate(req.Options, cancel: timeout.Token);
                int per = images.Channels * images.Height * images.Width;
                return Enumerable.Range(0, images.Count)
                    .Select(i => Convert.ToBase64String(ImageGrid.EncodePng(images.Pixels.AsSpan(i * per, per), 1, images.Channels, images.Height, images.Width, padding: 0)))
                    .ToArray();
            });
        }
        catch (OperationCanceledException) when (timeout.Token.IsCancellationRequested)
        {
            outcome = ctx.RequestAborted.IsCancellationRequested ? "cancelled" : "timeout";
        }
        catch (ArgumentException e)
        {
            // The parser checks what the generator checks; should they ever differ, the request is still the client's fault.
            Count("error");
            return Problem(422, "Value out of range", e.Message);
        }
        if (pngs is not null && timeout.Expired) (pngs, outcome) = (null, "timeout");
        Count(outcome);
        if (ctx.RequestAborted.IsCancellationRequested) return Results.Empty;
        if (pngs is null) return Problem(504, "Timed out", $"The image generation took longer than {o.RequestTimeoutSeconds} s.");
        return Results.Ok(new
        {
            created,
            model = req.Model,
            scheduler = EnumNames.Name(req.Scheduler),
            steps = req.Steps,
            eta = req.Eta,
            guidance = req.Guidance,
            data = pngs.Select((b64, i) => new { b64_json = b64, index = i, label = req.Labels?[i], seed = req.Seed }),
        });
    }
}
