namespace Optimum.Server;

/// <summary>Configuration section "Optimum" of the service.</summary>
public sealed class ServerOptions
{
    /// <summary>Model folders to serve; each is named after its folder, or "name=path".</summary>
    public List<string> Models { get; set; } = [];
    /// <summary>When set, /v1/* requests need "Authorization: Bearer &lt;key&gt;".</summary>
    public string? ApiKey { get; set; }
    /// <summary>Completions and forecasts computed at once.</summary>
    public int MaxConcurrent { get; set; } = 2;
    /// <summary>Requests waiting for a slot (and forecasts waiting for their model); more get 429.</summary>
    public int QueueLimit { get; set; } = 16;
    /// <summary>A completion or forecast taking longer is stopped (504, or an error event when streaming).</summary>
    public double RequestTimeoutSeconds { get; set; } = 60;
    /// <summary>Larger request bodies get 413.</summary>
    public int MaxBodyBytes { get; set; } = 64 * 1024;
    /// <summary>Upper bound of max_tokens.</summary>
    public int MaxTokens { get; set; } = 1024;
    /// <summary>Upper bound of the number of series in one /v1/forecast request.</summary>
    public int MaxForecastSeries { get; set; } = 64;
    /// <summary>Upper bound of "samples" (sample paths per series) in /v1/forecast.</summary>
    public int MaxForecastSamples { get; set; } = 1000;
    /// <summary>ONNX Runtime intra-op threads per model.</summary>
    public int Threads { get; set; } = Environment.ProcessorCount;

    public void Validate()
    {
        if (Models.Count == 0) throw new InvalidOperationException("No model to serve: set Optimum:Models (serve --model <folder>).");
        if (MaxConcurrent < 1 || QueueLimit < 0 || RequestTimeoutSeconds <= 0 || MaxBodyBytes < 64 || MaxTokens < 1 || MaxForecastSeries < 1 || MaxForecastSamples < 1)
            throw new InvalidOperationException($"Invalid server limits: concurrency {MaxConcurrent}, queue {QueueLimit}, timeout {RequestTimeoutSeconds}s, body {MaxBodyBytes} B, " +
                $"max tokens {MaxTokens}, max forecast series {MaxForecastSeries}, max forecast samples {MaxForecastSamples} (expected queue >= 0, timeout > 0, body >= 64, the others >= 1).");
    }
}
