using Optimum.Distributed;

namespace Optimum.Cli;

/// <summary>
/// <c>mpirun -np N optimum-net mpi-check</c>: runs every collective (also split into small chunks, as
/// counts above 2^31 - 1 are) and checks the results on every rank; prints one line per rank.
/// </summary>
public static class MpiCheck
{
    public static int Run(ICommunicator c, int chunk)
    {
        if (c is MpiCommunicator mpi) mpi.MaxCount = chunk;
        int n = c.Size, r = c.Rank, block = 1000;
        var failures = new List<string>();
        void Expect(bool ok, string what) { if (!ok) failures.Add(what); }

        var x = Enumerable.Range(0, block * n).Select(i => (float)(i % 97) * (r + 1)).ToArray();
        c.AllReduceSum(x);
        float factor = n * (n + 1) / 2f;
        Expect(x.Select((v, i) => v == (i % 97) * factor).All(b => b), "AllReduceSum");

        var send = Enumerable.Range(0, block * n).Select(i => (float)(i + r)).ToArray();
        var recv = new float[block];
        c.ReduceScatterSum(send, recv);
        Expect(recv.Select((v, i) => v == n * (r * block + i) + n * (n - 1) / 2f).All(b => b), "ReduceScatterSum");

        var all = new float[block * n];
        for (int i = 0; i < block; i++) all[r * block + i] = r * 10_000 + i;
        c.AllGather(all);
        Expect(all.Select((v, i) => v == (i / block) * 10_000 + i % block).All(b => b), "AllGather");

        var b = new float[block];
        if (r == n - 1) for (int i = 0; i < block; i++) b[i] = -i;
        c.Broadcast(b, n - 1);
        Expect(b.Select((v, i) => v == -i).All(q => q), "Broadcast");
        Expect(c.AllReduceSum(r + 0.5) == n * n / 2.0, "AllReduceSum(double)");
        c.Barrier();
        Console.WriteLine(failures.Count == 0
            ? $"rank {r} of {n} ({c.Backend}, chunks of {chunk}): all collectives correct"
            : $"rank {r} of {n}: FAILED {string.Join(", ", failures)}");
        return failures.Count == 0 ? 0 : 1;
    }
}
