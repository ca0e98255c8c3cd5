using System.Collections.Concurrent;

namespace Optimum.Inference;

/// <summary>
/// Continuous batching (iteration-level scheduling, as vLLM and TGI do) over one <see cref="CausalLm"/>: one background
/// loop owns a batch of up to <see cref="Slots"/> rows. Each iteration it admits waiting requests (each prompt is
/// prefilled alone, then its cache is spliced into the batch), runs one decode step for every active row, picks each
/// row's token with the row's own options and RNG (seeded as an unbatched generation: <c>new Random(Seed)</c>), calls
/// the row's onToken (stop strings, streaming) and evicts finished rows. Rows keep their own positions and masks,
/// so greedy output equals <see cref="Generator.Generate"/> of the prompt alone. Beam search keeps the unbatched path.
/// <see cref="Generate"/> has <see cref="TextGenerator.GenerateTokens"/>'s shape; it blocks its caller until the
/// row finishes. onToken runs on the scheduler's thread. Does not own the model; dispose the scheduler first.
/// </summary>
public sealed class BatchScheduler : IDisposable
{
    private readonly CausalLm _lm;
    private readonly ConcurrentQueue<Row> _waiting = new();
    private readonly SemaphoreSlim _arrived = new(0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _loop;
    private readonly List<Row> _active = [];
    private readonly KvBatch _batch;

    /// <param name="lm">The model (not owned).</param>
    /// <param name="slots">Rows decoded together at most; more requests wait for a row to finish.</param>
    public BatchScheduler(CausalLm lm, int slots)
    {
        if (slots < 1) throw new ArgumentOutOfRangeException(nameof(slots), slots, "A batch needs at least one slot.");
        (_lm, Slots) = (lm, slots);
        _batch = new KvBatch(lm);
        _loop = new Thread(Loop) { IsBackground = true, Name = $"BatchScheduler {Path.GetFileName(lm.ModelDir)}" };
        _loop.Start();
    }

    public int Slots { get; }
    /// <summary>Decode steps run so far, and the rows they held in all (mean batch = rows / steps).</summary>
    public (long Steps, long Rows) Stats => (Interlocked.Read(ref _steps), Interlocked.Read(ref _rows));
    private long _steps, _rows;
    /// <summary>Requests queued and not yet admitted to the batch.</summary>
    public int Waiting => _waiting.Count;

    /// <summary>
    /// Generates the new tokens of one prompt in the shared batch, as <see cref="Generator.Generate"/> does for one prompt
    /// (same checks, finish reasons and seeding). <paramref name="onToken"/>(0, tokens so far) may return false to stop.
    /// </summary>
    public GenerationResult Generate(IReadOnlyList<int> prompt, GenerationOptions o, Func<int, IReadOnlyList<int>, bool>? onToken = null, CancellationToken cancel = default)
    {
        o.Validate();
        if (o.NumBeams > 1) return Generator.Generate(_lm, [prompt], o, onToken, cancel)[0];
        if (prompt.Count == 0) throw new ArgumentException("Every prompt needs at least one token.", nameof(prompt));
        if (prompt.Count + o.MaxNewTokens > _lm.MaxPositions)
            throw new ArgumentException($"Prompt of {prompt.Count} tokens plus {o.MaxNewTokens} new tokens exceeds the model's {_lm.MaxPositions} positions.");
        ObjectDisposedException.ThrowIf(_stop.IsCancellationRequested, this);
        var row = new Row(prompt, o, onToken, cancel, o.EosTokenId ?? _lm.EosTokenId);
        _waiting.Enqueue(row);
        _arrived.Release();
        return row.Done.Task.GetAwaiter().GetResult();
    }

    private void Loop()
    {
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                if (_active.Count == 0) _arrived.Wait(_stop.Token);
                else while (_arrived.Wait(0)) { }                // drain: the queue itself is what is admitted
                bool changed = Evict();                          // finished rows free their slots first
                changed |= Admit(out var joined);
                if (changed)
                {
                    _batch.Rebuild([.. _active.Select(r => (r.Prefill ?? _batch, r.BatchRow, r.Cached))]);
                    for (int i = 0; i < _active.Count; i++) _active[i].BatchRow = i;
                }
                foreach (var r in joined) { r.Prefill!.Dispose(); r.Prefill = null; }
                if (_active.Count > 0) DecodeStep();
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested) { break; }
            catch (Exception e)
            {
                // The batch step failed (a model fault such as non-finite logits): every row in it fails with the cause.
                foreach (var r in _active) { r.Prefill?.Dispose(); r.Done.TrySetException(e); }
                _active.Clear();
                _batch.Rebuild([]);
            }
        }
        var stopped = new OperationCanceledException("The batch scheduler was disposed.");
        foreach (var r in _active) r.Done.TrySetException(stopped);
        while (_waiting.TryDequeue(out var w)) w.Done.TrySetException(stopped);
    }

    /// <summary>Prefills waiting requests into free slots; a request whose first token already finishes it never joins.</summary>
    private bool Admit(out List<Row> joined)
    {
        joined = [];
        while (_active.Count < Slots && _waiting.TryDequeue(out var r))
        {
            try
            {
                var prefill = new KvBatch(_lm);
                r.Prefill = prefill;
                int n = r.Prompt.Count;
                var logits = prefill.Step([.. r.Prompt.Select(t => (long)t)], [.. Enumerable.Range(0, n).Select(i => (long)i)], [.. Enumerable.Repeat(1L, n)], 1, n);
                r.Cached = n;
                r.BatchRow = 0;
                Take(r, logits);
                if (r.Finish is not null) { r.Prefill = null; prefill.Dispose(); r.Complete(); continue; }
                _active.Add(r);
                joined.Add(r);
            }
            catch (Exception e)
            {
                r.Prefill?.Dispose();
                r.Prefill = null;
                r.Done.TrySetException(e);
            }
        }
        return joined.Count > 0;
    }

    /// <summary>Removes finished rows (completing them); true when any left.</summary>
    private bool Evict()
    {
        int before = _active.Count;
        foreach (var r in _active.Where(r => r.Finish is not null)) r.Complete();
        _active.RemoveAll(r => r.Finish is not null);
        return _active.Count != before;
    }

    private void DecodeStep()
    {
        int batch = _active.Count, length = _batch.Length;
        var ids = new long[batch];
        var pos = new long[batch];
        var mask = new long[batch * (length + 1)];
        for (int i = 0; i < batch; i++)
        {
            var r = _active[i];
            ids[i] = r.Next;
            pos[i] = r.Cached;                                                             // positions 0 … Cached-1 are in the cache
            mask.AsSpan(i * (length + 1) + length - r.Cached, r.Cached + 1).Fill(1);       // left padding stays 0
        }
        var logits = _batch.Step(ids, pos, mask, batch, 1);
        Interlocked.Increment(ref _steps);
        Interlocked.Add(ref _rows, batch);
        for (int i = 0; i < batch; i++)
        {
            var r = _active[i];
            r.Cached++;
            try { Take(r, logits.Slice(i * _lm.VocabSize, _lm.VocabSize)); }
            catch (Exception e) { r.Finish = FinishReason.Cancelled; r.Failure = e; }
        }
    }

    /// <summary>Picks a row's next token and decides whether it finished, as <see cref="Generator.Generate"/> does.</summary>
    private static void Take(Row r, ReadOnlySpan<float> logits)
    {
        int token = Sampling.Pick(logits, r.Options, r.Rng, r.Prompt.Concat(r.Tokens));
        r.Next = token;
        if (token == r.Eos) r.Finish = FinishReason.Eos;
        else
        {
            r.Tokens.Add(token);
            if (r.OnToken is not null && !r.OnToken(0, r.Tokens)) r.Finish = FinishReason.Stop;
            else if (r.Tokens.Count >= r.Options.MaxNewTokens) r.Finish = FinishReason.Length;
        }
        if (r.Cancel.IsCancellationRequested) r.Finish ??= FinishReason.Cancelled;
    }

    public void Dispose()
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        _loop.Join();
        _batch.Dispose();
        _arrived.Dispose();
        _stop.Dispose();
    }

    private sealed class Row(IReadOnlyList<int> prompt, GenerationOptions o, Func<int, IReadOnlyList<int>, bool>? onToken, CancellationToken cancel, int? eos)
    {
        public IReadOnlyList<int> Prompt { get; } = prompt;
        public GenerationOptions Options { get; } = o;
        public Func<int, IReadOnlyList<int>, bool>? OnToken { get; } = onToken;
        public CancellationToken Cancel { get; } = cancel;
        public int? Eos { get; } = eos;
        public Random Rng { get; } = new(o.Seed);                   // row 0 of an unbatched generation: seed + 0
        public List<int> Tokens { get; } = [];
        public TaskCompletionSource<GenerationResult> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public KvBatch? Prefill { get; set; }
        public int BatchRow { get; set; }
        /// <summary>Positions of this row in the cache (prompt + generated − the token to feed next).</summary>
        public int Cached { get; set; }
        public long Next { get; set; }
        public FinishReason? Finish { get; set; }
        public Exception? Failure { get; set; }

        public void Complete()
        {
            if (Failure is not null) Done.TrySetException(Failure);
            else Done.TrySetResult(new GenerationResult([.. Tokens], Finish!.Value));
        }
    }
}
