using Optimum.Onnx;
using Optimum.Tests;

namespace Optimum.Onnx.Tests;

/// <summary>How a test input is generated.</summary>
internal enum Gen { Normal, Positive, AwayFromZero }

/// <summary>
/// One input of a gradient check. Differentiable inputs become parameters (perturbed by finite
/// differences); the others are baked in as constants (indices, labels, masks, running stats).
/// </summary>
internal sealed record In(long[] Dims, bool Diff = true, Gen Gen = Gen.Normal, double[]? Values = null, DType? Type = null, Shape? Declared = null)
{
    public static In P(params long[] dims) => new(dims);
    public static In Pos(params long[] dims) => new(dims, Gen: Gen.Positive);
    public static In Away(params long[] dims) => new(dims, Gen: Gen.AwayFromZero);
    public static In Ints(long[] values, params long[] dims) => new(dims, Diff: false, Values: values.Select(v => (double)v).ToArray(), Type: DType.Int64);
    public static In Bools(bool[] values, params long[] dims) => new(dims, Diff: false, Values: values.Select(v => v ? 1.0 : 0).ToArray(), Type: DType.Bool);
    public static In Const(In i) => i with { Diff = false };
    /// <summary>Declared to the graph with symbolic dims; fed with <see cref="Dims"/>.</summary>
    public In As(params Dim[] declared) => this with { Declared = new Shape(declared) };
}

/// <summary>
/// A gradient check of one rule: <see cref="Build"/> applies the op to the inputs; every floating
/// output enters the loss as <c>sum(out * w)</c> with fixed, position-dependent weights.
/// </summary>
internal sealed record GradCase(string Op, string Label, In[] Inputs, Func<GraphBuilder, Value[], Value[]> Build, DType Type = DType.Double, bool FreshSessions = false)
{
    public override string ToString() => Label;
}

internal sealed record GradCheckResult(double MaxAbsError, double MaxRelError, double WorstRatio, int Checked);

internal static class GradCheck
{
    /// <summary>Finite-difference step and tolerance (|analytic - fd| &lt;= Atol + Rtol * |fd|) per precision.</summary>
    public static (double Eps, double Atol, double Rtol) Tolerance(DType t) => t == DType.Double ? (1e-6, 1e-7, 1e-6) : (1e-3, 1e-3, 1e-2);

    public static GradCheckResult Run(GradCase c, int seed = 1234)
    {
        var rng = new Random(seed);
        var data = c.Inputs.Select(i => i.Values ?? Enumerable.Range(0, (int)i.Dims.Aggregate(1L, (a, b) => a * b)).Select(_ => Sample(i.Gen, rng)).ToArray()).ToArray();
        var train = Graph(c, data, withGradients: true);
        var eval = Graph(c, data, withGradients: false);
        var diff = Enumerable.Range(0, c.Inputs.Length).Where(i => c.Inputs[i].Diff).ToArray();

        Dictionary<string, HostTensor> Feeds(double[][] d) => diff.ToDictionary(i => $"x{i}", i => new HostTensor(d[i], c.Inputs[i].Dims, c.Type));

        Dictionary<string, double[]> analytic;
        using (var m = new OrtModel(train)) analytic = m.Run(Feeds(data));

        var (eps, atol, rtol) = Tolerance(c.Type);
        OrtModel? shared = c.FreshSessions ? null : new OrtModel(eval);
        double Loss(double[][] d)
        {
            if (shared is not null) return shared.Run(Feeds(d))["loss"][0];
            using var fresh = new OrtModel(eval);
            return fresh.Run(Feeds(d))["loss"][0];
        }
        try
        {
            double maxAbs = 0, maxRel = 0, worst = 0;
            int n = 0;
            foreach (var i in diff)
            {
                var grad = analytic[$"grad.x{i}"];
                for (int k = 0; k < data[i].Length; k++)
                {
                    var plus = data.Select(a => (double[])a.Clone()).ToArray();
                    var minus = data.Select(a => (double[])a.Clone()).ToArray();
                    plus[i][k] += eps;
                    minus[i][k] -= eps;
                    double fd = (Loss(plus) - Loss(minus)) / (2 * eps);
                    double err = Math.Abs(grad[k] - fd);
                    maxAbs = Math.Max(maxAbs, err);
                    maxRel = Math.Max(maxRel, err / Math.Max(Math.Abs(fd), 1e-3));
                    worst = Math.Max(worst, err / (atol + rtol * Math.Abs(fd)));
                    n++;
                }
            }
            return new GradCheckResult(maxAbs, maxRel, worst, n);
        }
        finally
        {
            shared?.Dispose();
        }
    }

    private static double Sample(Gen g, Random r) => g switch
    {
        Gen.Positive => 0.5 + 1.5 * r.NextDouble(),
        Gen.AwayFromZero => (0.2 + r.NextDouble()) * (r.Next(2) == 0 ? -1 : 1),
        _ => Rand.Normal(r),
    };

    /// <summary>The graph for a case: parameters x{i}, the op, and loss = sum_j sum(cast(out_j, double) * w_j).</summary>
    internal static GraphBuilder Graph(GradCase c, double[][] data, bool withGradients)
    {
        var g = new GraphBuilder(c.Op);
        var xs = c.Inputs.Select((inp, i) => inp.Diff
            ? g.Parameter($"x{i}", inp.Declared ?? new Shape(inp.Dims.Select(Dim.Of)), c.Type)
            : g.Constant(TensorData.FromNumbers(inp.Type ?? c.Type, data[i], inp.Dims), $"c{i}")).ToArray();
        var outs = c.Build(g, xs);
        Value? loss = null;
        foreach (var o in outs.Where(o => o.Type.IsFloating()))
        {
            var y = o.Type == DType.Double ? o : g.Cast(o, DType.Double);
            var term = g.ReduceSum(y * Weights(g, y), [], keepDims: false);
            loss = loss is null ? term : loss + term;
        }
        if (loss is null) throw new InvalidOperationException($"Case {c.Label} has no floating output.");
        if (withGradients) TrainingGraph.AddGradientOutputs(g, loss);
        else g.Output(loss, "loss");
        return g;
    }

    /// <summary>w = sin(1.7 * position + 0.3), shaped like <paramref name="y"/> (works for symbolic shapes).</summary>
    private static Value Weights(GraphBuilder g, Value y)
    {
        var shape = g.ShapeOf(y);
        var n = g.ReduceProd(shape, [0], keepDims: false);
        var pos = g.Cast(g.Range(g.Scalar(0, DType.Int64), n, g.Scalar(1, DType.Int64)), DType.Double);
        return g.Reshape(g.Sin(pos * 1.7 + 0.3), shape);
    }
}
