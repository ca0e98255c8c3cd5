using System.Globalization;
using Optimum.Distributed;

namespace Optimum.Training;

/// <summary>
/// Checks that every rank sees the same folder: a checkpoint is one folder written by all ranks (each its
/// optimizer shard, rank 0 the rest) and read by all of them on resume, so ranks on several machines need it on
/// storage they share, mounted at the same path. Without that, a run would fail at its first save with an error
/// about a missing file, after all the training before it; this check fails at the start instead, on every rank,
/// with one message naming the folder and the ranks that cannot see it.
/// </summary>
public static class SharedStorage
{
    /// <summary>How long a rank waits for another rank's file to appear (for file systems with delayed visibility).</summary>
    public static readonly TimeSpan DefaultWait = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Every rank writes a small probe file into <paramref name="dir"/> (rank 0 creates it), then checks that it
    /// sees every other rank's probe, waiting up to <paramref name="wait"/>; the ranks agree on the outcome with
    /// one all-reduce, so either all return or all throw <see cref="IOException"/> (none waits on another).
    /// A collective: every rank must call it. Nothing is left in the folder.
    /// </summary>
    public static void Verify(string dir, ICommunicator comm, TimeSpan? wait = null)
    {
        int n = comm.Size, me = comm.Rank;
        if (n == 1) return;
        if (me == 0) Directory.CreateDirectory(dir);
        // A name no earlier run used, so that a leftover in a folder of the same path on another machine cannot pass.
        long token = (long)comm.AllReduceSum(me == 0 ? Random.Shared.NextInt64(1L << 52) : 0);   // also a barrier after the mkdir
        string Probe(int r) => Path.Combine(dir, $".shared-check-{token:x}-rank{r:D3}");
        string expected = token.ToString(CultureInfo.InvariantCulture);

        string? writeError = null;
        try { File.WriteAllText(Probe(me), expected); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { writeError = e.Message; }
        comm.Barrier();

        var missing = Enumerable.Range(0, n).Where(r => r != me).ToList();
        var deadline = DateTime.UtcNow + (wait ?? DefaultWait);
        while (true)
        {
            missing.RemoveAll(r => Sees(Probe(r), expected));
            if (missing.Count == 0 || DateTime.UtcNow >= deadline) break;
            Thread.Sleep(100);
        }
        // [r]: rank r could not write its probe; [n + r]: how many other ranks' probes rank r does not see.
        var flags = new float[2 * n];
        flags[me] = writeError is null ? 0 : 1;
        flags[n + me] = missing.Count;
        comm.AllReduceSum(flags);
        if (writeError is null) TryDelete(Probe(me));
        if (flags.All(f => f == 0)) return;

        // The causes (ranks that cannot write) first, then what each rank misses; this rank adds its own details.
        var problems = new List<string>();
        for (int r = 0; r < n; r++)
            if (flags[r] != 0) problems.Add($"rank {r} cannot write there" + (r == me ? $" ({writeError})" : ""));
        for (int r = 0; r < n; r++)
            if (flags[n + r] != 0) problems.Add($"rank {r} does not see the files of {flags[n + r]:0} other rank(s)" + (r == me ? $" ({string.Join(", ", missing.Select(m => $"rank {m}'s"))})" : ""));
        throw new IOException(
            $"The checkpoint folder '{dir}' is not shared by all {n} ranks: {string.Join("; ", problems)}. Every rank writes its part of a checkpoint " +
            "there and reads all of it on resume: runs across machines need the output folder (--out) on storage every machine mounts at the same path (NFS or similar).");
    }

    private static bool Sees(string path, string expected)
    {
        try { return File.Exists(path) && File.ReadAllText(path) == expected; }
        catch (IOException) { return false; }
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); }
        catch (IOException) { }
    }
}
