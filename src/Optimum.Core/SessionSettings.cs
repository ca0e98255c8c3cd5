using Microsoft.ML.OnnxRuntime;

namespace Optimum.Core;

/// <summary>How ONNX Runtime sessions are configured.</summary>
public sealed record SessionSettings
{
    public int IntraOpThreads { get; init; } = Environment.ProcessorCount;
    public int InterOpThreads { get; init; } = 1;
    public GraphOptimizationLevel Optimization { get; init; } = GraphOptimizationLevel.ORT_ENABLE_ALL;
    /// <summary>
    /// Where ORT's CPU tensors come from (<see cref="Arena"/>); null (the default): <see cref="Arena.Shared"/> for training
    /// and eval graphs (<see cref="CreateOptions"/>'s <c>training</c>), so evaluation reuses what training freed (GPT-2 124M
    /// at 4 × 256: train 5.15 -> 4.85 GB), and <see cref="Arena.PerSession"/> for inference. No arena made the README main
    /// job 3.5x slower (system time in page faults; issue #15).
    /// </summary>
    public Arena? MemoryArena { get; init; }
    /// <summary>
    /// ORT's memory pattern: after the first run each run allocates its planned intermediate tensors as one block sized for
    /// the whole plan. Null (the default): on for inference, off for training and eval graphs (<see cref="CreateOptions"/>'s
    /// <c>training</c>), where the block holds every activation the backward pass might need at once: without it GPT-2 124M
    /// at 4 × 256 peaks at 4.96 GB instead of 6.95 GB, at the same step time (issue #15).
    /// </summary>
    public bool? MemoryPattern { get; init; }
    /// <summary>
    /// The device sessions run on (CPU by default). CUDA appends ONNX Runtime's CUDA execution provider for that device,
    /// ahead of the CPU provider that takes the ops CUDA lacks; <see cref="CreateOptions"/> throws
    /// <see cref="DeviceUnavailableException"/> when it cannot load.
    /// </summary>
    public ExecutionDevice Device { get; init; }
    /// <summary>
    /// Whether CUDA's float32 MatMul, Gemm and Conv may use TF32 tensor cores (ORT's CUDA provider option <c>use_tf32</c>,
    /// which ORT turns on by default). Null (the default) keeps ORT's default; false is strict float32 (PyTorch's default for
    /// matmul), which <c>--precision fp32</c> asks for and <c>tf32</c> does not. No effect on the CPU, which has no TF32.
    /// </summary>
    public bool? Tf32 { get; init; }
    /// <summary>
    /// Edits of cached state between decoding steps (beam search's reorder, continuous batching's joins and leaves, T5's
    /// cross-attention rows) as small ONNX graphs run on <see cref="Device"/> with resident inputs and outputs
    /// (<see cref="DevicePlacement"/>), instead of span copies in host memory. Always so on CUDA, whose cache is not in host
    /// memory; on the CPU the span copies are the default (faster, no extra session) and this switch exists so that the
    /// graph path is tested where CI runs: both give the same tokens and logits, bit for bit.
    /// </summary>
    public bool CacheEditsAsGraphs { get; init; }
    /// <summary>True when cache edits run as graphs: on CUDA, or on the CPU with <see cref="CacheEditsAsGraphs"/>.</summary>
    public bool EditsCacheWithGraphs => Device.IsCuda || CacheEditsAsGraphs;
    /// <summary>When set, ORT's profiler writes a JSON trace with this path prefix.</summary>
    public string? ProfilePrefix { get; init; }

    /// <summary>
    /// New ORT session options from these settings, for a training or eval graph when <paramref name="training"/>; the caller
    /// disposes them. Throws <see cref="DeviceUnavailableException"/> when <see cref="Device"/>'s provider cannot load.
    /// </summary>
    public SessionOptions CreateOptions(bool training = false)
    {
        var o = new SessionOptions
        {
            IntraOpNumThreads = IntraOpThreads,
            InterOpNumThreads = InterOpThreads,
            GraphOptimizationLevel = Optimization,
            ExecutionMode = ExecutionMode.ORT_SEQUENTIAL,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
            EnableMemoryPattern = MemoryPattern ?? !training,
        };
        var arena = MemoryArena ?? (training ? Arena.Shared : Arena.PerSession);
        o.EnableCpuMemArena = arena != Arena.Off;
        if (arena == Arena.Shared)
        {
            SharedArena.Register();
            o.AddSessionConfigEntry("session.use_env_allocators", "1");
        }
        if (ProfilePrefix is not null)
        {
            // ORT reads the prefix when profiling is switched on: set it first, or traces land in the working folder.
            o.ProfileOutputPathPrefix = ProfilePrefix;
            o.EnableProfiling = true;
        }
        try { Device.AppendTo(o, Tf32); }
        catch
        {
            o.Dispose();
            throw;
        }
        return o;
    }
}

/// <summary>Where an ORT session's CPU tensors come from.</summary>
public enum Arena
{
    /// <summary>ORT's default: each session has its own arena, which keeps what a run frees for the next run and grows in power-of-two steps.</summary>
    PerSession,
    /// <summary>
    /// One arena for the process (<see cref="SharedArena"/>), growing by what is asked for: a training graph and its eval
    /// graph reuse the same memory. The default for training graphs.
    /// </summary>
    Shared,
    /// <summary>No arena: every tensor is a malloc and a free (far slower for graphs with many large intermediates).</summary>
    Off,
}

/// <summary>The process-wide CPU arena that <see cref="Arena.Shared"/> sessions allocate from, registered once with ORT's environment.</summary>
public static class SharedArena
{
    private static readonly Lock Gate = new();
    private static bool _registered;

    /// <summary>Registers the arena (once per process): no size limit, extended by exactly what a request needs.</summary>
    public static void Register()
    {
        lock (Gate)
        {
            if (_registered) return;
            // maxMemory 0: no limit; strategy 1: kSameAsRequested; initial chunk and dead bytes per chunk: ORT's defaults (-1).
            using var config = new OrtArenaCfg(0, 1, -1, -1);
            // The memory info must name the arena type: with OrtMemoryInfo.DefaultInstance (a device allocator) ORT registers a plain malloc allocator.
            using var info = new OrtMemoryInfo(OrtMemoryInfo.allocatorCPU, OrtAllocatorType.ArenaAllocator, 0, OrtMemType.Default);
            OrtEnv.Instance().CreateAndRegisterAllocator(info, config);
            _registered = true;
        }
    }
}
