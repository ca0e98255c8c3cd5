using Microsoft.ML.OnnxRuntime;
using Optimum.Data;

namespace Optimum.Inference;

/// <summary>
/// The decode loop shared by decoders with a self-attention cache: each step binds the new inputs and
/// the previous step's present.{i}.key/value outputs (still in ORT-allocated memory) as
/// past_key_values.{i}.key/value, runs, and keeps the new outputs. Subclasses bind their own inputs.
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
    private IDisposableReadOnlyCollection<OrtValue>? _outputs;

    protected KvCacheState(InferenceSession session, int layers, int heads, int headSize, int vocab)
    {
        _session = session;
        (_layers, _heads, _headSize, _vocab) = (layers, heads, headSize, vocab);
        Binding = session.CreateIoBinding();
        _outputNames = ["logits", .. Enumerable.Range(0, layers).SelectMany(l => new[] { $"present.{l}.key", $"present.{l}.value" })];
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
                if (_outputs is null) Bind(name, OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [batch, _heads, 0, _headSize]));
                else Binding.BindInput(name, _outputs[1 + 2 * l + kv]);
            }
        foreach (var n in _outputNames) Binding.BindOutputToDevice(n, OrtMemoryInfo.DefaultInstance);
        _session.RunWithBinding(_run, Binding);
        var previous = _outputs;
        _outputs = Binding.GetOutputValues();
        previous?.Dispose();                        // the old cache was consumed by this step
        Length += seq;
        Batch = batch;
        var logits = _outputs[0].GetTensorDataAsSpan<float>();
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

    /// <summary>Reorders the cache rows: row i becomes old row <paramref name="rows"/>[i] (beam search); in place, in native memory.</summary>
    public void Reorder(int[] rows)
    {
        if (_outputs is null) return;
        for (int k = 1; k < _outputs.Count; k++)
        {
            var data = _outputs[k].GetTensorMutableDataAsSpan<float>();
            int rowLen = data.Length / Batch;
            var copy = data.ToArray();
            for (int i = 0; i < rows.Length; i++) copy.AsSpan(rows[i] * rowLen, rowLen).CopyTo(data.Slice(i * rowLen, rowLen));
        }
    }

    public virtual void Dispose()
    {
        _outputs?.Dispose();
        foreach (var v in _inputs) v.Dispose();
        Binding.Dispose();
        _run.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>A model produced NaN or infinite outputs from valid inputs: the model is at fault, not the request.</summary>
public sealed class NonFiniteOutputException(string message) : InvalidOperationException(message);
