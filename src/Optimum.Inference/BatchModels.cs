using Microsoft.ML.OnnxRuntime;

namespace Optimum.Inference;

/// <summary>
/// What <see cref="BatchScheduler"/> needs of a model: a request's checks, what runs when a row joins (a causal LM's
/// prompt prefill, an encoder-decoder's encoder), the batch rebuilt when rows join or leave, and one decode step.
/// </summary>
internal interface IBatchModel : IDisposable
{
    string Name { get; }
    int VocabSize { get; }
    int? EosTokenId { get; }
    /// <summary>Cached positions per row of the batch (with padding).</summary>
    int Length { get; }

    /// <summary>
    /// Checks a request as the unbatched generation does and returns the decoder's tokens before the new ones (what the
    /// repetition penalty sees): the prompt of a causal LM, [decoder_start] of an encoder-decoder.
    /// </summary>
    IReadOnlyList<int> Start(IReadOnlyList<int> prompt, GenerationOptions o);

    /// <summary>The unbatched generation (beam search).</summary>
    GenerationResult Alone(IReadOnlyList<int> prompt, GenerationOptions o, Func<int, IReadOnlyList<int>, bool>? onToken, CancellationToken cancel);

    /// <summary>
    /// Runs what a request needs before it joins and returns its joining state (for <see cref="Rebuild"/>; the caller
    /// disposes it if the row never joins). <paramref name="logits"/> are its first token's when they were computed too
    /// (then the prompt is cached); empty when the row's first step runs in the batch (nothing cached yet).
    /// </summary>
    IDisposable Admit(IReadOnlyList<int> prompt, out ReadOnlySpan<float> logits);

    /// <summary>
    /// The batch's rows changed: row i is a joining row (<c>Joining</c>, consumed here) or row <c>Row</c> of the current
    /// batch, with its last <c>Cached</c> positions. Rows of the current batch not listed are dropped.
    /// </summary>
    void Rebuild(IReadOnlyList<(IDisposable? Joining, int Row, int Cached)> rows);

    /// <summary>One token per row: ids, positions (batch), mask (batch × (Length + 1), left padding 0) → logits (batch × vocab).</summary>
    ReadOnlySpan<float> Step(long[] ids, long[] positions, long[] mask, int batch);
}

/// <summary>GPT-2: a joining row's prompt is prefilled alone, then its cache is spliced into the batch.</summary>
internal sealed class CausalBatch(CausalLm lm) : IBatchModel
{
    private readonly KvBatch _batch = new(lm);

    public string Name => Path.GetFileName(lm.ModelDir);
    public int VocabSize => lm.VocabSize;
    public int? EosTokenId => lm.EosTokenId;
    public int Length => _batch.Length;

    public IReadOnlyList<int> Start(IReadOnlyList<int> prompt, GenerationOptions o)
    {
        if (prompt.Count == 0) throw new ArgumentException("Every prompt needs at least one token.", nameof(prompt));
        if (prompt.Count + o.MaxNewTokens > lm.MaxPositions)
            throw new ArgumentException($"Prompt of {prompt.Count} tokens plus {o.MaxNewTokens} new tokens exceeds the model's {lm.MaxPositions} positions.");
        return prompt;
    }

    public GenerationResult Alone(IReadOnlyList<int> prompt, GenerationOptions o, Func<int, IReadOnlyList<int>, bool>? onToken, CancellationToken cancel) =>
        Generator.Generate(lm, [prompt], o, onToken, cancel)[0];

    public IDisposable Admit(IReadOnlyList<int> prompt, out ReadOnlySpan<float> logits)
    {
        var prefill = new KvBatch(lm);
        try
        {
            int n = prompt.Count;
            logits = prefill.Step([.. prompt.Select(t => (long)t)], [.. Enumerable.Range(0, n).Select(i => (long)i)], [.. Enumerable.Repeat(1L, n)], 1, n);
            return prefill;
        }
        catch
        {
            prefill.Dispose();
            throw;
        }
    }

    public void Rebuild(IReadOnlyList<(IDisposable? Joining, int Row, int Cached)> rows)
    {
        _batch.Rebuild([.. rows.Select(r => (r.Joining as KvBatch ?? _batch, r.Joining is null ? r.Row : 0, r.Cached))]);
        foreach (var r in rows) r.Joining?.Dispose();                  // copied into the batch
    }

    public ReadOnlySpan<float> Step(long[] ids, long[] positions, long[] mask, int batch) => _batch.Step(ids, positions, mask, batch, 1);

    public void Dispose() => _batch.Dispose();
}

/// <summary>
/// T5: a joining row's source is encoded alone (as an unbatched generation encodes it), and its encoder outputs stay with
/// the row; the decoder's cross-attention inputs are those rows' keys/values right-padded to the longest source under
/// encoder_attention_mask, rebuilt when rows join or leave. A row joins with nothing cached: its first step
/// (decoder_start) runs in the batch, its self-attention padding hidden by decoder_attention_mask.
/// </summary>
internal sealed class Seq2SeqBatch : IBatchModel
{
    private readonly Seq2SeqLm _lm;
    private readonly KvBatch _self;
    private List<Seq2SeqLm.Encoded> _rows = [];
    private OrtValue[] _cross = [];                             // encoder_attention_mask, then key, value per layer

    public Seq2SeqBatch(Seq2SeqLm lm)
    {
        if (!lm.MasksDecoder)
            throw new NotSupportedException($"'{lm.ModelDir}': decoder.onnx has no decoder_attention_mask input (exported before T5 batching), so targets of different lengths cannot share a step; export the folder again.");
        _lm = lm;
        _self = new KvBatch(lm.DecoderSession, lm.Layers, lm.Heads, lm.HeadSize, lm.VocabSize, [], lm.Placement, lm.CacheOps);
    }

    public string Name => Path.GetFileName(_lm.ModelDir);
    public int VocabSize => _lm.VocabSize;
    public int? EosTokenId => _lm.EosTokenId;
    public int Length => _self.Length;

    public IReadOnlyList<int> Start(IReadOnlyList<int> prompt, GenerationOptions o)
    {
        if (prompt.Count == 0) throw new ArgumentException("Every source needs at least one token.", nameof(prompt));
        if (prompt.Count > _lm.MaxPositions) throw new ArgumentException($"A source of {prompt.Count} tokens exceeds the model's {_lm.MaxPositions}.");
        if (1 + o.MaxNewTokens > _lm.MaxPositions)
            throw new ArgumentException($"Prompt of 1 tokens plus {o.MaxNewTokens} new tokens exceeds the model's {_lm.MaxPositions} positions.");
        return [_lm.DecoderStartTokenId];
    }

    public GenerationResult Alone(IReadOnlyList<int> prompt, GenerationOptions o, Func<int, IReadOnlyList<int>, bool>? onToken, CancellationToken cancel) =>
        _lm.Generate([prompt], o, onToken, cancel)[0];

    public IDisposable Admit(IReadOnlyList<int> prompt, out ReadOnlySpan<float> logits)
    {
        logits = default;
        return _lm.Encode([prompt]);
    }

    public void Rebuild(IReadOnlyList<(IDisposable? Joining, int Row, int Cached)> rows)
    {
        _self.Rebuild([.. rows.Select(r => (_self, r.Joining is null ? r.Row : 0, r.Joining is null ? r.Cached : 0))]);
        var next = rows.Select(r => (Seq2SeqLm.Encoded?)r.Joining ?? _rows[r.Row]).ToList();
        foreach (var gone in _rows.Except(next)) gone.Dispose();
        _rows = next;
        if (next.Count == 0)
        {
            foreach (var v in _cross) v.Dispose();
            _cross = [];
            return;
        }
        int batch = next.Count, src = next.Max(e => e.Length);
        var cross = new OrtValue[1 + 2 * _lm.Layers];
        var mask = new long[batch * src];
        for (int i = 0; i < batch; i++) mask.AsSpan(i * src, next[i].Length).Fill(1);                // right padding stays 0
        cross[0] = OrtValue.CreateTensorValueFromMemory(mask, [batch, src]);
        try
        {
            for (int k = 1; k < cross.Length; k++) cross[k] = _lm.CacheOps is { } ops ? Spliced(ops, rows, next, k, src) : Copied(next, k, src);
        }
        catch
        {
            foreach (var v in cross) v?.Dispose();
            throw;
        }
        _self.Bind("encoder_attention_mask", cross[0]);
        for (int l = 0; l < _lm.Layers; l++)
        {
            _self.Bind($"cross_key_values.{l}.key", cross[1 + 2 * l]);
            _self.Bind($"cross_key_values.{l}.value", cross[2 + 2 * l]);
        }
        foreach (var v in _cross) v.Dispose();
        _cross = cross;
    }

    // Host memory: each row's (1, H, n, D) keys or values copied into a (B, H, S, D) array, right-padded with zeros.
    private OrtValue Copied(List<Seq2SeqLm.Encoded> next, int k, int src)
    {
        if (!_lm.Placement.IsHost) throw new InvalidOperationException($"A cache in {_lm.Placement.Device} memory is rebuilt with graphs, not host copies.");
        int batch = next.Count, heads = _lm.Heads, d = _lm.HeadSize;
        var data = new float[batch * heads * src * d];
        for (int i = 0; i < batch; i++)
        {
            int n = next[i].Length;
            var from = next[i].Outputs[k].GetTensorDataAsSpan<float>();
            for (int h = 0; h < heads; h++) from.Slice(h * n * d, n * d).CopyTo(data.AsSpan((i * heads + h) * src * d));
        }
        return OrtValue.CreateTensorValueFromMemory(data, [batch, heads, src, d]);
    }

    // On the device: a surviving row comes from the batch's current tensor (one run for consecutive survivors), a joining
    // row from its encoder's output; both unshifted, cut or zero-padded on the right to the longest source.
    private OrtValue Spliced(CacheOps ops, IReadOnlyList<(IDisposable? Joining, int Row, int Cached)> rows, List<Seq2SeqLm.Encoded> next, int k, int src) =>
        ops.Assemble([.. rows.Select((r, i) => r.Joining is null
            ? (_cross[k], r.Row, 0, 0, next[i].Length)
            : (next[i].Outputs[k], 0, 0, 0, next[i].Length))], _lm.Heads, src, _lm.HeadSize);

    public ReadOnlySpan<float> Step(long[] ids, long[] positions, long[] mask, int batch) =>
        _self.Step(batch, 1,
            ("input_ids", OrtValue.CreateTensorValueFromMemory(ids, [batch, 1])),
            ("decoder_attention_mask", OrtValue.CreateTensorValueFromMemory(mask, [batch, _self.Length + 1])));

    public void Dispose()
    {
        _self.Dispose();
        foreach (var e in _rows) e.Dispose();
        foreach (var v in _cross) v.Dispose();
    }
}
