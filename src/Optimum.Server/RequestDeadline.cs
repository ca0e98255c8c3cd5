using System.Diagnostics;

namespace Optimum.Server;

/// <summary>
/// A request's time limit: <see cref="Token"/> fires at the deadline or when the client leaves, and
/// <see cref="Expired"/> also reads the clock, because a timer starved of thread-pool threads can fire late and a
/// request past its limit is a timeout (504) all the same.
/// </summary>
internal sealed class RequestDeadline : IDisposable
{
    private readonly CancellationTokenSource _cts;
    private readonly CancellationToken _aborted;
    private readonly long _start = Stopwatch.GetTimestamp();
    private readonly double _seconds;

    public RequestDeadline(double seconds, CancellationToken aborted)
    {
        (_seconds, _aborted) = (seconds, aborted);
        _cts = CancellationTokenSource.CreateLinkedTokenSource(aborted);
        _cts.CancelAfter(TimeSpan.FromSeconds(seconds));
    }

    /// <summary>Cancelled at the deadline or when the client leaves.</summary>
    public CancellationToken Token => _cts.Token;

    /// <summary>True once the time limit has passed while the client is still there.</summary>
    public bool Expired => !_aborted.IsCancellationRequested && (_cts.IsCancellationRequested || Stopwatch.GetElapsedTime(_start).TotalSeconds >= _seconds);

    public void Dispose() => _cts.Dispose();
}
