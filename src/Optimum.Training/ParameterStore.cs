using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Optimum.Hub;
using Optimum.Core;

namespace Optimum.Training;

/// <summary>
/// All parameters in one 64-byte-aligned native float buffer and the gradients of the trainable ones in another.
/// Trainable parameters come first, contiguously in graph order: trainable parameter i occupies
/// [Offset(i), Offset(i) + Count(i)) of both buffers. That region is cut into <c>shards</c> contiguous shards of
/// ceil(T / shards) floats (T = trainable floats; the tail is zero padding), so the layout of the trainable region does
/// not depend on the shard count and re-sharding is re-slicing. Parameters that are not trained (buffers such as BatchNorm
/// running statistics, and frozen parameters) follow the padding, in graph order, and have no gradient: ZeRO-1 shards,
/// reduces, clips and steps only the trainable region. Each parameter and gradient has an <see cref="OrtValue"/> that is
/// a view into its buffer, so ONNX Runtime reads parameters and writes gradients in place. The store owns the buffers and
/// the views; dispose it after every session that bound them.
/// </summary>
public sealed unsafe class ParameterStore : IDisposable
{
    private readonly long[] _offsets;
    private readonly float* _params;
    private readonly float* _grads;
    private readonly OrtValue[] _paramViews;
    private readonly OrtValue?[] _gradViews;
    private bool _disposed;

    public ParameterStore(IReadOnlyList<ParameterInfo> parameters, int shards = 1)
    {
        if (parameters.Count == 0) throw new ArgumentException("A model needs at least one parameter.", nameof(parameters));
        if (shards < 1) throw new ArgumentOutOfRangeException(nameof(shards), shards, "Shard count must be positive.");
        Parameters = parameters;
        _offsets = new long[parameters.Count];
        long at = 0;
        for (int i = 0; i < parameters.Count; i++)
        {
            if (!parameters[i].Trainable) continue;
            _offsets[i] = at;
            at += parameters[i].Count;
        }
        Used = at;
        ShardLength = (at + shards - 1) / shards;
        Length = ShardLength * shards;
        Shards = shards;
        at = Length;
        for (int i = 0; i < parameters.Count; i++)
        {
            if (parameters[i].Trainable) continue;
            _offsets[i] = at;
            at += parameters[i].Count;
        }
        Total = at;
        nuint bytes = (nuint)(Total * sizeof(float)), gradBytes = (nuint)(Length * sizeof(float));
        _params = (float*)NativeMemory.AlignedAlloc(Math.Max(bytes, 1), 64);
        _grads = (float*)NativeMemory.AlignedAlloc(Math.Max(gradBytes, 1), 64);
        NativeMemory.Clear(_params, bytes);
        NativeMemory.Clear(_grads, gradBytes);
        _paramViews = new OrtValue[parameters.Count];
        _gradViews = new OrtValue?[parameters.Count];
        for (int i = 0; i < parameters.Count; i++)
        {
            long len = parameters[i].Count * sizeof(float);
            _paramViews[i] = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, TensorElementType.Float, parameters[i].Shape, (nint)(_params + _offsets[i]), len);
            if (parameters[i].Trainable)
                _gradViews[i] = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, TensorElementType.Float, parameters[i].Shape, (nint)(_grads + _offsets[i]), len);
        }
    }

    public IReadOnlyList<ParameterInfo> Parameters { get; }
    /// <summary>Length in floats of the trainable (sharded) region and of the gradient buffer (padded).</summary>
    public long Length { get; }
    /// <summary>Trainable floats T (before the padding).</summary>
    public long Used { get; }
    /// <summary>Length in floats of the parameter buffer: the trainable region, then the parameters that are not trained.</summary>
    public long Total { get; }
    public int Shards { get; }
    /// <summary>Floats per shard: ceil(P / shards).</summary>
    public long ShardLength { get; }
    /// <summary>Shard <paramref name="rank"/> as [begin, end) of the flat buffer.</summary>
    public (long Begin, long End) Shard(int rank) => (rank * ShardLength, (rank + 1) * ShardLength);
    public long Offset(int i) => _offsets[i];

    public float* ParamsPtr => _params;
    public float* GradsPtr => _grads;
    /// <summary>The trainable (sharded) region of the parameter buffer, padding included.</summary>
    public Span<float> AllParams => new(_params, checked((int)Length));
    /// <summary>The whole parameter buffer: the trainable region, then the parameters that are not trained.</summary>
    public Span<float> AllValues => new(_params, checked((int)Total));
    public Span<float> AllGrads => new(_grads, checked((int)Length));
    public Span<float> Param(int i) => new(_params + _offsets[i], checked((int)Parameters[i].Count));
    /// <summary>The gradient of trainable parameter <paramref name="i"/>; a parameter that is not trained has none.</summary>
    public Span<float> Grad(int i) => Parameters[i].Trainable ? new(_grads + _offsets[i], checked((int)Parameters[i].Count))
        : throw new InvalidOperationException($"Parameter '{Parameters[i].Name}' is not trained (a buffer or frozen): it has no gradient.");

    /// <summary>The view of parameter <paramref name="i"/>; owned by the store.</summary>
    public OrtValue ParamValue(int i) => _paramViews[i];
    /// <summary>The view of gradient <paramref name="i"/>; owned by the store.</summary>
    public OrtValue GradValue(int i) => _gradViews[i]
        ?? throw new InvalidOperationException($"Parameter '{Parameters[i].Name}' is not trained (a buffer or frozen): it has no gradient.");

    /// <summary>Copies weights in (graph order); sizes are checked against the parameter list.</summary>
    public void Load(IReadOnlyList<float[]> weights)
    {
        if (weights.Count != Parameters.Count) throw new ArgumentException($"{weights.Count} weight arrays for {Parameters.Count} parameters.");
        for (int i = 0; i < weights.Count; i++)
        {
            if (weights[i].LongLength != Parameters[i].Count)
                throw new ArgumentException($"Parameter '{Parameters[i].Name}' needs {Parameters[i].Count} values, got {weights[i].LongLength}.");
            weights[i].CopyTo(Param(i));
        }
    }

    /// <summary>A copy of the weights (graph order).</summary>
    public float[][] Export() => Enumerable.Range(0, Parameters.Count).Select(i => Param(i).ToArray()).ToArray();

    /// <summary>Index of the parameters overlapping [begin, end) of the flat buffer, with the overlap.</summary>
    public IEnumerable<(int Index, long Begin, long End)> Segments(long begin, long end)
    {
        for (int i = 0; i < Parameters.Count; i++)
        {
            long b = Math.Max(begin, _offsets[i]), e = Math.Min(end, _offsets[i] + Parameters[i].Count);
            if (b < e) yield return (i, b, e);
        }
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var v in _paramViews) v.Dispose();
        foreach (var v in _gradViews) v?.Dispose();
        NativeMemory.AlignedFree(_params);
        NativeMemory.AlignedFree(_grads);
    }
}
