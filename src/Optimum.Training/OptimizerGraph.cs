using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Optimum.Core;
using Optimum.Onnx;

namespace Optimum.Training;

/// <summary>
/// An <see cref="Optimizer"/>'s update as an ONNX graph over its flat buffers, so that it runs wherever the model runs (a
/// device's memory, through its execution provider). Inputs: <c>param</c>, <c>grad</c> and the state tensors (each the
/// optimizer's slice, shape [L]) and float scalars; outputs <c>param.out</c> and <c>STATE.out</c>, bound with IoBinding to
/// the same memory as the inputs, so the update is in place. That is safe because every node reading an input buffer is
/// an ancestor of the node writing that buffer (an elementwise chain, or a Split that copies the slices first).
/// The arithmetic is the fused C# one's, operation for operation (<see cref="AdamW"/>, <see cref="Sgd"/>); per-parameter
/// weight decay and learning-rate scales make runs of equal coefficients, each computed on its slice (Split, Concat).
/// </summary>
public sealed unsafe class OptimizerGraph : IDisposable
{
    /// <summary>A run [Begin, End) of the slice (offsets from the slice's start) with one decay and lr scale; Frozen runs keep their values.</summary>
    public readonly record struct Run(long Begin, long End, float Decay, float Scale, bool Frozen);

    private readonly Optimizer _opt;
    private readonly InferenceSession _session;
    private readonly RunBinding _binding;
    private readonly RunOptions _runOptions = new();
    private readonly List<OrtValue> _values = [];
    private readonly float[] _lr = new float[1], _stepSize = new float[1], _invSqrtBc2 = new float[1];

    /// <summary>
    /// Where the buffers an optimizer graph updates live: their memory (a device's, <see cref="DeviceState"/>) and the addresses of
    /// the slice's parameters, gradients and state tensors.
    /// </summary>
    internal sealed record Placement(OrtMemoryInfo Memory, nint Params, nint Grads, IReadOnlyList<nint> State);

    /// <summary>
    /// Builds the graph for <paramref name="optimizer"/> and binds its buffers, or those of <paramref name="placement"/> (device
    /// copies of them); the owner of the buffers disposes them after this object, which owns its session.
    /// </summary>
    internal OptimizerGraph(Optimizer optimizer, SessionSettings settings, Placement? placement = null)
    {
        _opt = optimizer;
        long n = optimizer.End - optimizer.Begin;
        if (n == 0) throw new ArgumentException("The optimizer's slice is empty: there is nothing for an optimizer graph to update.");
        var graph = Build(optimizer.Config, optimizer.StateNames, Runs(optimizer), n);
        using var options = settings.CreateOptions();
        try
        {
            // Inside the try: a session that fails to build still releases _runOptions.
            _session = new InferenceSession(ModelWriter.ToBytes(graph), options);
            _binding = new RunBinding(_session, settings.Device.IsCuda);
            var memory = placement?.Memory ?? OrtMemoryInfo.DefaultInstance;
            OrtValue View(float* p) => Keep(OrtValue.CreateTensorValueWithData(memory, TensorElementType.Float, [n], (nint)p, n * sizeof(float)));
            var param = View(placement is null ? optimizer.Store.ParamsPtr + optimizer.Begin : (float*)placement.Params);
            _binding.BindInput("param", param);
            _binding.BindOutput("param.out", param);
            _binding.BindInput("grad", View(placement is null ? optimizer.Store.GradsPtr + optimizer.Begin : (float*)placement.Grads));
            for (int k = 0; k < optimizer.StateNames.Count; k++)
            {
                var state = View(placement is null ? optimizer.StatePtr(k) : (float*)placement.State[k]);
                _binding.BindInput(optimizer.StateNames[k], state);
                _binding.BindOutput(optimizer.StateNames[k] + ".out", state);
            }
            _binding.BindInput("lr", Keep(OrtValue.CreateTensorValueFromMemory(_lr, [])));
            if (optimizer.Config.Kind == OptimizerKind.AdamW)
            {
                _binding.BindInput("step_size", Keep(OrtValue.CreateTensorValueFromMemory(_stepSize, [])));
                _binding.BindInput("inv_sqrt_bc2", Keep(OrtValue.CreateTensorValueFromMemory(_invSqrtBc2, [])));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    private OrtValue Keep(OrtValue v)
    {
        _values.Add(v);
        return v;
    }

    /// <summary>Applies update <paramref name="t"/> (1-based) with learning rate <paramref name="lr"/>: the scalars are computed here in double, as the fused optimizer does.</summary>
    public void Step(long t, double lr)
    {
        _lr[0] = (float)lr;
        _stepSize[0] = (float)(lr / (1 - Math.Pow(_opt.Config.Beta1, t)));
        _invSqrtBc2[0] = (float)(1 / Math.Sqrt(1 - Math.Pow(_opt.Config.Beta2, t)));
        // On a device the scalars (and buffers kept on the host) are bound again: ORT copies host inputs when they are bound.
        _binding.Run(_runOptions);
    }

    /// <summary>
    /// The runs of <paramref name="optimizer"/>'s slice: consecutive parameters with the same decay and lr scale share one;
    /// frozen parameters and the padding after the last trainable one are frozen runs.
    /// </summary>
    public static IReadOnlyList<Run> Runs(Optimizer optimizer)
    {
        var runs = new List<Run>();
        void Add(long b, long e, float decay, float scale, bool frozen)
        {
            if (b >= e) return;
            if (runs.Count > 0 && runs[^1] is var last && last.End == b && last.Frozen == frozen && (frozen || (last.Decay == decay && last.Scale == scale)))
                runs[^1] = last with { End = e };
            else runs.Add(new(b, e, frozen ? 0 : decay, frozen ? 0 : scale, frozen));
        }
        var config = optimizer.Config;
        long at = optimizer.Begin;
        foreach (var s in optimizer.Store.Segments(optimizer.Begin, optimizer.End))
        {
            var p = optimizer.Store.Parameters[s.Index];
            Add(at - optimizer.Begin, s.Begin - optimizer.Begin, 0, 0, frozen: true);
            float decay = config.Decays(p.Name) ? (float)config.WeightDecay : 0f;
            float scale = config.LrScales is { } scales && scales.TryGetValue(p.Name, out var x) ? (float)x : 1f;
            Add(s.Begin - optimizer.Begin, s.End - optimizer.Begin, decay, scale, frozen: !p.Trainable);
            at = s.End;
        }
        Add(at - optimizer.Begin, optimizer.End - optimizer.Begin, 0, 0, frozen: true);
        return runs;
    }

    /// <summary>The update graph of <paramref name="config"/> over a slice of <paramref name="length"/> floats made of <paramref name="runs"/>.</summary>
    public static GraphBuilder Build(OptimizerConfig config, IReadOnlyList<string> stateNames, IReadOnlyList<Run> runs, long length)
    {
        config.Validate();
        if (runs.Count == 0 || runs[0].Begin != 0 || runs[^1].End != length || runs.Zip(runs.Skip(1)).Any(r => r.First.End != r.Second.Begin))
            throw new ArgumentException($"The runs must cover [0, {length}) in order without gaps, got {string.Join(", ", runs.Select(r => $"[{r.Begin}, {r.End})"))}.");
        var g = new GraphBuilder($"{EnumNames.Name(config.Kind)}_step");
        var shape = Shape.Of(length);
        var p = g.Input("param", DType.Float, shape);
        var grad = g.Input("grad", DType.Float, shape);
        var state = stateNames.Select(s => g.Input(s, DType.Float, shape)).ToArray();
        var lr = g.Input("lr", DType.Float, Shape.Scalar);
        Value[]? adam = config.Kind == OptimizerKind.AdamW ? [g.Input("step_size", DType.Float, Shape.Scalar), g.Input("inv_sqrt_bc2", DType.Float, Shape.Scalar)] : null;

        // One slice per run (no Split for a single run: the chain then reads each input once, before it writes it).
        Value[] Slices(Value x) => runs.Count == 1 ? [x] : g.Split(x, 0, [.. runs.Select(r => r.End - r.Begin)]);
        var ps = Slices(p);
        var gs = Slices(grad);
        var ss = state.Select(Slices).ToArray();
        var outP = new Value[runs.Count];
        var outS = stateNames.Select(_ => new Value[runs.Count]).ToArray();
        for (int i = 0; i < runs.Count; i++)
        {
            var r = runs[i];
            if (r.Frozen)
            {
                outP[i] = ps[i];
                for (int k = 0; k < ss.Length; k++) outS[k][i] = ss[k][i];
                continue;
            }
            var si = ss.Select(s => s[i]).ToArray();
            var (np, ns) = config.Kind == OptimizerKind.AdamW
                ? AdamWRun(g, config, ps[i], gs[i], si, lr, adam![0], adam[1], r)
                : SgdRun(g, config, ps[i], gs[i], si, lr, r);
            outP[i] = np;
            for (int k = 0; k < ns.Length; k++) outS[k][i] = ns[k];
        }
        Value Join(Value[] parts, Value input) => parts.Length == 1 ? (parts[0] == input ? g.Identity(input) : parts[0]) : g.Concat(0, parts);
        g.Output(Join(outP, p), "param.out");
        for (int k = 0; k < stateNames.Count; k++) g.Output(Join(outS[k], state[k]), stateNames[k] + ".out");
        return g;
    }

    // m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g g; p = p (1 - lr scale decay) - (step_size scale) m / (sqrt(v) inv_sqrt_bc2 + eps)
    private static (Value, Value[]) AdamWRun(GraphBuilder g, OptimizerConfig c, Value p, Value grad, Value[] s, Value lr, Value stepSize, Value invSqrtBc2, Run r)
    {
        float b1 = (float)c.Beta1, b2 = (float)c.Beta2;
        var m = g.Add(g.Mul(g.Scalar(b1), s[0]), g.Mul(g.Scalar(1 - b1), grad));
        var v = g.Add(g.Mul(g.Scalar(b2), s[1]), g.Mul(g.Mul(g.Scalar(1 - b2), grad), grad));
        var shrink = g.Sub(g.Scalar(1), g.Mul(g.Mul(lr, g.Scalar(r.Scale)), g.Scalar(r.Decay)));
        var step = g.Mul(stepSize, g.Scalar(r.Scale));
        var denom = g.Add(g.Mul(g.Sqrt(v), invSqrtBc2), g.Scalar((float)c.Eps));
        var np = g.Sub(g.Mul(p, shrink), g.Div(g.Mul(step, m), denom));
        return (np, [m, v]);
    }

    // d = g + decay p; buf = mu buf + d; d = nesterov ? d + mu buf : buf; p = p - (lr scale) d
    private static (Value, Value[]) SgdRun(GraphBuilder g, OptimizerConfig c, Value p, Value grad, Value[] s, Value lr, Run r)
    {
        var d = r.Decay != 0 ? g.Add(grad, g.Mul(g.Scalar(r.Decay), p)) : grad;
        var buf = s[0];
        if (c.Momentum != 0)
        {
            var mu = g.Scalar((float)c.Momentum);
            buf = g.Add(g.Mul(mu, buf), d);
            d = c.Nesterov ? g.Add(d, g.Mul(mu, buf)) : buf;
        }
        var np = g.Sub(p, g.Mul(g.Mul(lr, g.Scalar(r.Scale)), d));
        return (np, [buf]);
    }

    public void Dispose()
    {
        _binding?.Dispose();
        _session?.Dispose();
        _runOptions.Dispose();
        foreach (var v in _values) v.Dispose();
        _values.Clear();
    }
}
