namespace Optimum.Core;

/// <summary>Deterministic seed derivation (never string/HashCode hashing, which .NET randomises per process).</summary>
public static class Seeds
{
    /// <summary>SplitMix64 of the combined values, reduced to [0, 2^31 - 1).</summary>
    public static int Derive(long a, long b = 0, long c = 0, long d = 0)
    {
        ulong x = (ulong)a;
        foreach (var v in new[] { b, c, d }) x = Mix(x ^ Mix((ulong)v + 0x9E3779B97F4A7C15UL));
        return (int)(Mix(x) % 2147483647UL);
    }

    private static ulong Mix(ulong z)
    {
        z += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
