using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;

namespace Optimum.Cli;

/// <summary>
/// The machine's read bandwidth as the bench's threads see it: a vectorised sum over a native buffer much larger than
/// the last-level cache, split between the threads, best of a few passes. Single-stream generation reads every weight
/// once per token, so this bounds its tokens/s (see <see cref="BenchGenerate"/>).
/// </summary>
public static class MemoryBandwidth
{
    private const long Bytes = 512L << 20;
    private const int Passes = 5;

    /// <summary>Bytes read per second (best pass) with <paramref name="threads"/> threads.</summary>
    public static unsafe double Measure(int threads)
    {
        long count = Bytes / sizeof(float);
        var p = (float*)NativeMemory.AlignedAlloc((nuint)Bytes, 64);
        try
        {
            new Span<float>(p, (int)count).Fill(1);                                                 // touch every page first
            double best = 0;
            var partial = new float[threads];
            for (int pass = 0; pass < Passes; pass++)
            {
                var clock = Stopwatch.StartNew();
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
                {
                    long from = count * t / threads / Vector<float>.Count * Vector<float>.Count, to = count * (t + 1) / threads / Vector<float>.Count * Vector<float>.Count;
                    Vector<float> a = default, b = default, c = default, d = default;
                    int w = Vector<float>.Count;
                    long i = from;
                    for (; i + 4 * w <= to; i += 4 * w)
                    {
                        a += *(Vector<float>*)(p + i);
                        b += *(Vector<float>*)(p + i + w);
                        c += *(Vector<float>*)(p + i + 2 * w);
                        d += *(Vector<float>*)(p + i + 3 * w);
                    }
                    partial[t] = Vector.Sum(a + b + c + d);                                            // kept, so the loads are not dropped
                });
                best = Math.Max(best, Bytes / clock.Elapsed.TotalSeconds);
            }
            if (partial.Sum() < 0) throw new InvalidOperationException("impossible sum");
            return best;
        }
        finally { NativeMemory.AlignedFree(p); }
    }
}
