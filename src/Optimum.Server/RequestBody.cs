using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Core.Features;
using Microsoft.Net.Http.Headers;

namespace Optimum.Server;

/// <summary>
/// Reading a request within the service's limits. Every endpoint reads the whole body (and parses it) before it asks
/// for a model's turn or a generation slot, so a client that trickles its body holds a connection, never a slot; the
/// body has <see cref="ServerOptions.RequestBodyTimeoutSeconds"/> to arrive and must keep
/// <see cref="ServerOptions.MinRequestBodyBytesPerSecond"/>. The connection limits (header timeout, keep-alive, header
/// size, connections) are the server's: <see cref="ApplyLimits"/>, which the service on its own applies.
/// </summary>
public static partial class OptimumServer
{
    /// <summary>
    /// Sets Kestrel's connection-wide limits from <paramref name="o"/>: the time for a request's headers, the keep-alive
    /// time, the size of the headers, the number of connections, the body size and its minimum rate. <see cref="Build(string[], Action{WebApplicationBuilder}?)"/>
    /// applies them; an app that maps the endpoints into its own Kestrel host applies them with
    /// <c>builder.Services.AddOptions&lt;KestrelServerOptions&gt;().Configure&lt;ServerOptions&gt;((k, o) =&gt; OptimumServer.ApplyLimits(k.Limits, o))</c>
    /// (the body's limits are also set per request on the service's routes, whatever the host's are).
    /// </summary>
    public static void ApplyLimits(KestrelServerLimits limits, ServerOptions o)
    {
        limits.RequestHeadersTimeout = TimeSpan.FromSeconds(o.RequestHeadersTimeoutSeconds);
        limits.KeepAliveTimeout = TimeSpan.FromSeconds(o.KeepAliveTimeoutSeconds);
        limits.MaxRequestHeadersTotalSize = o.MaxRequestHeadersBytes;
        limits.MaxConcurrentConnections = o.MaxConnections > 0 ? o.MaxConnections : null;
        limits.MaxConcurrentUpgradedConnections = o.MaxConnections > 0 ? o.MaxConnections : null;
        limits.MaxRequestBodySize = o.MaxBodyBytes;
        limits.MinRequestBodyDataRate = MinBodyRate(o);
    }

    /// <summary>The minimum body rate, with Kestrel's grace period of 5 s (null: none).</summary>
    private static MinDataRate? MinBodyRate(ServerOptions o) =>
        o.MinRequestBodyBytesPerSecond > 0 ? new MinDataRate(o.MinRequestBodyBytesPerSecond, TimeSpan.FromSeconds(5)) : null;

    /// <summary>
    /// The request body, or the problem to answer: 415 for a Content-Type other than JSON (none at all is taken as JSON),
    /// 413 by Content-Length first, then while reading (chunked bodies have no length), 408 when the body takes longer
    /// than <see cref="ServerOptions.RequestBodyTimeoutSeconds"/> (or, from Kestrel, arrives slower than its minimum rate).
    /// A refusal before the whole body was read closes the connection ("Connection: close"): a client reusing it would
    /// otherwise find it closed under its next request, when Kestrel cannot read the rest (past the size limit). Kestrel
    /// still reads what comes of the rest for up to 5 s before it closes (aborting sooner would lose the answer).
    /// </summary>
    private static async Task<(ReadOnlyMemory<byte> Body, IResult? Refusal)> ReadBody(HttpContext ctx, ServerOptions o)
    {
        IResult Close(int status, string title, string detail)
        {
            ctx.Response.Headers.Connection = "close";
            return Problem(status, title, detail);
        }
        if (ctx.Request.ContentType is { } type && !IsJson(type))
            return (default, Close(415, "Unsupported media type", $"The Content-Type is '{RequestJson.Clip(type)}'; send application/json (UTF-8)."));
        // Only this request's limits: the server-wide ones are the host's (ApplyLimits).
        if (ctx.Features.Get<IHttpMaxRequestBodySizeFeature>() is { IsReadOnly: false } limit) limit.MaxRequestBodySize = o.MaxBodyBytes;
        // HTTP/2 and HTTP/3 streams refuse a per-request rate (NotSupportedException): the server-wide limit covers them.
        if ((HttpProtocol.IsHttp11(ctx.Request.Protocol) || HttpProtocol.IsHttp10(ctx.Request.Protocol))
            && ctx.Features.Get<IHttpMinRequestBodyDataRateFeature>() is { } rate) rate.MinDataRate = MinBodyRate(o);
        if (ctx.Request.ContentLength > o.MaxBodyBytes) return (default, Close(413, "Payload too large", $"The body has {ctx.Request.ContentLength} bytes; the limit is {o.MaxBodyBytes}."));
        // At the deadline the pending read is cancelled as the pipe allows (CancelPendingRead), which leaves the reader
        // usable; cancelling through a token would leave it "reading" and Kestrel could not finish the request cleanly.
        var reader = ctx.Request.BodyReader;
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(o.RequestBodyTimeoutSeconds));
        using var _ = deadline.Token.Register(reader.CancelPendingRead);
        var body = new MemoryStream();
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync(ctx.RequestAborted);
                foreach (var segment in result.Buffer) body.Write(segment.Span);
                reader.AdvanceTo(result.Buffer.End);
                if (body.Length > o.MaxBodyBytes) return (default, Close(413, "Payload too large", $"The body exceeds the limit of {o.MaxBodyBytes} bytes."));
                if (result.IsCompleted) break;
                if (result.IsCanceled)
                    return (default, Close(408, "Request timeout", $"The body did not arrive within {o.RequestBodyTimeoutSeconds} s ({body.Length} bytes came)."));
            }
        }
        catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (e.StatusCode == 413)
        {
            return (default, Close(413, "Payload too large", $"The body exceeds the limit of {o.MaxBodyBytes} bytes."));
        }
        return (body.GetBuffer().AsMemory(0, (int)body.Length), null);
    }

    /// <summary>application/json in any case, with no charset or UTF-8's (JSON is UTF-8, RFC 8259 §8.1); other parameters are allowed.</summary>
    private static bool IsJson(string contentType) =>
        MediaTypeHeaderValue.TryParse(contentType, out var media)
        && media.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase)
        && (!media.Charset.HasValue || HeaderUtilities.RemoveQuotes(media.Charset).Equals("utf-8", StringComparison.OrdinalIgnoreCase));

    private delegate T RequestParser<T>(ReadOnlySpan<byte> body);

    /// <summary>The parsed request, or the problem to answer: 408, 413 or 415 for the body, the parser's 4xx for its content.</summary>
    private static async Task<(T? Request, IResult? Refusal)> ReadRequest<T>(HttpContext ctx, ServerOptions o, RequestParser<T> parse) where T : class
    {
        var (body, refusal) = await ReadBody(ctx, o);
        if (refusal is not null) return (null, refusal);
        try { return (parse(body.Span), null); }
        catch (RequestError e) { return (null, Problem(e.Status, e.Title, e.Message)); }
    }
}
