using Microsoft.ML.OnnxRuntime;

namespace Optimum.Core;

/// <summary>How ONNX Runtime sessions are configured.</summary>
public sealed record SessionSettings
{
    public int IntraOpThreads { get; init; } = Environment.ProcessorCount;
    public int InterOpThreads { get; init; } = 1;
    public GraphOptimizationLevel Optimization { get; init; } = GraphOptimizationLevel.ORT_ENABLE_ALL;
    /// <summary>
    /// ORT's CPU memory arena: memory a run frees stays reserved for the next run (faster allocation), and the arena
    /// grows in power-of-two steps, so it holds more than the largest run's peak for the session's life. Null (the
    /// default): on for inference, off for training graphs (<see cref="CreateOptions"/>'s <c>training</c>), whose runs
    /// are few and large: GPT-2 124M at 4 × 256 peaks 1.2 GB lower without it (issue #15).
    /// </summary>
    public bool? MemoryArena { get; init; }
    /// <summary>ORT's memory pattern: after the first run each run allocates its planned intermediate tensors as one block.</summary>
    public bool MemoryPattern { get; init; } = true;
    /// <summary>When set, ORT's profiler writes a JSON trace with this path prefix.</summary>
    public string? ProfilePrefix { get; init; }

    /// <summary>New ORT session options from these settings, for a training or eval graph when <paramref name="training"/>; the caller disposes them.</summary>
    public SessionOptions CreateOptions(bool training = false)
    {
        var o = new SessionOptions
        {
            IntraOpNumThreads = IntraOpThreads,
            InterOpNumThreads = InterOpThreads,
            GraphOptimizationLevel = Optimization,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
            EnableCpuMemArena = MemoryArena ?? !training,
            EnableMemoryPattern = MemoryPattern,
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
