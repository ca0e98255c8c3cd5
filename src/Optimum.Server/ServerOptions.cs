namespace Optimum.Server;

/// <summary>Configuration section "Optimum" of the service.</summary>
public sealed class ServerOptions
{
    /// <summary>Model folders to serve; each is named after its folder, or "name=path".</summary>
    public List<string> Models { get; set; } = [];
    /// <summary>When set, /v1/* requests need "Authorization: Bearer &lt;key&gt;".</summary>
    public string? ApiKey { get; set; }
    /// <summary>Completions generated at once.</summary>
    public int MaxConcurrent { get; set; } = 2;
    /// <summary>Completions waiting for a slot; more get 429.</summary>
    public int QueueLimit { get; set; } = 16;
    /// <summary>A completion taking longer is stopped (504, or an error event when streaming).</summary>
    public double RequestTimeoutSeconds { get; set; } = 60;
    /// <summary>Larger request bodies get 413.</summary>
    public int MaxBodyBytes { get; set; } = 64 * 1024;
    /// <summary>Upper bound of max_tokens.</summary>
    public int MaxTokens { get; set; } = 1024;
    /// <summary>ONNX Runtime intra-op threads per model.</summary>
    public int Threads { get; set; } = Environment.ProcessorCount;

    public void Validate()
    {
        if (Models.Count == 0) throw new InvalidOperationException("No model to serve: set Optimum:Models (serve --model <folder>).");
        if (MaxConcurrent < 1 || QueueLimit < 0 || RequestTimeoutSeconds <= 0 || MaxBodyBytes < 64 || MaxTokens < 1)
            throw new InvalidOperationException($"Invalid server limits: concurrency {MaxConcurrent}, queue {QueueLimit}, timeout {RequestTimeoutSeconds}s, body {MaxBodyBytes} B, max tokens {MaxTokens}.");
    }
}
