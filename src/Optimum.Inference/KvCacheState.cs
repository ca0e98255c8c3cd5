using Microsoft.ML.OnnxRuntime;
using Optimum.Core;
using Optimum.Data;

namespace Optimum.Inference;

/// <summary>
/// The decode loop shared by decoders with a self-attention cache: each step binds the new inputs and
/// the previous step's present.{i}.key/value outputs (still in ORT-allocated memory) as
/// past_key_values.{i}.key/value, runs, and keeps the new outputs. Subclasses bind their own inputs.
/// The presents are bound to the device's resident memory (<see cref="DevicePlacement"/>: a GPU's, when the session runs
/// on CUDA) and the logits to host memory, so only the logits cross to the host each step.
/// The outputs stay in ORT's memory arena on purpose: binding them to buffers of our own that grow with the cache
/// (tried for issue #15) moved the first touch of every new buffer's pages into the decoder's Concat, which then took
/// 12.8% of a token instead of 4.4%, and a prefill allocated its logits anew each request.
/// </summary>
public abstract class KvCacheState : IDecodeState
{
    private readonly InferenceSession _session;
    private readonly RunOptions _run = new();
    private readonly List<OrtValue> _inputs = [];
    private readonly string[] _outputNames;
    private readonly int _layers, _heads, _headSize, _vocab;
    private readonly DevicePlacement _placement;
    private readonly CacheOps? _ops;
    private OrtValue? _logits;
    private OrtValue[] _past = [];                               // 2 · layers values, owned: key, value per layer

    /// <summary>A cache in host memory, edited with span copies.</summary>
    protected KvCacheState(InferenceSession session, int layers, int heads, int headSize, int vocab)
        : this(session, layers, heads, headSize, vocab, default, null) { }

    /// <summary>
    /// A cache bound to <paramref name="placement"/>'s resident memory; <paramref name="ops"/> (not owned) edits it with graphs
    /// on the session's device (<see cref="SessionSettings.CacheEditsAsGraphs"/>), null with span copies (host memory only).
    /// </summary>
    private protected KvCacheState(InferenceSession session, int layers, int heads, int headSize, int vocab, DevicePlacement placement, CacheOps? ops)
    {
        _session = session;
        (_layers, _heads, _headSize, _vocab) = (layers, heads, headSize, vocab);
        (_placement, _ops) = (placement, ops);
        if (!placement.IsHost && ops is null) throw new ArgumentException($"A cache on {placement.Device} is edited with graphs: {nameof(ops)} is required.", nameof(ops));
        Binding = session.CreateIoBinding();
        _outputNames = [.. Enumerable.Range(0, layers).SelectMany(l => new[] { $"present.{l}.key", $"present.{l}.value" })];
    }

    protected OrtIoBinding Binding { get; }
    /// <summary>Cached positions per row (including padding).</summary>
    public int Length { get; private set; }
    public int Batch { get; private set; }

    /// <summary>Binds this step's own inputs; values passed to <paramref name="bind"/> are disposed after the step.</summary>
    protected abstract void BindInputs(long[] ids, long[] positions, long[] mask, int batch, int seq, Action<string, OrtValue> bind);

    /// <summary>Runs a step and returns the last position's logits, row after row (valid until the next step).</summary>
    public ReadOnlySpan<float> Step(long[] ids, long[] positions, long[] mask, int batch)
    {
        int seq = ids.Length / batch;
        if (Length > 0 && batch != Batch) throw new ArgumentException($"Step: batch {batch} differs from the cache's {Batch}.");
        foreach (var v in _inputs) v.Dispose();
        _inputs.Clear();
        void Bind(string name, OrtValue v) { _inputs.Add(v); Binding.BindInput(name, v); }
        BindInputs(ids, positions, mask, batch, seq, Bind);
        for (int l = 0; l < _layers; l++)
            for (int kv = 0; kv < 2; kv++)
            {
                var name = $"past_key_values.{l}.{(kv == 0 ? "key" : "value")}";
                if (_past.Length == 0) Bind(name, OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [batch, _heads, 0, _headSize]));
                else Binding.BindInput(name, _past[2 * l + kv]);
            }
        Binding.BindOutputToDevice("logits", _placement.Host);
        foreach (var n in _outputNames) Binding.BindOutputToDevice(n, _placement.Resident);
        _session.RunWithBinding(_run, Binding);
        var outputs = Binding.GetOutputValues();                  // the values are ours to dispose (not the list's)
        _logits?.Dispose();
        foreach (var v in _past) v.Dispose();                   // the old cache was consumed by this step
        _logits = outputs[0];
        _past = [.. outputs.Skip(1)];
        Length += seq;
        Batch = batch;
        var logits = _logits.GetTensorDataAsSpan<float>();
        if (seq == 1) return RequireFinite(logits);
        var last = new float[batch * _vocab];
        for (int b = 0; b < batch; b++) logits.Slice(((b + 1) * seq - 1) * _vocab, _vocab).CopyTo(last.AsSpan(b * _vocab));
        return RequireFinite(last);
    }

    /// <summary>
    /// NaN or infinite logits (finite weights that overflow, e.g. a run trained on with --skip-nonfinite into
    /// divergence) would be decoded as garbage text; they stop generation with an error instead.
    /// </summary>
    private ReadOnlySpan<float> RequireFinite(ReadOnlySpan<float> logits)
    {
        int bad = logits.IndexOfAnyExceptInRange(float.MinValue, float.MaxValue);
        if (bad >= 0)
            throw new NonFiniteOutputException($"The model's logits hold {logits[bad]} (row {bad / _vocab}, token {bad % _vocab}) after {Length} positions: its weights overflow in float32 (a diverged training run?); generation stopped.");
        return logits;
    }

    /// <summary>
    /// Reorders the cache rows: row i becomes old row <paramref name="rows"/>[i] (beam search). In place in host memory, or
    /// with a Gather graph on the cache's device (<see cref="SessionSettings.CacheEditsAsGraphs"/>).
    /// </summary>
    public void Reorder(int[] rows)
    {
        if (_past.Length == 0) return;
        if (rows.Length != Batch || rows.Any(r => (uint)r >= (uint)Batch))
            throw new ArgumentException($"Reorder: rows [{string.Join(", ", rows)}] must be {Batch} rows of the cache's {Batch}.", nameof(rows));
        if (_ops is not null)
        {
            // All layers gathered first, then swapped in: a failure part way leaves the cache as it was, not half reordered.
            var moved = new List<OrtValue>(_past.Length);
            try
            {
                foreach (var p in _past) moved.Add(_ops.Gather(p, rows));
            }
            catch
            {
                foreach (var m in moved) m.Dispose();
                throw;
            }
            for (int k = 0; k < _past.Length; k++)
            {
                _past[k].Dispose();
                _past[k] = moved[k];
            }
            return;
        }
        for (int k = 0; k < _past.Length; k++)
        {
            var data = _past[k].GetTensorMutableDataAsSpan<float>();
            int rowLen = data.Length / Batch;
            var copy = data.ToArray();
            for (int i = 0; i < rows.Length; i++) copy.AsSpan(rows[i] * rowLen, rowLen).CopyTo(data.Slice(i * rowLen, rowLen));
        }
    }

    public virtual void Dispose()
    {
        _logits?.Dispose();
        foreach (var v in _past) v.Dispose();
        foreach (var v in _inputs) v.Dispose();
        Binding.Dispose();
        _run.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>A model produced NaN or infinite outputs from valid inputs: the model is at fault, not the request.</summary>
public sealed class NonFiniteOutputException(string message) : InvalidOperationException(message);
