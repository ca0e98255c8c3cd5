using Microsoft.ML.OnnxRuntime;

namespace Optimum.Core;

/// <summary>How ONNX Runtime sessions are configured.</summary>
public sealed record SessionSettings
{
    public int IntraOpThreads { get; init; } = Environment.ProcessorCount;
    public int InterOpThreads { get; init; } = 1;
    public GraphOptimizationLevel Optimization { get; init; } = GraphOptimizationLevel.ORT_ENABLE_ALL;
    /// <summary>When set, ORT's profiler writes a JSON trace with this path prefix.</summary>
    public string? ProfilePrefix { get; init; }

    /// <summary>New ORT session options from these settings; the caller disposes them.</summary>
    public SessionOptions CreateOptions()
    {
        var o = new SessionOptions
        {
            IntraOpNumThreads = IntraOpThreads,
            InterOpNumThreads = InterOpThreads,
            GraphOptimizationLevel = Optimization,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        if (ProfilePrefix is not null)
        {
            // ORT reads the prefix when profiling is switched on: set it first, or traces land in the working folder.
            o.ProfileOutputPathPrefix = ProfilePrefix;
            o.EnableProfiling = true;
        }
        return o;
    }
}
