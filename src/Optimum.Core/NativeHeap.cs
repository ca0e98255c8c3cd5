using System.Runtime.InteropServices;

namespace Optimum.Core;

/// <summary>
/// glibc malloc settings for processes that train. Without ORT's arena (see <see cref="SessionSettings.MemoryArena"/>)
/// every activation and gradient of a step is a malloc; glibc's default serves blocks up to a threshold it raises as blocks
/// are freed (to 32 MB) from per-thread heaps that keep what is freed, so a training process held about 1 GB more than it
/// used (GPT-2 124M at 4 × 256: 5,904 MB peak, 4,847 MB with these settings; issue #15). Large blocks are mapped and
/// unmapped directly instead, and at most two heaps are kept. Process-wide and applied once; a no-op off glibc.
/// </summary>
public static class NativeHeap
{
    private const int MmapThreshold = -3, ArenaMax = -8;       // M_MMAP_THRESHOLD, M_ARENA_MAX of malloc.h
    private static int _applied;

    [DllImport("libc", EntryPoint = "mallopt")]
    private static extern int MallOpt(int param, int value);

    /// <summary>Blocks of 256 KiB and more are mapped (and returned on free); at most two malloc heaps.</summary>
    public static void ForTraining()
    {
        if (!OperatingSystem.IsLinux() || Interlocked.Exchange(ref _applied, 1) == 1) return;
        try
        {
            MallOpt(MmapThreshold, 256 * 1024);
            MallOpt(ArenaMax, 2);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { }          // musl and others: their malloc as it is
    }
}
