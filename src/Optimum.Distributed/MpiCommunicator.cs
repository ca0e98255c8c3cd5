using System.Runtime.InteropServices;

namespace Optimum.Distributed;

/// <summary>
/// A thin P/Invoke binding to OpenMPI's <c>libmpi.so.40</c> (Debian: openmpi-bin libopenmpi-dev),
/// launched with <c>mpirun -np N ...</c> (several machines with a hostfile). OpenMPI's handles
/// MPI_COMM_WORLD, MPI_FLOAT, MPI_DOUBLE and MPI_SUM are the addresses of its exported globals.
/// Counts above <see cref="MaxCount"/> elements are split into several calls.
/// Initialises MPI on creation and finalises it on dispose (once per process).
/// </summary>
public sealed unsafe class MpiCommunicator : ICommunicator
{
    private const string Lib = "libmpi.so.40";
    private static readonly nint InPlace = 1;   // OpenMPI's MPI_IN_PLACE is (void*)1

    [DllImport(Lib)] private static extern int MPI_Initialized(out int flag);
    [DllImport(Lib)] private static extern int MPI_Init(nint argc, nint argv);
    [DllImport(Lib)] private static extern int MPI_Finalize();
    [DllImport(Lib)] private static extern int MPI_Comm_rank(nint comm, out int rank);
    [DllImport(Lib)] private static extern int MPI_Comm_size(nint comm, out int size);
    [DllImport(Lib)] private static extern int MPI_Allreduce(void* send, void* recv, int count, nint type, nint op, nint comm);
    [DllImport(Lib)] private static extern int MPI_Reduce_scatter_block(void* send, void* recv, int count, nint type, nint op, nint comm);
    [DllImport(Lib)] private static extern int MPI_Allgather(void* send, int sendCount, nint sendType, void* recv, int recvCount, nint recvType, nint comm);
    [DllImport(Lib)] private static extern int MPI_Bcast(void* buffer, int count, nint type, int root, nint comm);
    [DllImport(Lib)] private static extern int MPI_Barrier(nint comm);
    [DllImport(Lib)] private static extern int MPI_Abort(nint comm, int code);

    private readonly nint _world, _float, _double, _sum;
    private bool _disposed;

    /// <summary>Largest element count passed to one MPI call (MPI counts are ints); lowered in tests to exercise chunking.</summary>
    public int MaxCount
    {
        get => _maxCount;
        // 0 would never advance through a buffer (a hang), not split it.
        set => _maxCount = value >= 1 ? value : throw new ArgumentOutOfRangeException(nameof(MaxCount), value, "Elements per MPI call must be at least 1.");
    }
    private int _maxCount = int.MaxValue;

    /// <summary>True when this process was started by mpirun (OpenMPI, or a PMI-based launcher).</summary>
    public static bool LaunchedByMpirun =>
        Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is not null || Environment.GetEnvironmentVariable("PMI_SIZE") is not null;

    public MpiCommunicator()
    {
        nint lib;
        try { lib = NativeLibrary.Load(Lib); }
        catch (DllNotFoundException e)
        {
            throw new InvalidOperationException($"OpenMPI's {Lib} was not found; install it (Debian: apt-get install openmpi-bin libopenmpi-dev).", e);
        }
        _world = NativeLibrary.GetExport(lib, "ompi_mpi_comm_world");
        _float = NativeLibrary.GetExport(lib, "ompi_mpi_float");
        _double = NativeLibrary.GetExport(lib, "ompi_mpi_double");
        _sum = NativeLibrary.GetExport(lib, "ompi_mpi_op_sum");
        Check(MPI_Initialized(out var done), "MPI_Initialized");
        if (done == 0) Check(MPI_Init(0, 0), "MPI_Init");
        Check(MPI_Comm_rank(_world, out var rank), "MPI_Comm_rank");
        Check(MPI_Comm_size(_world, out var size), "MPI_Comm_size");
        Rank = rank;
        Size = size;
    }

    public int Rank { get; }
    public int Size { get; }
    public string Backend => "mpi";

    private void Check(int rc, string call)
    {
        if (rc != 0) throw new InvalidOperationException($"{call} failed with MPI error {rc} on rank {Rank}.");
    }

    public void AllReduceSum(Span<float> data)
    {
        fixed (float* p = data)
            for (long at = 0; at < data.Length; at += MaxCount)
            {
                int n = (int)Math.Min(MaxCount, data.Length - at);
                Check(MPI_Allreduce((void*)InPlace, p + at, n, _float, _sum, _world), "MPI_Allreduce");
            }
    }

    public double AllReduceSum(double value)
    {
        double r = 0;
        Check(MPI_Allreduce(&value, &r, 1, _double, _sum, _world), "MPI_Allreduce");
        return r;
    }

    public void ReduceScatterSum(ReadOnlySpan<float> send, Span<float> recv)
    {
        if (send.Length != (long)recv.Length * Size) throw new ArgumentException($"ReduceScatterSum: send has {send.Length} floats, expected {Size} x {recv.Length}.");
        fixed (float* s = send)
        fixed (float* r = recv)
        {
            if (recv.Length <= MaxCount)
            {
                Check(MPI_Reduce_scatter_block(s, r, recv.Length, _float, _sum, _world), "MPI_Reduce_scatter_block");
                return;
            }
            // Chunk j of every block: gather the pieces contiguously, reduce-scatter them, keep ours.
            var piece = new float[(long)MaxCount * Size];
            fixed (float* tmp = piece)
                for (long at = 0; at < recv.Length; at += MaxCount)
                {
                    int n = (int)Math.Min(MaxCount, recv.Length - at);
                    for (int b = 0; b < Size; b++) new ReadOnlySpan<float>(s + (long)b * recv.Length + at, n).CopyTo(new Span<float>(tmp + (long)b * n, n));
                    Check(MPI_Reduce_scatter_block(tmp, r + at, n, _float, _sum, _world), "MPI_Reduce_scatter_block");
                }
        }
    }

    public void AllGather(Span<float> data)
    {
        if (data.Length % Size != 0) throw new ArgumentException($"AllGather: {data.Length} floats do not split into {Size} blocks.");
        long block = data.Length / Size;
        fixed (float* d = data)
        {
            if (block <= MaxCount)
            {
                Check(MPI_Allgather((void*)InPlace, 0, _float, d, (int)block, _float, _world), "MPI_Allgather");
                return;
            }
            var piece = new float[(long)MaxCount * Size];
            fixed (float* tmp = piece)
                for (long at = 0; at < block; at += MaxCount)
                {
                    int n = (int)Math.Min(MaxCount, block - at);
                    Check(MPI_Allgather(d + Rank * block + at, n, _float, tmp, n, _float, _world), "MPI_Allgather");
                    for (int b = 0; b < Size; b++) new Span<float>(tmp + (long)b * n, n).CopyTo(new Span<float>(d + b * block + at, n));
                }
        }
    }

    public void Broadcast(Span<float> data, int root)
    {
        fixed (float* p = data)
            for (long at = 0; at < data.Length; at += MaxCount)
                Check(MPI_Bcast(p + at, (int)Math.Min(MaxCount, data.Length - at), _float, root, _world), "MPI_Bcast");
    }

    public void Barrier() => Check(MPI_Barrier(_world), "MPI_Barrier");

    public void Abort(string message, int code = 1)
    {
        Console.Error.WriteLine($"rank {Rank} of {Size}: {message}");
        Console.Error.Flush();
        MPI_Abort(_world, code);
        Environment.Exit(code);
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        MPI_Finalize();
    }
}
