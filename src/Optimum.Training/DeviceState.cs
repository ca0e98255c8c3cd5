using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Optimum.Core;
using Optimum.Onnx;

namespace Optimum.Training;

/// <summary>
/// Training state in the memory of the device the sessions run on (<see cref="TrainerOptions.StateOnDevice"/>): parameters,
/// gradients, the gradient accumulator and the optimizer state are flat buffers there, laid out as the
/// <see cref="ParameterStore"/> lays out its own, and the training and eval sessions bind views of them. What the trainer does
/// between the backward pass and the next step (weighting and accumulating micro-batch gradients, unscaling, the gradient
/// norm, clipping, the optimizer update) runs as small ONNX graphs on the same device (<see cref="FlatOps"/>,
/// <see cref="OptimizerGraph"/>), so a step copies to the host only its loss and the squared gradient norm. The host store and
/// optimizer stay as the mirror that checkpoints, exports and ZeRO-1's collectives read and write: <see cref="Download"/> and
/// <see cref="Upload"/> move everything, the narrower methods a region.
/// On the CPU the "device" is host memory from ORT's allocator and every operation is the same graph: that is how CI tests
/// this path. Owns its buffers, views and sessions; dispose it after the sessions that bound the views.
/// </summary>
public sealed unsafe class DeviceState : IDisposable
{
    private readonly ParameterStore _store;
    private readonly Optimizer _opt;
    private readonly FlatOps _ops;
    private readonly Buffer _params, _grads;
    private readonly Buffer? _accum;
    private readonly Buffer[] _state;
    private readonly OrtValue[] _paramViews;
    private readonly OrtValue?[] _gradViews;
    private readonly OptimizerGraph _step;
    private readonly OrtAllocator? _allocator;
    private readonly List<OrtValue> _tensors = [];

    /// <param name="store">The host mirror (its layout, and the weights <see cref="Upload"/> starts from).</param>
    /// <param name="optimizer">The host optimizer: its configuration and slice, and the mirror of its state.</param>
    /// <param name="settings">The sessions' settings; its device is where the buffers live.</param>
    /// <param name="accumulate">Also keep a gradient accumulator (gradient accumulation or several ranks weigh micro-batches).</param>
    public DeviceState(ParameterStore store, Optimizer optimizer, SessionSettings settings, bool accumulate)
    {
        (_store, _opt) = (store, optimizer);
        Memory = DevicePlacement.Of(settings).Resident;            // process-wide, not disposed
        try
        {
            _ops = new FlatOps(settings);
            // CUDA memory comes from the device's allocator of a session on it; the CPU's from ORT's default allocator.
            _allocator = settings.Device.IsCuda ? new OrtAllocator(_ops.AnySession, Memory) : null;
            _params = Allocate(store.Total, "parameters");
            _grads = Allocate(store.Length, "gradients");
            _accum = accumulate ? Allocate(store.Length, "the gradient accumulator") : null;
            _state = Enumerable.Range(0, optimizer.StateNames.Count).Select(k => Allocate(optimizer.End - optimizer.Begin, optimizer.StateNames[k])).ToArray();
            _paramViews = new OrtValue[store.Parameters.Count];
            _gradViews = new OrtValue?[store.Parameters.Count];
            for (int i = 0; i < store.Parameters.Count; i++)
            {
                var p = store.Parameters[i];
                _paramViews[i] = View(_params, store.Offset(i), p.Count, p.Shape);
                if (p.Trainable) _gradViews[i] = View(_grads, store.Offset(i), p.Count, p.Shape);
            }
            _step = new OptimizerGraph(optimizer, settings, new OptimizerGraph.Placement(Memory,
                _params.Pointer + (nint)(optimizer.Begin * sizeof(float)), _grads.Pointer + (nint)(optimizer.Begin * sizeof(float)), _state.Select(s => (nint)s.Pointer).ToArray()));
            // Everything the graphs read must be defined: the padding of the gradients (never written by the backward pass)
            // is zero, as the host's is.
            _ops.Copy(Host(store.GradsPtr, store.Length), Device(_grads, 0, store.Length));
            Upload();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Where the buffers live.</summary>
    public OrtMemoryInfo Memory { get; }
    /// <summary>Bytes held in device memory (parameters, gradients, accumulator, optimizer state).</summary>
    public long Bytes => (_store.Total + _store.Length * (_accum is null ? 1 : 2) + _state.Length * (_opt.End - _opt.Begin)) * sizeof(float);

    /// <summary>The view of parameter <paramref name="i"/> in device memory (owned here).</summary>
    public OrtValue ParamValue(int i) => _paramViews[i];
    /// <summary>The view of the gradient of trainable parameter <paramref name="i"/> in device memory (owned here).</summary>
    public OrtValue GradValue(int i) => _gradViews[i] ?? throw new InvalidOperationException($"Parameter '{_store.Parameters[i].Name}' is not trained: it has no gradient.");

    private readonly record struct Buffer(nint Pointer, long Length);

    private Buffer Allocate(long floats, string what)
    {
        long bytes = Math.Max(1, floats) * sizeof(float);
        if (_allocator is null)
        {
            var p = NativeMemory.AlignedAlloc((nuint)bytes, 64);
            NativeMemory.Clear(p, (nuint)bytes);
            _host.Add((nint)p);
            return new((nint)p, floats);
        }
        // A tensor allocated by the device's allocator (a 64-bit size, unlike OrtAllocator.Allocate); its address is read through
        // a span that is never dereferenced, whose length limits a buffer to 2^31 - 1 floats.
        if (floats > int.MaxValue)
            throw new NotSupportedException($"{what}: {floats:N0} floats on {Memory.Name} is more than one buffer holds here (2^31 - 1); train with --state-on-device off.");
        var value = OrtValue.CreateAllocatedTensorValue(_allocator, TensorElementType.Float, [Math.Max(1, floats)]);
        _tensors.Add(value);
        return new((nint)System.Runtime.CompilerServices.Unsafe.AsPointer(ref MemoryMarshal.GetReference(value.GetTensorMutableDataAsSpan<float>())), floats);
    }

    private readonly List<nint> _host = [];

    private OrtValue View(Buffer b, long offset, long count, long[] shape) =>
        OrtValue.CreateTensorValueWithData(Memory, TensorElementType.Float, shape, b.Pointer + (nint)(offset * sizeof(float)), count * sizeof(float));

    private FlatOps.Region Device(Buffer b, long offset, long count) => new(Memory, b.Pointer + (nint)(offset * sizeof(float)), count);
    private static FlatOps.Region Host(float* p, long count) => new(OrtMemoryInfo.DefaultInstance, (nint)p, count);

    /// <summary>Host mirror → device: every parameter and the optimizer state (after loading weights or a checkpoint).</summary>
    public void Upload()
    {
        _ops.Copy(Host(_store.ParamsPtr, _store.Total), Device(_params, 0, _store.Total));
        for (int k = 0; k < _state.Length; k++) _ops.Copy(Host(_opt.StatePtr(k), _opt.End - _opt.Begin), Device(_state[k], 0, _opt.End - _opt.Begin));
    }

    /// <summary>Device → host mirror: every parameter and the optimizer state (before a checkpoint, an export or an evaluation on the host).</summary>
    public void Download()
    {
        _ops.Copy(Device(_params, 0, _store.Total), Host(_store.ParamsPtr, _store.Total));
        for (int k = 0; k < _state.Length; k++) _ops.Copy(Device(_state[k], 0, _opt.End - _opt.Begin), Host(_opt.StatePtr(k), _opt.End - _opt.Begin));
    }

    /// <summary>Host mirror → device for the parameters in [<paramref name="begin"/>, <paramref name="end"/>) of the flat buffer.</summary>
    public void UploadParams(long begin, long end) => _ops.Copy(Host(_store.ParamsPtr + begin, end - begin), Device(_params, begin, end - begin));
    /// <summary>Device → host mirror for the parameters in [<paramref name="begin"/>, <paramref name="end"/>).</summary>
    public void DownloadParams(long begin, long end) => _ops.Copy(Device(_params, begin, end - begin), Host(_store.ParamsPtr + begin, end - begin));
    /// <summary>Device → host mirror: the whole gradient buffer (ZeRO-1's reduce-scatter reads the host's).</summary>
    public void DownloadGrads() => _ops.Copy(Device(_grads, 0, _store.Length), Host(_store.GradsPtr, _store.Length));
    /// <summary>Host mirror → device for the gradients in [<paramref name="begin"/>, <paramref name="end"/>).</summary>
    public void UploadGrads(long begin, long end) => _ops.Copy(Host(_store.GradsPtr + begin, end - begin), Device(_grads, begin, end - begin));

    /// <summary>A micro-batch's gradients, weighted by <paramref name="weight"/>, into the accumulator (the first one replaces it).</summary>
    public void Accumulate(float weight, bool first)
    {
        var acc = Device(_accum ?? throw new InvalidOperationException("This state keeps no gradient accumulator."), 0, _store.Length);
        var g = Device(_grads, 0, _store.Length);
        if (first) _ops.Scale(g, weight, acc);
        else _ops.Axpy(g, weight, acc);
    }

    /// <summary>The accumulated gradients, times <paramref name="scale"/>, become the gradients.</summary>
    public void TakeAccumulated(float scale) => _ops.Scale(Device(_accum!.Value, 0, _store.Length), scale, Device(_grads, 0, _store.Length));

    /// <summary>Multiplies the gradients in [<paramref name="begin"/>, <paramref name="end"/>) by <paramref name="scale"/>, in place.</summary>
    public void ScaleGrads(long begin, long end, float scale)
    {
        var r = Device(_grads, begin, end - begin);
        _ops.Scale(r, scale, r);
    }

    /// <summary>The sum of the squared gradients in [<paramref name="begin"/>, <paramref name="end"/>) (one float copied to the host).</summary>
    public double SumSquares(long begin, long end) => _ops.SumSquares(Device(_grads, begin, end - begin));

    /// <summary>Update <paramref name="t"/> of the optimizer's slice, in device memory.</summary>
    public void Step(long t, double lr) => _step.Step(t, lr);

    /// <summary>Copies host array <paramref name="values"/> into parameter <paramref name="i"/> on the device (a buffer the forward pass updated).</summary>
    public void SetParam(int i, float[] values)
    {
        fixed (float* p = values) _ops.Copy(Host(p, values.Length), Device(_params, _store.Offset(i), _store.Parameters[i].Count));
    }

    public void Dispose()
    {
        _step?.Dispose();
        foreach (var v in _paramViews ?? []) v?.Dispose();
        foreach (var v in _gradViews ?? []) v?.Dispose();
        foreach (var t in _tensors) t.Dispose();
        _tensors.Clear();
        foreach (var p in _host) NativeMemory.AlignedFree((void*)p);
        _host.Clear();
        _allocator?.Dispose();
        _ops?.Dispose();
    }
}

/// <summary>
/// Elementwise operations over flat float32 buffers of any length as ONNX graphs (a symbolic length), each in one session on a
/// device, bound with IoBinding to views of the buffers: a copy (<see cref="DeviceCopy"/>, also between host and device memory),
/// y = s·x (in place when y is x), y += a·x, and the sum of squares (into a host float).
/// </summary>
internal sealed unsafe class FlatOps : IDisposable
{
    /// <summary>A region of a flat float buffer in <paramref name="Memory"/>.</summary>
    public readonly record struct Region(OrtMemoryInfo Memory, nint Pointer, long Length);

    private readonly DeviceCopy _copy;
    private readonly Op _scale, _axpy, _sumsq;
    private readonly float[] _scalar = new float[1], _sum = new float[1];
    private readonly OrtValue _scalarValue, _sumValue;
    private readonly RunOptions _run = new();

    public FlatOps(SessionSettings settings)
    {
        _scalarValue = OrtValue.CreateTensorValueFromMemory(_scalar, []);
        _sumValue = OrtValue.CreateTensorValueFromMemory(_sum, []);
        try
        {
            using var options = settings.CreateOptions();
            _copy = new DeviceCopy(settings);
            _scale = new Op(Graph("scale", (g, x, s) => g.Mul(x, s)), options);
            _axpy = new Op(Graph("axpy", (g, x, a) => g.Add(g.Mul(x, a), g.Input("y", DType.Float, Shape.Of(Dim.Sym("n"))))), options);
            _sumsq = new Op(Graph("sumsq", (g, x) => g.ReduceSumSquare(x, [], keepDims: false)), options);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>A session on the device (for its allocator).</summary>
    public InferenceSession AnySession => _copy.Session;

    /// <summary>A graph of input x (length n) and output "out" = <paramref name="body"/>.</summary>
    private static byte[] Graph(string name, Func<GraphBuilder, Value, Value> body)
    {
        var g = new GraphBuilder("flat_" + name);
        g.Output(body(g, g.Input("x", DType.Float, Shape.Of(Dim.Sym("n")))), "out");
        return ModelWriter.ToBytes(g);
    }

    /// <summary>As <see cref="Graph(string, Func{GraphBuilder, Value, Value})"/> with a float scalar input s as well.</summary>
    private static byte[] Graph(string name, Func<GraphBuilder, Value, Value, Value> body) =>
        Graph(name, (g, x) => body(g, x, g.Input("s", DType.Float, Shape.Scalar)));

    private sealed class Op(byte[] model, SessionOptions options) : IDisposable
    {
        public InferenceSession Session { get; } = new(model, options);
        public OrtIoBinding Binding => _binding ??= Session.CreateIoBinding();
        private OrtIoBinding? _binding;

        public void Dispose()
        {
            _binding?.Dispose();
            Session.Dispose();
        }
    }

    private static OrtValue View(Region r) =>
        OrtValue.CreateTensorValueWithData(r.Memory, TensorElementType.Float, [r.Length], r.Pointer, r.Length * sizeof(float));

    private void Run(Op op, Region x, Region? y, Region output, float? s = null)
    {
        using var xv = View(x);
        using var yv = y is { } yr ? View(yr) : null;
        using var ov = View(output);
        op.Binding.BindInput("x", xv);
        if (yv is not null) op.Binding.BindInput("y", yv);
        if (s is { } scalar)
        {
            _scalar[0] = scalar;
            op.Binding.BindInput("s", _scalarValue);
        }
        op.Binding.BindOutput("out", ov);
        op.Session.RunWithBinding(_run, op.Binding);
        op.Binding.SynchronizeBoundOutputs();
    }

    /// <summary>to = from (same length; between host and device memory too).</summary>
    public void Copy(Region from, Region to)
    {
        if (from.Length != to.Length) throw new ArgumentException($"Copy of {from.Length} floats into {to.Length}.");
        _copy.Copy(from.Memory, from.Pointer, to.Memory, to.Pointer, from.Length);
    }

    /// <summary>y = s · x (y may be x).</summary>
    public void Scale(Region x, float s, Region y)
    {
        if (x.Length != y.Length) throw new ArgumentException($"Scale of {x.Length} floats into {y.Length}.");
        if (x.Length > 0) Run(_scale, x, null, y, s);
    }

    /// <summary>y = y + a · x, in place in y.</summary>
    public void Axpy(Region x, float a, Region y)
    {
        if (x.Length != y.Length) throw new ArgumentException($"Axpy of {x.Length} floats into {y.Length}.");
        if (x.Length > 0) Run(_axpy, x, y, y, a);
    }

    /// <summary>The sum of the squares of <paramref name="x"/>, accumulated by the device in float32.</summary>
    public double SumSquares(Region x)
    {
        if (x.Length == 0) return 0;
        using var xv = View(x);
        var b = _sumsq.Binding;
        b.BindInput("x", xv);
        b.BindOutput("out", _sumValue);
        _sumsq.Session.RunWithBinding(_run, b);
        b.SynchronizeBoundOutputs();
        return _sum[0];
    }

    public void Dispose()
    {
        _copy?.Dispose();
        _scale?.Dispose();
        _axpy?.Dispose();
        _sumsq?.Dispose();
        _scalarValue?.Dispose();
        _sumValue?.Dispose();
        _run.Dispose();
    }
}
