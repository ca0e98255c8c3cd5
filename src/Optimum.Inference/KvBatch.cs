using Microsoft.ML.OnnxRuntime;
using Optimum.Core;

namespace Optimum.Inference;

/// <summary>
/// A decoder's self-attention cache for a batch whose rows come and go (continuous batching): GPT-2's, or T5's
/// decoder with its cross-attention inputs bound beside it. Each row's cached
/// positions are a suffix of the time axis, left-padded with zeros that the attention mask hides:
/// past_key_values.{l}.{key,value} are (B, heads, Length, headSize). Between membership changes a step chains
/// the present outputs (ORT-allocated) into the next past inputs as <see cref="KvCacheState"/> does; on a change,
/// <see cref="Rebuild"/> copies the surviving and joining rows' suffixes into a new, compacted cache
/// (Length = the longest row), so padding never outlives the row that caused it.
/// The ONNX graph concatenates past and present, so a fixed preallocated cache updated in place is not possible
/// without a custom op; the copy happens only when a row joins or leaves: span copies in host memory, or, where the cache
/// lives on a device (or <see cref="Optimum.Core.SessionSettings.CacheEditsAsGraphs"/> asks for it), <see cref="CacheOps"/>
/// graphs run there. Presents are bound to resident memory, logits to the host. Owns its binding; dispose it.
/// </summary>
internal sealed class KvBatch : IDisposable
{
    private readonly InferenceSession _session;
    private readonly int _layers, _heads, _headSize, _vocab;
    private readonly OrtIoBinding _binding;
    private readonly RunOptions _run = new();
    private readonly string[] _outputNames;
    private readonly List<OrtValue> _inputs = [];
    private readonly DevicePlacement _placement;
    private readonly CacheOps? _ops;
    private OrtValue[] _past = [];                            // 2 · layers values, owned: key, value per layer
    private OrtValue? _logits;

    /// <summary>A GPT-2 decoder's cache: its parameters are bound once.</summary>
    public KvBatch(CausalLm lm) : this(lm.Session, lm.Layers, lm.Heads, lm.HeadSize, lm.VocabSize, lm.BoundParameters, lm.Placement, lm.CacheOps) { }

    /// <summary>
    /// A cache over any decoder with past_key_values.{l}.* inputs and present.{l}.* outputs; <paramref name="bound"/> (not owned)
    /// stays bound. <paramref name="ops"/> (not owned): edits as graphs on the device; null: span copies (host memory only).
    /// </summary>
    public KvBatch(InferenceSession session, int layers, int heads, int headSize, int vocab, IEnumerable<(string Name, OrtValue Value)> bound,
        DevicePlacement placement = default, CacheOps? ops = null)
    {
        if (!placement.IsHost && ops is null) throw new ArgumentException($"A cache on {placement.Device} is edited with graphs: {nameof(ops)} is required.", nameof(ops));
        _session = session;
        (_layers, _heads, _headSize, _vocab) = (layers, heads, headSize, vocab);
        (_placement, _ops) = (placement, ops);
        _binding = session.CreateIoBinding();
        foreach (var (name, value) in bound) _binding.BindInput(name, value);
        _outputNames = [.. Enumerable.Range(0, layers).SelectMany(l => new[] { $"present.{l}.key", $"present.{l}.value" })];
    }

    /// <summary>Cached positions per row (with padding).</summary>
    public int Length { get; private set; }
    public int Batch { get; private set; }

    /// <summary>Cache tensor <paramref name="k"/> (2·layer + 0 for key, 1 for value), (Batch, heads, Length, headSize); host memory only.</summary>
    public ReadOnlySpan<float> Past(int k) => _placement.IsHost ? _past[k].GetTensorDataAsSpan<float>()
        : throw new InvalidOperationException($"The cache is in {_placement.Device} memory: it cannot be read as a host span.");

    /// <summary>Binds an input that stays bound for the following steps (not owned: the caller disposes it after rebinding).</summary>
    public void Bind(string name, OrtValue value) => _binding.BindInput(name, value);

    /// <summary>
    /// GPT-2: runs <paramref name="seq"/> tokens per row (ids and positions (batch × seq), mask (batch × (Length + seq)))
    /// and returns the last position's logits, row after row (valid until the next step or rebuild).
    /// </summary>
    public ReadOnlySpan<float> Step(long[] ids, long[] positions, long[] mask, int batch, int seq)
    {
        if (ids.Length != batch * seq || positions.Length != ids.Length || mask.Length != batch * (Length + seq))
            throw new ArgumentException($"KvBatch.Step: {ids.Length} ids, {positions.Length} positions and {mask.Length} mask entries do not fit batch {batch} × seq {seq} over a cache of batch {Batch}, length {Length}.");
        return Step(batch, seq,
            ("input_ids", OrtValue.CreateTensorValueFromMemory(ids, [batch, seq])),
            ("position_ids", OrtValue.CreateTensorValueFromMemory(positions, [batch, seq])),
            ("attention_mask", OrtValue.CreateTensorValueFromMemory(mask, [batch, Length + seq])));
    }

    /// <summary>
    /// Runs one step of <paramref name="seq"/> positions per row with this step's <paramref name="inputs"/> (owned: disposed
    /// at the next step) beside the cache and the bound inputs; returns the last position's logits, row after row.
    /// </summary>
    public ReadOnlySpan<float> Step(int batch, int seq, params (string Name, OrtValue Value)[] inputs)
    {
        foreach (var v in _inputs) v.Dispose();
        _inputs.Clear();
        foreach (var (name, v) in inputs) { _inputs.Add(v); _binding.BindInput(name, v); }
        if (_past.Length > 0 && batch != Batch)
            throw new ArgumentException($"KvBatch.Step: batch {batch} differs from the cache's {Batch} rows.");
        for (int l = 0; l < _layers; l++)
            for (int kv = 0; kv < 2; kv++)
            {
                var name = $"past_key_values.{l}.{(kv == 0 ? "key" : "value")}";
                if (_past.Length == 0)
                {
                    var empty = OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [batch, _heads, 0, _headSize]);
                    _inputs.Add(empty);
                    _binding.BindInput(name, empty);
                }
                else _binding.BindInput(name, _past[2 * l + kv]);
            }
        _binding.BindOutputToDevice("logits", _placement.Host);
        foreach (var n in _outputNames) _binding.BindOutputToDevice(n, _placement.Resident);
        _session.RunWithBinding(_run, _binding);
        var outputs = _binding.GetOutputValues();                  // the values are ours to dispose (not the list's)
        _logits?.Dispose();
        foreach (var v in _past) v.Dispose();                    // consumed by this step
        _logits = outputs[0];
        _past = [.. outputs.Skip(1)];
        Length += seq;
        Batch = batch;
        int vocab = _vocab;
        var logits = _logits.GetTensorDataAsSpan<float>();
        if (seq > 1)
        {
            var last = new float[batch * vocab];
            for (int b = 0; b < batch; b++) logits.Slice(((b + 1) * seq - 1) * vocab, vocab).CopyTo(last.AsSpan(b * vocab));
            logits = last;
        }
        int bad = logits.IndexOfAnyExceptInRange(float.MinValue, float.MaxValue);
        if (bad >= 0)
            throw new NonFiniteOutputException($"The model's logits hold {logits[bad]} (row {bad / vocab}, token {bad % vocab}) after {Length} positions: its weights overflow in float32 (a diverged training run?); generation stopped.");
        return logits;
    }

    /// <summary>
    /// Replaces the cache with <paramref name="rows"/>: row i takes the last <c>Cached</c> positions of row <c>Row</c> of
    /// <c>Source</c> (this batch or another; unread when <c>Cached</c> is 0), right-aligned in a cache as long as the longest
    /// of them. No rows clear it.
    /// </summary>
    public void Rebuild(IReadOnlyList<(KvBatch Source, int Row, int Cached)> rows)
    {
        int batch = rows.Count, length = rows.Count == 0 ? 0 : rows.Max(r => r.Cached);
        foreach (var (src, row, n) in rows)
            if (n > 0 && (src._past.Length == 0 || (uint)row >= (uint)src.Batch || n > src.Length))
                throw new ArgumentException($"KvBatch.Rebuild: the last {n} positions of row {row} of a cache of batch {src.Batch}, length {src.Length} do not exist.");
        var values = batch == 0 ? [] : length == 0 ? Empty(batch) : _ops is null ? Copied(rows, length) : Spliced(rows, length);
        foreach (var v in _past) v.Dispose();
        _past = values;
        (Batch, Length) = (batch, length);
    }

    private OrtValue[] Empty(int batch) =>
        [.. Enumerable.Range(0, 2 * _layers).Select(_ => OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [batch, _heads, 0, _headSize]))];

    // Host memory: each row's suffix copied into managed arrays.
    private OrtValue[] Copied(IReadOnlyList<(KvBatch Source, int Row, int Cached)> rows, int length)
    {
        if (!_placement.IsHost) throw new InvalidOperationException($"A cache in {_placement.Device} memory is rebuilt with graphs, not host copies.");
        int batch = rows.Count, heads = _heads, d = _headSize;
        var values = new OrtValue[2 * _layers];
        for (int k = 0; k < values.Length; k++)
        {
            var data = new float[batch * heads * length * d];                                  // (B, H, T, D), zero padding on the left
            for (int i = 0; i < batch; i++)
            {
                var (src, row, n) = rows[i];
                if (n == 0) continue;
                var from = src.Past(k);
                for (int h = 0; h < heads; h++)
                    from.Slice(((row * heads + h) * src.Length + src.Length - n) * d, n * d)
                        .CopyTo(data.AsSpan(((i * heads + h) * length + length - n) * d));
            }
            values[k] = OrtValue.CreateTensorValueFromMemory(data, [batch, heads, length, d]);
        }
        return values;
    }

    // On the device: each row's suffix shifted right by length - its source's length; a row with nothing cached rides with
    // its neighbour's source (one run of the splice), all of it zeroed.
    private OrtValue[] Spliced(IReadOnlyList<(KvBatch Source, int Row, int Cached)> rows, int length)
    {
        var any = rows.First(r => r.Cached > 0).Source;
        var sources = new KvBatch[rows.Count];
        for (int i = 0; i < rows.Count; i++) sources[i] = rows[i].Cached > 0 ? rows[i].Source : i > 0 ? sources[i - 1] : any;
        var values = new OrtValue[2 * _layers];
        try
        {
            for (int k = 0; k < values.Length; k++)
                values[k] = _ops!.Assemble([.. rows.Select((r, i) => (sources[i]._past[k], r.Cached > 0 ? r.Row : 0, length - sources[i].Length, length - r.Cached, length))],
                    _heads, length, _headSize);
        }
        catch
        {
            foreach (var v in values) v?.Dispose();
            throw;
        }
        return values;
    }

    public void Dispose()
    {
        foreach (var v in _past) v.Dispose();
        _logits?.Dispose();
        foreach (var v in _inputs) v.Dispose();
        _binding.Dispose();
        _run.Dispose();
    }
}
