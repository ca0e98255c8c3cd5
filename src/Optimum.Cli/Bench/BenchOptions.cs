using Optimum.Core;
using Optimum.Models;
using Optimum.Training;

namespace Optimum.Cli;

/// <summary>
/// How a bench runs: ORT intra-op threads, warm-up steps (run, not timed) then measured steps, JSON
/// lines instead of tables, ORT's profile by op type. Each bench says what its step is.
/// </summary>
public sealed record BenchRun(int Threads = 2, int Warmup = 2, int Steps = 5, bool Json = false, bool Profile = false)
{
    /// <summary>Everything a bench writes (model folders, checkpoints, profiles) goes under this folder of the working directory.</summary>
    public string WorkDir { get; init; } = Path.Combine("out", "bench");

    /// <summary>ORT's CPU memory arena (see <see cref="SessionSettings.MemoryArena"/>); null: the session kind's default.</summary>
    public Arena? MemoryArena { get; init; }
    /// <summary>ORT's memory pattern (see <see cref="SessionSettings.MemoryPattern"/>); null: the session kind's default.</summary>
    public bool? MemoryPattern { get; init; }
    /// <summary>Where the bench's sessions run (--device).</summary>
    public ExecutionDevice Device { get; init; }

    /// <summary>
    /// Session settings with the bench's threads; with --profile and a <paramref name="profileName"/>, ORT traces the
    /// session (to WorkDir/<paramref name="profileName"/>_*.json once the prefix takes effect; see <see cref="OrtProfile"/>).
    /// </summary>
    public SessionSettings Session(string? profileName = null) =>
        new() { IntraOpThreads = Threads, MemoryArena = MemoryArena, MemoryPattern = MemoryPattern, Device = Device, ProfilePrefix = Profile && profileName is not null ? Path.Combine(WorkDir, profileName) : null };
}

/// <summary>The benches' GPT-2: by default 6 layers, 384 wide, 6 heads, sequences of 256, GPT-2's vocabulary, batch 8.</summary>
public sealed record Gpt2Size(int Layers = 6, int Width = 384, int Heads = 6, int Seq = 256, int Vocab = 50257, int Batch = 8)
{
    /// <summary>Its config with <paramref name="positions"/> positions and no dropout.</summary>
    public Gpt2Config Config(int positions) => new()
    {
        VocabSize = Vocab, NPositions = positions, NEmbd = Width, NLayer = Layers, NHead = Heads, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0,
    };

    /// <summary>The model folder bench train and bench zero share.</summary>
    public string TrainFolder(BenchRun run) => Path.Combine(run.WorkDir, $"gpt2-{Layers}x{Width}-v{Vocab}-s{Seq}");
}
