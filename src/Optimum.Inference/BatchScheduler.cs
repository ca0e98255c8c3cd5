using System.Collections.Concurrent;

namespace Optimum.Inference;

/// <summary>
/// Continuous batching (iteration-level scheduling, as vLLM and TGI do) over one <see cref="CausalLm"/> or
/// <see cref="Seq2SeqLm"/>: one background loop owns a batch of up to <see cref="Slots"/> rows. Each iteration it admits
/// waiting requests (a causal LM's prompt is prefilled alone, then its cache is spliced into the batch; a T5 source is
/// encoded alone and its row's first decoder step runs in the batch), runs one decode step for every active row, picks each
/// row's token with the row's own options and RNG (seeded as an unbatched generation: <c>new Random(Seed)</c>), calls
/// the row's onToken (stop strings, streaming) and evicts finished rows. Rows keep their own positions and masks,
/// so greedy output equals <see cref="Generator.Generate"/> (<see cref="Seq2SeqLm.Generate"/>) of the prompt alone.
/// Beam search keeps the unbatched path.
/// <see cref="Generate"/> has <see cref="TextGenerator.GenerateTokens"/>'s shape; it blocks its caller until the
/// row finishes. onToken runs on the scheduler's thread. Does not own the model; dispose the scheduler first.
/// </summary>
public sealed class BatchScheduler : IDisposable
{
    private readonly IBatchModel _model;
    private readonly ConcurrentQueue<Row> _waiting = new();
    private readonly SemaphoreSlim _arrived = new(0);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _loop;
    private readonly List<Row> _active = [];

    /// <param name="lm">The model (not owned).</param>
    /// <param name="slots">Rows decoded together at most; more requests wait for a row to finish.</param>
    public BatchScheduler(CausalLm lm, int slots) : this(new CausalBatch(lm), slots) { }

    /// <summary>An encoder-decoder's batch; its decoder must take decoder_attention_mask (<see cref="Seq2SeqLm.MasksDecoder"/>).</summary>
    /// <param name="lm">The model (not owned).</param>
    /// <param name="slots">Rows decoded together at most; more requests wait for a row to finish.</param>
    public BatchScheduler(Seq2SeqLm lm, int slots) : this(new Seq2SeqBatch(lm), slots) { }

    private BatchScheduler(IBatchModel model, int slots)
    {
        if (slots < 1)
        {
            model.Dispose();
            throw new ArgumentOutOfRangeException(nameof(slots), slots, "A batch needs at least one slot.");
        }
        (_model, Slots) = (model, slots);
        _loop = new Thread(Loop) { IsBackground = true, Name = $"BatchScheduler {model.Name}" };
        _loop.Start();
    }

    public int Slots { get; }
    /// <summary>Decode steps run so far, and the rows they held in all (mean batch = rows / steps).</summary>
    public (long Steps, long Rows) Stats => (Interlocked.Read(ref _steps), Interlocked.Read(ref _rows));
    private long _steps, _rows;
    /// <summary>Requests queued and not yet admitted to the batch.</summary>
    public int Waiting => _waiting.Count;

    /// <summary>
    /// Generates the new tokens of one prompt (a T5 source) in the shared batch, as <see cref="Generator.Generate"/>
    /// (<see cref="Seq2SeqLm.Generate"/>) does for one prompt: same checks, finish reasons and seeding.
    /// <paramref name="onToken"/>(0, tokens so far) may return false to stop.
    /// </summary>
    public GenerationResult Generate(IReadOnlyList<int> prompt, GenerationOptions o, Func<int, IReadOnlyList<int>, bool>? onToken = null, CancellationToken cancel = default)
    {
        o.Validate();
        if (o.NumBeams > 1) return _model.Alone(prompt, o, onToken, cancel);
        var start = _model.Start(prompt, o);
        ObjectDisposedException.ThrowIf(_stop.IsCancellationRequested, this);
        var row = new Row(prompt, start, o, onToken, cancel, o.EosTokenId ?? _model.EosTokenId);
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
                    _model.Rebuild([.. _active.Select(r => (r.Joining, r.BatchRow, r.Cached))]);
                    foreach (var r in _active) r.Joining = null;                // consumed by the rebuild
                    for (int i = 0; i < _active.Count; i++) _active[i].BatchRow = i;
                }
                if (_active.Count > 0) DecodeStep();
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested) { break; }
            catch (Exception e)
            {
                // The batch step failed (a model fault such as non-finite logits): every row in it fails with the cause.
                foreach (var r in _active) { r.Joining?.Dispose(); r.Done.TrySetException(e); }
                _active.Clear();
                _model.Rebuild([]);
            }
        }
        var stopped = new OperationCanceledException("The batch scheduler was disposed.");
        foreach (var r in _active) r.Done.TrySetException(stopped);
        while (_waiting.TryDequeue(out var w)) w.Done.TrySetException(stopped);
    }

    /// <summary>Prepares waiting requests for free slots; a request whose first token already finishes it never joins.</summary>
    private bool Admit(out List<Row> joined)
    {
        joined = [];
        while (_active.Count < Slots && _waiting.TryDequeue(out var r))
        {
            try
            {
                r.Joining = _model.Admit(r.Prompt, out var logits);
                r.BatchRow = 0;
                if (logits.IsEmpty) r.Next = r.Start[^1];                  // nothing cached: the first step runs in the batch
                else
                {
                    r.Cached = r.Prompt.Count;
                    Take(r, logits);
                    if (r.Finish is not null) { r.Joining.Dispose(); r.Joining = null; r.Complete(); continue; }
                }
                _active.Add(r);
                joined.Add(r);
            }
            catch (Exception e)
            {
                r.Joining?.Dispose();
                r.Joining = null;
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
        int batch = _active.Count, length = _model.Length;
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
        var logits = _model.Step(ids, pos, mask, batch);
        Interlocked.Increment(ref _steps);
        Interlocked.Add(ref _rows, batch);
        for (int i = 0; i < batch; i++)
        {
            var r = _active[i];
            r.Cached++;
            try { Take(r, logits.Slice(i * _model.VocabSize, _model.VocabSize)); }
            catch (Exception e) { r.Finish = FinishReason.Cancelled; r.Failure = e; }
        }
    }

    /// <summary>Picks a row's next token and decides whether it finished, as <see cref="Generator.Generate"/> does.</summary>
    private static void Take(Row r, ReadOnlySpan<float> logits)
    {
        int token = Sampling.Pick(logits, r.Options, r.Rng, r.Start.Concat(r.Tokens));
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
        _model.Dispose();
        _arrived.Dispose();
        _stop.Dispose();
    }

    private sealed class Row(IReadOnlyList<int> prompt, IReadOnlyList<int> start, GenerationOptions o, Func<int, IReadOnlyList<int>, bool>? onToken, CancellationToken cancel, int? eos)
    {
        public IReadOnlyList<int> Prompt { get; } = prompt;
        /// <summary>The decoder's tokens before the new ones: the prompt, or T5's [decoder_start].</summary>
        public IReadOnlyList<int> Start { get; } = start;
        public GenerationOptions Options { get; } = o;
        public Func<int, IReadOnlyList<int>, bool>? OnToken { get; } = onToken;
        public CancellationToken Cancel { get; } = cancel;
        public int? Eos { get; } = eos;
        public Random Rng { get; } = new(o.Seed);                   // row 0 of an unbatched generation: seed + 0
        public List<int> Tokens { get; } = [];
        public TaskCompletionSource<GenerationResult> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        /// <summary>What the model prepared for the row until it joins the batch (prefill, encoder outputs).</summary>
        public IDisposable? Joining { get; set; }
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
