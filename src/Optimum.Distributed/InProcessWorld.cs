namespace Optimum.Distributed;

/// <summary>
/// N ranks as threads of one process, for tests and for single-machine runs without MPI. Each rank
/// gets a communicator from <see cref="Communicator"/>; collectives exchange pointers to the ranks'
/// buffers between two barriers and sum in rank order, so every rank gets identical results. When a
/// rank fails, <see cref="Run"/> cancels the others and throws naming the rank.
/// </summary>
public sealed unsafe class InProcessWorld
{
    private readonly Barrier _barrier;
    private readonly nint[] _slots;
    private readonly double[] _scalars;
    private readonly CancellationTokenSource _abort = new();

    public InProcessWorld(int size)
    {
        if (size < 1) throw new ArgumentOutOfRangeException(nameof(size), size, "A world needs at least one rank.");
        Size = size;
        _barrier = new Barrier(size);
        _slots = new nint[size];
        _scalars = new double[size];
    }

    public int Size { get; }

    public ICommunicator Communicator(int rank) => rank >= 0 && rank < Size ? new RankCommunicator(this, rank) : throw new ArgumentOutOfRangeException(nameof(rank));

    /// <summary>
    /// Runs <paramref name="body"/> on <paramref name="ranks"/> in-process ranks and returns rank 0's result; one rank
    /// runs on the calling thread without a communicator. A failing rank's exception is rethrown with its message.
    /// </summary>
    public static T RunRanks<T>(int ranks, Func<ICommunicator?, T> body)
    {
        if (ranks <= 1) return body(null);
        try { return new InProcessWorld(ranks).Run(c => body(c))[0]; }
        catch (AggregateException e) { throw new InvalidOperationException(e.Message, e.InnerException); }
    }

    /// <summary>Runs <paramref name="body"/> on every rank (one thread each) and returns their results in rank order.</summary>
    public T[] Run<T>(Func<ICommunicator, T> body)
    {
        var results = new T[Size];
        var errors = new Exception?[Size];
        var threads = Enumerable.Range(0, Size).Select(r => new Thread(() =>
        {
            try { results[r] = body(Communicator(r)); }
            catch (Exception e)
            {
                errors[r] ??= e;
                _abort.Cancel();
            }
        }, 64 << 20) { Name = $"rank {r}" }).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        var first = Array.FindIndex(errors, e => e is not null and not OperationCanceledException);
        if (first < 0) first = Array.FindIndex(errors, e => e is not null);
        if (first >= 0) throw new AggregateException($"Rank {first} of {Size} failed: {errors[first]!.Message}", errors[first]!);
        return results;
    }

    private void Sync()
    {
        try { _barrier.SignalAndWait(_abort.Token); }
        catch (OperationCanceledException) { throw new OperationCanceledException("Another rank failed."); }
    }

    private sealed class RankCommunicator(InProcessWorld w, int rank) : ICommunicator
    {
        public int Rank => rank;
        public int Size => w.Size;
        public string Backend => "in-process";

        public void AllReduceSum(Span<float> data)
        {
            var sum = new float[data.Length];
            fixed (float* p = data)
            {
                w._slots[rank] = (nint)p;
                w.Sync();
                for (int r = 0; r < w.Size; r++)
                {
                    var src = new ReadOnlySpan<float>((float*)w._slots[r], data.Length);
                    for (int i = 0; i < sum.Length; i++) sum[i] += src[i];
                }
                w.Sync();
            }
            sum.CopyTo(data);
        }

        public double AllReduceSum(double value)
        {
            w._scalars[rank] = value;
            w.Sync();
            double s = 0;
            for (int r = 0; r < w.Size; r++) s += w._scalars[r];
            w.Sync();
            return s;
        }

        public void ReduceScatterSum(ReadOnlySpan<float> send, Span<float> recv)
        {
            if (send.Length != (long)recv.Length * w.Size) throw new ArgumentException($"ReduceScatterSum: send has {send.Length} floats, expected {w.Size} x {recv.Length}.");
            fixed (float* p = send)
            {
                w._slots[rank] = (nint)p;
                w.Sync();
                recv.Clear();
                for (int r = 0; r < w.Size; r++)
                {
                    var src = new ReadOnlySpan<float>((float*)w._slots[r] + (long)rank * recv.Length, recv.Length);
                    for (int i = 0; i < recv.Length; i++) recv[i] += src[i];
                }
                w.Sync();
            }
        }

        public void AllGather(Span<float> data)
        {
            long block = data.Length / w.Size;
            fixed (float* p = data)
            {
                w._slots[rank] = (nint)p;
                w.Sync();
                for (int r = 0; r < w.Size; r++)
                    if (r != rank) new ReadOnlySpan<float>((float*)w._slots[r] + r * block, (int)block).CopyTo(data.Slice((int)(r * block), (int)block));
                w.Sync();
            }
        }

        public void Broadcast(Span<float> data, int root)
        {
            fixed (float* p = data)
            {
                w._slots[rank] = (nint)p;
                w.Sync();
                if (rank != root) new ReadOnlySpan<float>((float*)w._slots[root], data.Length).CopyTo(data);
                w.Sync();
            }
        }

        public void Barrier() => w.Sync();

        public void Abort(string message, int code = 1) => throw new InvalidOperationException($"rank {rank} of {w.Size}: {message}");

        public void Dispose() { }
    }
}
