using System.Numerics;
using System.Runtime.InteropServices;
using Optimum.Hub;

using Optimum.Core;

namespace Optimum.Training;

/// <summary>Which optimizer steps the parameters (command-line and checkpoint names: adamw, sgd).</summary>
public enum OptimizerKind
{
    /// <summary>torch.optim.AdamW.</summary>
    AdamW,
    /// <summary>torch.optim.SGD with momentum (and Nesterov).</summary>
    Sgd,
}

/// <summary>Optimizer hyper-parameters (PyTorch names and defaults where they exist).</summary>
public sealed record OptimizerConfig
{
    public OptimizerKind Kind { get; init; } = OptimizerKind.AdamW;
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.999;
    public double Eps { get; init; } = 1e-8;
    public double WeightDecay { get; init; } = 0.01;
    /// <summary>SGD momentum (0 = plain SGD).</summary>
    public double Momentum { get; init; } = 0.9;
    public bool Nesterov { get; init; }
    /// <summary>When false, biases and LayerNorm weights are not decayed (as HF Trainer does).</summary>
    public bool DecayAll { get; init; }
    /// <summary>
    /// Learning-rate multipliers by exact parameter name (PyTorch's param groups with their own lr); others get 1.
    /// With 0 a parameter keeps its value: AdamW's decoupled decay is lr × weight decay, so it stops too.
    /// </summary>
    public IReadOnlyDictionary<string, double>? LrScales { get; init; }

    public void Validate()
    {
        if (!Enum.IsDefined(Kind)) throw new ArgumentException($"Optimizer {(int)Kind} is not one of {string.Join(", ", EnumNames.Names<OptimizerKind>())}.");
        if (Beta1 is < 0 or >= 1 || Beta2 is < 0 or >= 1) throw new ArgumentException($"Betas must be in [0, 1), got ({Beta1}, {Beta2}).");
        if (Eps <= 0 || WeightDecay < 0 || Momentum is < 0 or >= 1) throw new ArgumentException($"Invalid eps {Eps}, weight decay {WeightDecay} or momentum {Momentum}.");
        if (LrScales?.FirstOrDefault(s => !(double.IsFinite(s.Value) && s.Value >= 0)) is { Key: not null } bad)
            throw new ArgumentException($"The learning-rate scale of '{bad.Key}' is {bad.Value}; it must be a finite number >= 0.");
    }

    /// <summary>HF Trainer's rule: no decay for biases and LayerNorm (ln_*, layer_norm, LayerNorm) weights.</summary>
    public bool Decays(string parameter) => DecayAll || !(parameter.EndsWith("bias", StringComparison.Ordinal)
        || parameter.Contains("ln_", StringComparison.Ordinal) || parameter.Contains("layer_norm", StringComparison.OrdinalIgnoreCase)
        || parameter.Contains("layernorm", StringComparison.OrdinalIgnoreCase));
}

/// <summary>
/// An optimizer over the slice [Begin, End) of a <see cref="ParameterStore"/>'s flat buffers (the
/// whole buffer, or one ZeRO-1 shard). Its state is flat native memory laid out like the slice; each
/// update is one fused, vectorised pass per parameter segment, spread over the cores.
/// </summary>
public abstract unsafe class Optimizer : IDisposable
{
    private const long Chunk = 1 << 16;
    private readonly nint[] _state;
    private readonly (int Param, long Begin, long End, float Decay, float Scale)[] _work;

    protected Optimizer(ParameterStore store, OptimizerConfig config, long begin, long end, string[] stateNames)
    {
        config.Validate();
        if (begin < 0 || end > store.Length || begin > end) throw new ArgumentOutOfRangeException(nameof(begin), $"Slice [{begin}, {end}) is outside the buffer of {store.Length}.");
        Store = store;
        Config = config;
        Begin = begin;
        End = end;
        StateNames = stateNames;
        _state = new nint[stateNames.Length];
        for (int k = 0; k < _state.Length; k++)
        {
            var p = NativeMemory.AlignedAlloc((nuint)Math.Max(1, (end - begin) * sizeof(float)), 64);
            NativeMemory.Clear(p, (nuint)((end - begin) * sizeof(float)));
            _state[k] = (nint)p;
        }
        _work = store.Segments(begin, end).Where(s => store.Parameters[s.Index].Trainable).SelectMany(s =>
        {
            var name = store.Parameters[s.Index].Name;
            float decay = config.Decays(name) ? (float)config.WeightDecay : 0f;
            float scale = config.LrScales is { } scales && scales.TryGetValue(name, out var x) ? (float)x : 1f;
            var parts = new List<(int, long, long, float, float)>();
            for (long b = s.Begin; b < s.End; b += Chunk) parts.Add((s.Index, b, Math.Min(s.End, b + Chunk), decay, scale));
            return parts;
        }).ToArray();
    }

    public ParameterStore Store { get; }
    public OptimizerConfig Config { get; }
    public long Begin { get; }
    public long End { get; }
    /// <summary>State tensors per parameter, by PyTorch name (exp_avg, exp_avg_sq, momentum_buffer).</summary>
    public IReadOnlyList<string> StateNames { get; }
    /// <summary>Bytes of optimizer state held (for ZeRO-1 reports).</summary>
    public long StateBytes => StateNames.Count * (End - Begin) * sizeof(float);

    /// <summary>State <paramref name="k"/> over the slice.</summary>
    public Span<float> State(int k) => new((float*)_state[k], checked((int)(End - Begin)));
    internal float* StatePtr(int k) => (float*)_state[k];

    private OptimizerGraph? _graph;

    /// <summary>
    /// From now on, steps run as an ONNX graph (<see cref="OptimizerGraph"/>) in a session made with <paramref name="settings"/>
    /// (its device), over the same buffers and state; the results equal the fused C# update's to float rounding. On the CPU
    /// the fused update is faster; the graph is for devices. This optimizer disposes the graph.
    /// </summary>
    public void UseGraph(SessionSettings settings)
    {
        _graph?.Dispose();
        _graph = null;
        _graph = new OptimizerGraph(this, settings);
    }

    /// <summary>Whether steps run as an ONNX graph (<see cref="UseGraph"/>).</summary>
    public bool RunsAsGraph => _graph is not null;

    /// <summary>Applies update number <paramref name="t"/> (1-based, for bias correction) with learning rate <paramref name="lr"/>.</summary>
    public void Step(long t, double lr)
    {
        if (t < 1) throw new ArgumentOutOfRangeException(nameof(t), t, "Update numbers start at 1.");
        if (_graph is not null)
        {
            _graph.Step(t, lr);
            return;
        }
        Prepare(t, lr);
        Parallel.For(0, _work.Length, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, i =>
        {
            var (_, b, e, decay, scale) = _work[i];
            int n = (int)(e - b);
            var state = new float*[_state.Length];
            for (int k = 0; k < state.Length; k++) state[k] = (float*)_state[k] + (b - Begin);
            Update(new Span<float>(Store.ParamsPtr + b, n), new ReadOnlySpan<float>(Store.GradsPtr + b, n), state, n, decay, scale);
        });
    }

    protected abstract void Prepare(long t, double lr);
    /// <summary>Updates one segment; <paramref name="scale"/> multiplies the learning rate (<see cref="OptimizerConfig.LrScales"/>).</summary>
    protected abstract void Update(Span<float> p, ReadOnlySpan<float> g, float*[] state, int n, float decay, float scale);

    public static Optimizer Create(ParameterStore store, OptimizerConfig config, long begin = 0, long end = -1) => config.Kind switch
    {
        OptimizerKind.AdamW => new AdamW(store, config, begin, end < 0 ? store.Length : end),
        OptimizerKind.Sgd => new Sgd(store, config, begin, end < 0 ? store.Length : end),
        var k => throw new ArgumentException($"Optimizer {(int)k} is not one of {string.Join(", ", EnumNames.Names<OptimizerKind>())}."),
    };

    public void Dispose()
    {
        _graph?.Dispose();
        _graph = null;
        foreach (var p in _state) NativeMemory.AlignedFree((void*)p);
        GC.SuppressFinalize(this);
    }
}

/// <summary>torch.optim.AdamW: decoupled weight decay, bias-corrected moments, eps added to sqrt(v̂).</summary>
public sealed unsafe class AdamW(ParameterStore store, OptimizerConfig config, long begin, long end)
    : Optimizer(store, config, begin, end, ["exp_avg", "exp_avg_sq"])
{
    private float _lr, _stepSize, _invSqrtBc2;

    protected override void Prepare(long t, double lr)
    {
        _lr = (float)lr;
        _stepSize = (float)(lr / (1 - Math.Pow(Config.Beta1, t)));
        _invSqrtBc2 = (float)(1 / Math.Sqrt(1 - Math.Pow(Config.Beta2, t)));
    }

    protected override void Update(Span<float> p, ReadOnlySpan<float> g, float*[] state, int n, float decay, float scale)
    {
        var m = new Span<float>(state[0], n);
        var v = new Span<float>(state[1], n);
        float b1 = (float)Config.Beta1, b2 = (float)Config.Beta2, eps = (float)Config.Eps, shrink = 1 - _lr * scale * decay, stepSize = _stepSize * scale;
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var vp = MemoryMarshal.Cast<float, Vector<float>>(p);
            var vg = MemoryMarshal.Cast<float, Vector<float>>(g);
            var vm = MemoryMarshal.Cast<float, Vector<float>>(m);
            var vv = MemoryMarshal.Cast<float, Vector<float>>(v);
            Vector<float> B1 = new(b1), B2 = new(b2), C1 = new(1 - b1), C2 = new(1 - b2), E = new(eps), S = new(stepSize), Q = new(_invSqrtBc2), D = new(shrink);
            for (int k = 0; k < vp.Length; k++)
            {
                var gk = vg[k];
                var mk = B1 * vm[k] + C1 * gk;
                var vk = B2 * vv[k] + C2 * gk * gk;
                vm[k] = mk;
                vv[k] = vk;
                vp[k] = vp[k] * D - S * mk / (Vector.SquareRoot(vk) * Q + E);
            }
            i = vp.Length * Vector<float>.Count;
        }
        for (; i < n; i++)
        {
            m[i] = b1 * m[i] + (1 - b1) * g[i];
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
            p[i] = p[i] * shrink - stepSize * m[i] / (MathF.Sqrt(v[i]) * _invSqrtBc2 + eps);
        }
    }
}

/// <summary>torch.optim.SGD: L2 weight decay added to the gradient, momentum without dampening, optional Nesterov.</summary>
public sealed unsafe class Sgd(ParameterStore store, OptimizerConfig config, long begin, long end)
    : Optimizer(store, config, begin, end, ["momentum_buffer"])
{
    private float _lr;

    protected override void Prepare(long t, double lr) => _lr = (float)lr;

    protected override void Update(Span<float> p, ReadOnlySpan<float> g, float*[] state, int n, float decay, float scale)
    {
        var buf = new Span<float>(state[0], n);
        float mu = (float)Config.Momentum, lr = _lr * scale;
        for (int i = 0; i < n; i++)
        {
            float d = g[i] + decay * p[i];
            if (mu != 0)
            {
                buf[i] = mu * buf[i] + d;
                d = Config.Nesterov ? d + mu * buf[i] : buf[i];
            }
            p[i] -= lr * d;
        }
    }
}
