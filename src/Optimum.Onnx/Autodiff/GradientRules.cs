namespace Optimum.Onnx;

/// <summary>
/// One gradient rule per ONNX op, in one table sorted by op type. A rule returns one gradient per
/// input (null where there is none: indices, shapes, masks). Longer rules are private methods below
/// (and in GradientRules.NN.cs), in the same order. Every rule is checked against finite differences
/// by the table-driven test in tests/Optimum.Onnx.Tests.
/// </summary>
public static partial class GradientRules
{
    /// <summary>The rules, keyed by ONNX op type (ai.onnx domain).</summary>
    public static IReadOnlyDictionary<string, GradientRule> Table { get; } = new SortedDictionary<string, GradientRule>(StringComparer.Ordinal)
    {
        ["Abs"] = c => [c.Dy * c.G.Sign(c.X(0))],
        ["Add"] = c => [c.SumTo(c.Dy, c.X(0)), c.SumTo(c.Dy, c.X(1))],
        ["BatchNormalization"] = BatchNormalization,
        ["Cast"] = c => [c.X(0).Type.IsFloating() ? c.G.Cast(c.Dy, c.X(0).Type) : null],
        ["Concat"] = Concat,
        ["Conv"] = Conv,
        ["Cos"] = c => [-(c.Dy * c.G.Sin(c.X(0)))],
        ["CumSum"] = c => [c.G.CumSum(c.Dy, CumSumAxis(c), exclusive: c.Node.GetInt("exclusive", 0) == 1, reverse: c.Node.GetInt("reverse", 0) == 0), null],
        ["Div"] = c => [c.Needs(0) ? c.SumTo(c.Dy / c.X(1), c.X(0)) : null, c.Needs(1) ? c.SumTo(-(c.Dy * c.Y() / c.X(1)), c.X(1)) : null],
        ["Dropout"] = Dropout,
        ["Elu"] = c => [c.G.Where(c.G.Greater(c.X(0), c.Zero), c.Dy, c.Dy * (c.Y() + c.Node.GetFloat("alpha", 1f)))],
        ["Erf"] = c => [c.Dy * c.G.Exp(-(c.X(0) * c.X(0))) * (2 / Math.Sqrt(Math.PI))],
        ["Exp"] = c => [c.Dy * c.Y()],
        ["Expand"] = c => [c.SumTo(c.Dy, c.X(0)), null],
        ["Flatten"] = c => [c.ReshapeLike(c.Dy, c.X(0))],
        ["Gather"] = Gather,
        ["Gelu"] = Gelu,
        ["GatherElements"] = c => [c.G.ScatterElements(c.ZerosLike(c.X(0)), c.X(1), c.Dy, c.Node.GetInt("axis", 0), reduction: "add"), null],
        ["Gemm"] = Gemm,
        ["Identity"] = c => [c.Dy],
        ["LayerNormalization"] = LayerNormalization,
        ["Log"] = c => [c.Dy / c.X(0)],
        ["LogSoftmax"] = LogSoftmax,
        ["MatMul"] = MatMul,
        ["Max"] = c => MaxMin(c, isMax: true),
        ["MaxPool"] = MaxPool,
        ["Min"] = c => MaxMin(c, isMax: false),
        ["Mul"] = c => [c.Needs(0) ? c.SumTo(c.Dy * c.X(1), c.X(0)) : null, c.Needs(1) ? c.SumTo(c.Dy * c.X(0), c.X(1)) : null],
        ["Neg"] = c => [-c.Dy],
        ["NegativeLogLikelihoodLoss"] = NegativeLogLikelihoodLoss,
        ["Pad"] = Pad,
        ["Pow"] = Pow,
        ["Reciprocal"] = c => [-(c.Dy * c.Y() * c.Y())],
        ["ReduceMax"] = ReduceMax,
        ["ReduceMean"] = c => [ReduceSumGrad(c) / c.CountOf(c.X(0), ReducedAxes(c)), null],
        ["ReduceSum"] = c => [ReduceSumGrad(c), null],
        ["Relu"] = c => [c.G.Where(c.G.Greater(c.X(0), c.Zero), c.Dy, c.Zero)],
        ["Reshape"] = c => [c.ReshapeLike(c.Dy, c.X(0)), null],
        ["Resize"] = Resize,
        ["ScatterElements"] = ScatterElements,
        ["Sigmoid"] = c => [c.Dy * c.Y() * (1.0 - c.Y())],
        ["Sin"] = c => [c.Dy * c.G.Cos(c.X(0))],
        ["Slice"] = Slice,
        ["Softmax"] = c => [c.Y() * (c.Dy - c.G.ReduceSum(c.Dy * c.Y(), [c.Node.GetInt("axis", -1)], keepDims: true))],
        ["SoftmaxCrossEntropyLoss"] = SoftmaxCrossEntropyLoss,
        ["Softplus"] = c => [c.Dy * c.G.Sigmoid(c.X(0))],
        ["Split"] = c => [c.G.Concat(c.Node.GetInt("axis", 0), c.Node.Outputs.Select((y, i) => c.DyOf(i) ?? c.ZerosLike(y)).ToArray()), null],
        ["Sqrt"] = c => [c.Dy * 0.5 / c.Y()],
        ["Squeeze"] = c => [c.ReshapeLike(c.Dy, c.X(0)), null],
        ["Sub"] = c => [c.Needs(0) ? c.SumTo(c.Dy, c.X(0)) : null, c.Needs(1) ? c.SumTo(-c.Dy, c.X(1)) : null],
        ["Sum"] = c => c.Node.Inputs.Select((x, i) => c.Needs(i) ? c.SumTo(c.Dy, x!) : null).ToArray(),
        ["Tanh"] = c => [c.Dy * (1.0 - c.Y() * c.Y())],
        ["TopK"] = c => [c.DyOf(0) is { } dv ? c.G.ScatterElements(c.ZerosLike(c.X(0)), c.Y(1), dv, c.Node.GetInt("axis", -1), reduction: "add") : c.ZerosLike(c.X(0)), null],
        ["Transpose"] = Transpose,
        ["Unsqueeze"] = c => [c.ReshapeLike(c.Dy, c.X(0)), null],
        ["Where"] = c => [null,
            c.Needs(1) ? c.SumTo(c.G.Where(c.X(0), c.Dy, c.Zero), c.X(1)) : null,
            c.Needs(2) ? c.SumTo(c.G.Where(c.X(0), c.Zero, c.Dy), c.X(2)) : null],
    };

    private static Value?[] Concat(GradContext c)
    {
        int axis = c.X(0).Shape.Axis(c.Node.GetInt("axis", 0), "Concat");
        var xs = c.Node.Inputs.Select(x => x!).ToArray();
        if (xs.Length == 1) return [c.Dy];
        var sizes = xs.All(x => x.Shape[axis].IsStatic)
            ? c.G.Ints(xs.Select(x => x.Shape[axis].Value).ToArray())
            : c.G.Concat(0, xs.Select(x => c.SizeAlong(x, axis)).ToArray());
        var parts = c.G.Split(c.Dy, axis, sizes);
        return xs.Select((x, i) => c.Needs(i) ? c.ReshapeLike(parts[i], x) : null).ToArray<Value?>();
    }

    private static Value?[] Dropout(GradContext c)
    {
        var training = c.Node.Input(2);
        if (training is null || training is { Data: { } t } && t.ToDoubles()[0] == 0) return [c.Dy, null, null];
        var ratio = c.Node.Input(1);
        double r = ratio is null ? 0.5 : ratio.Data is { } rd ? rd.ToDoubles()[0] : double.NaN;
        Value scale = double.IsNaN(r) ? c.G.Reciprocal(1.0 - c.G.Cast(ratio!, c.Dy.Type)) : c.Scalar(1 / (1 - r));
        if (training.Data is null) scale = c.G.Where(training, scale, c.Scalar(1));
        return [c.G.Where(c.Y(1), c.Dy * scale, c.Zero), null, null];
    }

    private static Value?[] Gather(GradContext c)
    {
        var data = c.X(0);
        var idx = c.X(1);
        int axis = data.Shape.Axis(c.Node.GetInt("axis", 0), "Gather");
        var g = c.G;
        if (idx.Type != DType.Int64) idx = g.Cast(idx, DType.Int64);
        if (!(idx.Known is { } k && k.All(d => d.IsStatic && d.Value >= 0)))
        {
            var dim = data.Shape[axis].IsStatic ? g.Scalar(data.Shape[axis].Value, DType.Int64) : g.Gather(g.ShapeOf(data), g.Scalar(axis, DType.Int64));
            idx = g.Where(g.Less(idx, g.Scalar(0, DType.Int64)), idx + dim, idx);
        }
        int q = idx.Rank, r = data.Rank;
        var dy = c.Dy;
        if (axis == 0)
            return [g.ScatterND(c.ZerosLike(data), g.Unsqueeze(idx, -1), dy, "add"), null];
        // Move the gathered axis (and the index dims of dy) to the front, scatter, move it back.
        var dyPerm = Enumerable.Range(axis, q).Concat(Enumerable.Range(0, axis)).Concat(Enumerable.Range(axis + q, r - 1 - axis)).Select(i => (long)i).ToArray();
        var dataPerm = new[] { axis }.Concat(Enumerable.Range(0, axis)).Concat(Enumerable.Range(axis + 1, r - axis - 1)).Select(i => (long)i).ToArray();
        var zeros = c.ZerosLike(g.Transpose(data, dataPerm));
        var scattered = g.ScatterND(zeros, g.Unsqueeze(idx, -1), g.Transpose(dy, dyPerm), "add");
        return [g.Transpose(scattered, Inverse(dataPerm)), null];
    }

    /// <summary>
    /// Gelu's derivative from x alone, so the forward pass keeps nothing else: exact, Φ(x) + x φ(x); tanh-approximate, with
    /// t = tanh(u), u = √(2/π) (x + 0.044715 x³): 0.5 (1 + t) + 0.5 x (1 − t²) u'. The backward pass's tanh is written as
    /// 2 sigmoid(2u) − 1 so that ORT's common-subexpression elimination cannot merge it with the forward pass's and keep t alive.
    /// </summary>
    private static Value?[] Gelu(GradContext c)
    {
        var (g, x) = (c.G, c.X(0));
        if (c.Node.GetString("approximate", "none") == "tanh")
        {
            const double k = 0.044715;
            double s = Math.Sqrt(2 / Math.PI);
            var x2 = x * x;
            var u = x * (x2 * (s * k) + s);
            var t = g.Sigmoid(u * 2.0) * 2.0 - 1.0;
            var du = x2 * (3 * s * k) + s;
            return [c.Dy * ((t + 1.0) * 0.5 + x * 0.5 * (1.0 - t * t) * du)];
        }
        var cdf = (g.Erf(x * (1 / Math.Sqrt(2))) + 1.0) * 0.5;
        var pdf = g.Exp(x * x * -0.5) * (1 / Math.Sqrt(2 * Math.PI));
        return [c.Dy * (cdf + x * pdf)];
    }

    private static Value?[] MaxMin(GradContext c, bool isMax)
    {
        if (c.InputCount != 2) throw new NotSupportedException($"{c.Node} has {c.InputCount} inputs; gradients of {c.Node.OpType} are defined for two.");
        var (a, b) = (c.X(0), c.X(1));
        var g = c.G;
        var tie = g.Where(g.Equal(a, b), c.Dy * 0.5, c.Zero);
        Value Wins(Value p, Value o) => isMax ? g.Greater(p, o) : g.Less(p, o);
        return [c.Needs(0) ? c.SumTo(g.Where(Wins(a, b), c.Dy, tie), a) : null,
                c.Needs(1) ? c.SumTo(g.Where(Wins(b, a), c.Dy, tie), b) : null];
    }

    private static Value?[] Pad(GradContext c)
    {
        var x = c.X(0);
        var pads = c.Node.Input(1)?.Known?.Select(d => d.Value).ToArray();
        if (pads is null || pads.Any(p => p < 0) || c.Node.GetString("mode", "constant") != "constant" || c.Node.Input(3) is not null)
            throw new NotSupportedException($"{c.Node}: gradients are defined for constant padding with non-negative pads known at build time.");
        int r = x.Rank;
        var ends = Enumerable.Range(0, r).Select(i => pads[r + i] == 0 ? long.MaxValue : -pads[r + i]).ToArray();
        var dx = c.G.Slice(c.Dy, pads.Take(r).ToArray(), ends);
        return [c.ReshapeLike(dx, x), null, null, null];
    }

    /// <summary>
    /// Nearest upsampling by whole factors f (out[i] = x[floor(i / f)]): each input element's gradient is the sum of
    /// its block of output gradients, a reshape to (d0, f0, d1, f1, ...) and a sum over the f axes.
    /// </summary>
    private static Value?[] Resize(GradContext c)
    {
        var x = c.X(0);
        var scales = c.Node.Input(2)?.Data?.ToDoubles();
        if (c.Node.GetString("mode", "nearest") != "nearest" || c.Node.GetString("coordinate_transformation_mode", "half_pixel") != "asymmetric"
            || c.Node.GetString("nearest_mode", "round_prefer_floor") != "floor" || scales is null || scales.Length != x.Rank
            || scales.Any(s => s < 1 || s != Math.Floor(s)) || c.Node.Input(3) is not null)
            throw new NotSupportedException($"{c.Node}: gradients are defined for nearest upsampling by whole factors (asymmetric, floor) given as constant scales.");
        var blocks = Enumerable.Range(0, x.Rank).SelectMany(i => new[] { c.SizeAlong(x, i), c.G.Ints((long)scales[i]) }).ToArray();
        var dx = c.G.ReduceSum(c.G.Reshape(c.Dy, c.G.Concat(0, blocks)), Enumerable.Range(0, x.Rank).Select(i => 2L * i + 1).ToArray(), keepDims: false);
        return [c.ReshapeLike(dx, x), null, null, null];
    }

    private static Value?[] Pow(GradContext c)
    {
        var (a, b) = (c.X(0), c.X(1));
        Value? da = null, db = null;
        var g = c.G;
        if (c.Needs(0))
        {
            da = b is { Data: { Count: 1 } d }
                ? d.ToDoubles()[0] == 0 ? c.ZerosLike(c.Dy) : c.Dy * (g.Pow(a, d.ToDoubles()[0] - 1) * d.ToDoubles()[0])
                : c.Dy * g.Pow(a, b - 1.0) * (b.Type == a.Type ? b : g.Cast(b, a.Type));
            da = c.SumTo(da, a);
        }
        if (c.Needs(1))
        {
            // d(a^b)/db = a^b log a; where a == 0 PyTorch takes 0 rather than 0 * -inf = NaN.
            var logA = g.Where(g.Equal(a, g.Scalar(0, a.Type)), g.Scalar(0, a.Type), g.Log(a));
            db = c.SumTo(c.Dy * c.Y() * logA, b);
        }
        return [da, db];
    }

    private static int[] ReducedAxes(GradContext c)
    {
        var x = c.X(0);
        var axes = c.AxesInput(1);
        return axes is null || axes.Length == 0
            ? (c.Node.GetInt("noop_with_empty_axes", 0) == 1 ? [] : Enumerable.Range(0, x.Rank).ToArray())
            : axes.Select(a => x.Shape.Axis(a, c.Node.OpType)).Order().ToArray();
    }

    /// <summary>dy with the reduced dims restored as size 1 (when keepdims was 0).</summary>
    private static Value KeepDims(GradContext c, Value v)
    {
        var axes = ReducedAxes(c);
        return c.Node.GetInt("keepdims", 1) == 1 || axes.Length == 0 ? v : c.G.Unsqueeze(v, axes.Select(a => (long)a).ToArray());
    }

    private static Value ReduceSumGrad(GradContext c) => c.G.Expand(KeepDims(c, c.Dy), c.ShapeOf(c.X(0)));

    private static Value?[] ReduceMax(GradContext c)
    {
        var x = c.X(0);
        var axes = ReducedAxes(c).Select(a => (long)a).ToArray();
        var mask = c.G.Cast(c.G.Equal(x, KeepDims(c, c.Y())), x.Type);
        if (axes.Length == 0) return [c.Dy * mask, null];                  // noop_with_empty_axes: identity
        var share = mask / c.G.ReduceSum(mask, axes, keepDims: true);   // ties share the gradient evenly
        return [KeepDims(c, c.Dy) * share, null];
    }

    private static Value?[] Slice(GradContext c)
    {
        var x = c.X(0);
        var g = c.G;
        var ins = Enumerable.Range(1, 4).Select(i => c.Node.Input(i)?.Known?.Select(d => d.IsStatic ? d.Value : (long?)null).ToArray()).ToArray();
        var (starts, ends, axes, steps) = (ins[0], ins[1], ins[2], ins[3]);
        bool simple = x.Shape.IsStatic && starts is not null && ends is not null && starts.All(v => v is not null) && ends.All(v => v is not null)
            && (c.Node.Input(3) is null || axes is not null) && (steps is null ? c.Node.Input(4) is null : steps.All(s => s == 1));
        if (simple)
        {
            // Unit steps, everything static: the gradient is dy zero-padded back to x's shape.
            var dims = x.Shape.ToStatic();
            var pads = new long[2 * x.Rank];
            for (int i = 0; i < starts!.Length; i++)
            {
                int a = x.Shape.Axis(axes is null ? i : axes[i]!.Value, "Slice");
                long n = dims[a];
                long b = Math.Clamp(starts[i]!.Value < 0 ? starts[i]!.Value + n : starts[i]!.Value, 0, n);
                long e = Math.Clamp(ends![i]!.Value < 0 ? ends[i]!.Value + n : ends[i]!.Value, 0, n);
                pads[a] = b;
                pads[x.Rank + a] = n - Math.Max(b, e);
            }
            return [g.Pad(c.Dy, pads), null, null, null, null];
        }
        // General case: slice a tensor of flat positions the same way and scatter dy back to them.
        var numel = g.ReduceProd(c.ShapeOf(x), [0], keepDims: false);
        var positions = g.Reshape(g.Range(g.Scalar(0, DType.Int64), numel, g.Scalar(1, DType.Int64)), c.ShapeOf(x));
        var picked = g.Slice(positions, c.Node.Input(1)!, c.Node.Input(2)!, c.Node.Input(3) ?? g.Ints(Enumerable.Range(0, (int)c.Node.Input(1)!.Shape[0].Value).Select(i => (long)i).ToArray()), c.Node.Input(4));
        var flat = g.ScatterElements(g.ConstantOfShape(g.Unsqueeze(numel, 0), 0, x.Type), g.Reshape(picked, -1), g.Reshape(c.Dy, -1));
        return [c.ReshapeLike(flat, x), null, null, null, null];
    }

    private static Value?[] Transpose(GradContext c)
    {
        var perm = c.Node.GetInts("perm") ?? Enumerable.Range(0, c.X(0).Rank).Reverse().Select(i => (long)i).ToArray();
        // The gradient of a transposed weight (x @ Wᵀ) arrives as a Gemm product; (A'B')ᵀ = B'ᵀA' is one
        // Gemm with the operands swapped instead of a Gemm and a transpose of its result.
        if (perm is [1, 0] && c.Dy.Producer is { OpType: "Gemm" } gemm && gemm.Inputs.Count == 2 && gemm.GetFloat("alpha", 1f) == 1f)
        {
            bool ta = gemm.GetInt("transA", 0) == 1, tb = gemm.GetInt("transB", 0) == 1;
            return [c.G.Gemm(gemm.Inputs[1]!, gemm.Inputs[0]!, null, 1f, 1f, transA: !tb, transB: !ta)];
        }
        return [c.G.Transpose(c.Dy, Inverse(perm))];
    }

    private static long[] Inverse(long[] perm)
    {
        var inv = new long[perm.Length];
        for (int i = 0; i < perm.Length; i++) inv[perm[i]] = i;
        return inv;
    }

    /// <summary>CumSum's axis is its second input (a constant).</summary>
    private static long CumSumAxis(GradContext c) =>
        c.X(1).Known is [{ IsStatic: true } a] ? a.Value : throw new NotSupportedException($"{c.Node}: the CumSum axis must be a constant to differentiate.");

    /// <summary>
    /// ScatterElements without reduction: the updated positions take the gradient away from data and
    /// give it to updates. Indices must be unique (as when scattering TopK's indices); with repeated
    /// indices ONNX leaves the winner unspecified and so is this gradient.
    /// </summary>
    private static Value?[] ScatterElements(GradContext c)
    {
        if (c.Node.GetString("reduction", "none") != "none") throw new NotSupportedException($"{c.Node}: only ScatterElements without reduction has a gradient rule.");
        long axis = c.Node.GetInt("axis", 0);
        var idx = c.X(1);
        return [c.Needs(0) ? c.G.ScatterElements(c.Dy, idx, c.ZerosLike(c.X(2)), axis) : null, null,
            c.Needs(2) ? c.G.GatherElements(c.Dy, idx, axis) : null];
    }
}
