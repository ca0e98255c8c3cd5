using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace Optimum.Inference;

/// <summary>
/// The decode loop shared by decoders with a self-attention cache. The cache lives in two native buffers per
/// present.{i}.key/value output, bound in place: a step reads its past_key_values from one and the decoder writes its
/// present (past + the new positions) straight into the other, then the two swap; the logits go to a buffer of their own.
/// The present tensors a step writes are the next step's past inputs as they are. Nothing is copied or allocated per step
/// outside the graph (the buffers grow by a quarter when a step needs more).
/// Subclasses bind their own inputs.
/// </summary>
public abstract class KvCacheState : IDecodeState
{
    private readonly InferenceSession _session;
    private readonly RunOptions _run = new();
    private readonly List<OrtValue> _stepValues = [];              // bound for the current step; disposed at the next
    private readonly string[] _pastNames, _presentNames;
    private readonly int _heads, _headSize, _vocab;
    private readonly NativeFloats[][] _cache;                     // [side][2·layer + (0 key, 1 value)]
    private readonly NativeFloats _logits = new();
    private int _side;                                            // the side holding the current cache
    private OrtValue[]? _cacheViews;                              // the last step's present outputs: the next step's past inputs

    protected KvCacheState(InferenceSession session, int layers, int heads, int headSize, int vocab)
    {
        _session = session;
        (_heads, _headSize, _vocab) = (heads, headSize, vocab);
        Binding = session.CreateIoBinding();
        _pastNames = [.. Enumerable.Range(0, layers).SelectMany(l => new[] { $"past_key_values.{l}.key", $"past_key_values.{l}.value" })];
        _presentNames = [.. Enumerable.Range(0, layers).SelectMany(l => new[] { $"present.{l}.key", $"present.{l}.value" })];
        _cache = [[.. _pastNames.Select(_ => new NativeFloats())], [.. _pastNames.Select(_ => new NativeFloats())]];
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
        long logitCount = (long)batch * seq * _vocab;
        if (logitCount > int.MaxValue) throw new ArgumentException($"Step: {batch} rows × {seq} tokens × vocabulary {_vocab} logits exceed one span ({int.MaxValue}).");
        foreach (var v in _stepValues) v.Dispose();
        _stepValues.Clear();
        void Bind(string name, OrtValue v) { _stepValues.Add(v); Binding.BindInput(name, v); }
        BindInputs(ids, positions, mask, batch, seq, Bind);
        long total = Length + seq;
        var present = _cache[1 - _side];
        var views = new OrtValue[_pastNames.Length];
        try
        {
            for (int i = 0; i < _pastNames.Length; i++)
            {
                if (_cacheViews is null) Bind(_pastNames[i], OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), [batch, _heads, 0, _headSize]));
                else Binding.BindInput(_pastNames[i], _cacheViews[i]);
                views[i] = present[i].Grow((long)batch * _heads * total * _headSize).View([batch, _heads, total, _headSize]);
                Binding.BindOutput(_presentNames[i], views[i]);
            }
            var logits = _logits.Grow(logitCount).View([batch, seq, _vocab]);
            _stepValues.Add(logits);
            Binding.BindOutput("logits", logits);
            _session.RunWithBinding(_run, Binding);
        }
        catch
        {
            foreach (var v in views) v?.Dispose();                 // the cache stays as it was: the past side is untouched
            throw;
        }
        foreach (var v in _cacheViews ?? []) v.Dispose();
        _cacheViews = views;
        _side = 1 - _side;
        Length = (int)total;
        Batch = batch;
        var all = _logits.Span(logitCount);
        if (seq == 1) return RequireFinite(all);
        var last = new float[batch * _vocab];
        for (int b = 0; b < batch; b++) all.Slice(((b + 1) * seq - 1) * _vocab, _vocab).CopyTo(last.AsSpan(b * _vocab));
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
        if (Length == 0) return;
        long rowLen = (long)_heads * Length * _headSize;
        foreach (var buffer in _cache[_side])
        {
            var data = buffer.Span(Batch * rowLen);
            var copy = data.ToArray();
            for (int i = 0; i < rows.Length; i++) copy.AsSpan((int)(rows[i] * rowLen), (int)rowLen).CopyTo(data.Slice((int)(i * rowLen), (int)rowLen));
        }
    }

    public virtual void Dispose()
    {
        foreach (var v in _stepValues) v.Dispose();
        _stepValues.Clear();
        foreach (var v in _cacheViews ?? []) v.Dispose();
        Binding.Dispose();
        _run.Dispose();
        foreach (var side in _cache) foreach (var b in side) b.Dispose();
        _logits.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>A 64-byte-aligned native float buffer that only grows; its contents are not kept when it does.</summary>
    private sealed unsafe class NativeFloats : IDisposable
    {
        private float* _data;
        private long _capacity;

        /// <summary>Makes room for <paramref name="count"/> floats (a quarter more than asked when it must reallocate).</summary>
        public NativeFloats Grow(long count)
        {
            if (count <= _capacity) return this;
            long capacity = Math.Max(count, _capacity + _capacity / 4);
            NativeMemory.AlignedFree(_data);
            _data = null;
            _capacity = 0;
            _data = (float*)NativeMemory.AlignedAlloc((nuint)(capacity * sizeof(float)), 64);
            _capacity = capacity;
            return this;
        }

        /// <summary>A tensor over the buffer's first elements (the caller disposes it; the buffer must outlive it).</summary>
        public OrtValue View(long[] shape)
        {
            long count = shape.Aggregate(1L, (a, d) => a * d);
            if (count > _capacity) throw new InvalidOperationException($"A view of {count} floats over a buffer of {_capacity}.");
            return OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, TensorElementType.Float, shape, (IntPtr)_data, count * sizeof(float));
        }

        public Span<float> Span(long count) => new(_data, checked((int)count));

        public void Dispose()
        {
            NativeMemory.AlignedFree(_data);
            _data = null;
            _capacity = 0;
        }
    }
}

/// <summary>A model produced NaN or infinite outputs from valid inputs: the model is at fault, not the request.</summary>
public sealed class NonFiniteOutputException(string message) : InvalidOperationException(message);
