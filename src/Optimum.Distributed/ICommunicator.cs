namespace Optimum.Distributed;

/// <summary>
/// Collectives over float spans of the flat buffers, for data-parallel (ZeRO-1) training.
/// Every rank must call the same collectives in the same order with the same sizes.
/// </summary>
public interface ICommunicator : IDisposable
{
    int Rank { get; }
    int Size { get; }
    /// <summary>A name for messages ("mpi", "in-process").</summary>
    string Backend { get; }

    /// <summary>Element-wise sum over ranks, in place; every rank gets the result.</summary>
    void AllReduceSum(Span<float> data);
    /// <summary>Sum of one double over ranks.</summary>
    double AllReduceSum(double value);
    /// <summary>
    /// Sums <paramref name="send"/> (Size blocks of recv.Length) over ranks and gives rank r block r in <paramref name="recv"/>.
    /// </summary>
    void ReduceScatterSum(ReadOnlySpan<float> send, Span<float> recv);
    /// <summary>
    /// In place: block r of <paramref name="data"/> (Size blocks) comes from rank r; on entry each rank's own block holds its data.
    /// </summary>
    void AllGather(Span<float> data);
    /// <summary>Copies <paramref name="root"/>'s data to every rank.</summary>
    void Broadcast(Span<float> data, int root);
    void Barrier();
    /// <summary>Stops the whole job with a non-zero exit, after printing <paramref name="message"/> (naming this rank).</summary>
    void Abort(string message, int code = 1);
}

/// <summary>The trivial communicator of a single process.</summary>
public sealed class SingleProcess : ICommunicator
{
    public int Rank => 0;
    public int Size => 1;
    public string Backend => "single";
    public void AllReduceSum(Span<float> data) { }
    public double AllReduceSum(double value) => value;
    public void ReduceScatterSum(ReadOnlySpan<float> send, Span<float> recv) => send[..recv.Length].CopyTo(recv);
    public void AllGather(Span<float> data) { }
    public void Broadcast(Span<float> data, int root) { }
    public void Barrier() { }
    public void Abort(string message, int code = 1) => throw new InvalidOperationException(message);
    public void Dispose() { }
}
