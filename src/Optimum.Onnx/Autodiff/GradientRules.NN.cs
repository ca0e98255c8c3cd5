namespace Optimum.Onnx;

// The longer rules for neural-network ops, in op-type order.
public static partial class GradientRules
{
    private static Value?[] BatchNormalization(GradContext c)
    {
        if (c.DyOf(1) is not null || c.DyOf(2) is not null)
            throw new NotSupportedException($"{c.Node}: gradients through the running mean/variance outputs are not defined.");
        var g = c.G;
        var (x, scale) = (c.X(0), c.X(1));
        float eps = c.Node.GetFloat("epsilon", 1e-5f);
        var axes = new long[] { 0 }.Concat(Enumerable.Range(2, x.Rank - 2).Select(i => (long)i)).ToArray();
        Value PerChannel(Value v) => g.Reshape(v, new long[] { 1, -1 }.Concat(Enumerable.Repeat(1L, x.Rank - 2)).ToArray());
        var dy = c.Dy;
        Value invStd, xhat;
        bool training = c.Node.GetInt("training_mode", 0) == 1;
        if (training)
        {
            var xc = x - g.ReduceMean(x, axes);
            invStd = g.Reciprocal(g.Sqrt(g.ReduceMean(xc * xc, axes) + (double)eps));
            xhat = xc * invStd;
        }
        else
        {
            invStd = g.Reciprocal(g.Sqrt(PerChannel(c.X(4)) + (double)eps));
            xhat = (x - PerChannel(c.X(3))) * invStd;
        }
        Value? dx = null;
        if (c.Needs(0))
        {
            var dxhat = dy * PerChannel(scale);
            dx = training
                ? invStd * (dxhat - g.ReduceMean(dxhat, axes) - xhat * g.ReduceMean(dxhat * xhat, axes))
                : dxhat * invStd;
        }
        Value? dmean = null, dvar = null;
        if (c.Needs(3) || c.Needs(4))
        {
            // In training Y does not depend on the running statistics; in inference it does through (x - mean) / sqrt(var + eps).
            if (training) (dmean, dvar) = (c.ZerosLike(c.X(3)), c.ZerosLike(c.X(4)));
            else
            {
                var invStdC = g.Reciprocal(g.Sqrt(c.X(4) + (double)eps));                                 // (C,)
                dmean = -(g.ReduceSum(dy, axes, keepDims: false) * scale * invStdC);
                dvar = g.ReduceSum(dy * (x - PerChannel(c.X(3))), axes, keepDims: false) * scale * (invStdC * invStdC * invStdC) * -0.5;
            }
        }
        return [dx,
            c.Needs(1) ? g.ReduceSum(dy * xhat, axes, keepDims: false) : null,
            c.Needs(2) ? g.ReduceSum(dy, axes, keepDims: false) : null,
            dmean, dvar];
    }

    private static Value?[] Conv(GradContext c)
    {
        var g = c.G;
        var (x, w) = (c.X(0), c.X(1));
        int sp = x.Rank - 2;
        if (c.Node.GetString("auto_pad", "NOTSET") != "NOTSET")
            throw new NotSupportedException($"{c.Node}: gradients need explicit pads (auto_pad NOTSET).");
        var strides = c.Node.GetInts("strides") ?? Enumerable.Repeat(1L, sp).ToArray();
        var dilations = c.Node.GetInts("dilations") ?? Enumerable.Repeat(1L, sp).ToArray();
        var pads = c.Node.GetInts("pads") ?? new long[2 * sp];
        long group = c.Node.GetInt("group", 1);
        var kernel = w.Shape.ToStatic().Skip(2).ToArray();
        var dy = c.Dy;
        Value? dx = null, dw = null, db = null;
        if (c.Needs(0))
        {
            var outPad = new long[sp];
            for (int i = 0; i < sp; i++)
            {
                if (strides[i] == 1) continue;
                if (!x.Shape[2 + i].IsStatic || !dy.Shape[2 + i].IsStatic)
                    throw new NotSupportedException($"{c.Node}: strided convolution gradients need static spatial dims, got {x.Shape}.");
                outPad[i] = x.Shape[2 + i].Value - (strides[i] * (dy.Shape[2 + i].Value - 1) + dilations[i] * (kernel[i] - 1) + 1 - pads[i] - pads[sp + i]);
            }
            dx = g.ConvTranspose(dy, w, null, strides, pads, dilations, group, outPad);
        }
        if (c.Needs(1) && group == 1 && sp == 2 && dilations.All(d => d == 1) && x.Shape[1].IsStatic && dy.Shape[2].IsStatic && dy.Shape[3].IsStatic)
            dw = ConvWeightGradFromPatches(g, x, dy, w.Shape[0].Value, kernel, strides, pads);
        else if (c.Needs(1))
        {
            // dW[o, c, k] = sum_n,t dy[n, o, t] * xpad[n, c, t*s + k*d]: a convolution of x (channels as batch)
            // with dy (batch as channels), stride and dilation swapped, cut to the kernel size.
            long cg = w.Shape[1].Value, og = w.Shape[0].Value / group;
            var swap = new long[] { 1, 0 }.Concat(Enumerable.Range(2, sp).Select(i => (long)i)).ToArray();
            var xs = group == 1 ? [x] : g.Split(x, 1, Enumerable.Repeat(cg, (int)group).ToArray());
            var dys = group == 1 ? [dy] : g.Split(dy, 1, Enumerable.Repeat(og, (int)group).ToArray());
            var parts = new Value[group];
            for (int i = 0; i < group; i++)
            {
                var full = g.Conv(g.Transpose(xs[i], swap), g.Transpose(dys[i], swap), null, dilations, pads, strides);
                var cut = g.Slice(full, new long[sp], kernel, Enumerable.Range(2, sp).Select(a => (long)a).ToArray());
                parts[i] = g.Reshape(g.Transpose(cut, swap), new[] { og, cg }.Concat(kernel).ToArray());
            }
            dw = group == 1 ? parts[0] : g.Concat(0, parts);
        }
        if (c.Needs(2))
            db = g.ReduceSum(dy, new long[] { 0 }.Concat(Enumerable.Range(2, sp).Select(i => (long)i)).ToArray(), keepDims: false);
        return c.InputCount == 3 ? [dx, dw, db] : [dx, dw];
    }

    /// <summary>
    /// dW[o, c, i, j] = Σ_{n,y,x} dy[n, o, y, x] · xpad[n, c, y·s + i, x·s + j] for a 2-D, ungrouped, undilated convolution:
    /// the kh·kw shifted, strided views of the padded input stacked as patches (n, kh·kw·C, H'·W'), one batched MatMul
    /// with dy (n, O, H'·W'), and a sum over n. ONNX Runtime runs the equivalent convolution of x by dy (a kernel the
    /// size of the output, 9 output positions) several times slower.
    /// </summary>
    private static Value ConvWeightGradFromPatches(GraphBuilder g, Value x, Value dy, long outChannels, long[] kernel, long[] strides, long[] pads)
    {
        long channels = x.Shape[1].Value, hOut = dy.Shape[2].Value, wOut = dy.Shape[3].Value, k = kernel[0] * kernel[1];
        var xp = pads.Any(p => p != 0) ? g.Pad(x, [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]) : x;
        var views = new List<Value>();
        for (long i = 0; i < kernel[0]; i++)
            for (long j = 0; j < kernel[1]; j++)
                views.Add(k == 1 && strides.All(s => s == 1) && xp == x ? x
                    : g.Slice(xp, [i, j], [i + strides[0] * (hOut - 1) + 1, j + strides[1] * (wOut - 1) + 1], [2, 3], strides));
        var patches = g.Reshape(views.Count == 1 ? views[0] : g.Concat(1, [.. views]), 0, k * channels, hOut * wOut);          // (n, k·C, H'W')
        var perImage = g.MatMul(g.Reshape(dy, 0, outChannels, hOut * wOut), g.Transpose(patches, 0, 2, 1));                     // (n, O, k·C)
        var sum = g.ReduceSum(perImage, [0], keepDims: false);                                                                    // (O, k·C)
        return k == 1 ? g.Reshape(sum, outChannels, channels, 1, 1)
            : g.Reshape(g.Transpose(g.Reshape(sum, outChannels, k, channels), 0, 2, 1), outChannels, channels, kernel[0], kernel[1]);
    }

    private static Value?[] Gemm(GradContext c)
    {
        var g = c.G;
        var (a, b) = (c.X(0), c.X(1));
        float alpha = c.Node.GetFloat("alpha", 1f), beta = c.Node.GetFloat("beta", 1f);
        bool ta = c.Node.GetInt("transA", 0) == 1, tb = c.Node.GetInt("transB", 0) == 1;
        var dy = c.Dy;
        Value? da = null, db = null, dc = null;
        if (c.Needs(0)) da = ta ? g.Gemm(b, dy, null, alpha, 1, tb, true) : g.Gemm(dy, b, null, alpha, 1, false, !tb);
        if (c.Needs(1)) db = tb ? g.Gemm(dy, a, null, alpha, 1, true, ta) : g.Gemm(a, dy, null, alpha, 1, !ta, false);
        if (c.InputCount > 2 && c.Needs(2)) dc = c.SumTo(beta == 1f ? dy : dy * beta, c.X(2));
        return c.InputCount > 2 ? [da, db, dc] : [da, db];
    }

    private static Value?[] LayerNormalization(GradContext c)
    {
        if (c.DyOf(1) is not null || c.DyOf(2) is not null)
            throw new NotSupportedException($"{c.Node}: gradients through the mean/inverse-std outputs are not defined.");
        var g = c.G;
        var (x, scale) = (c.X(0), c.X(1));
        int axis = x.Shape.Axis(c.Node.GetInt("axis", -1), "LayerNormalization");
        var norm = Enumerable.Range(axis, x.Rank - axis).Select(i => (long)i).ToArray();
        Value Stat(int i) => c.Y(i).Type == x.Type ? c.Y(i) : g.Cast(c.Y(i), x.Type);
        var invStd = Stat(2);
        var xhat = (x - Stat(1)) * invStd;
        var dy = c.Dy;
        Value? dx = null;
        if (c.Needs(0))
        {
            var dxhat = dy * scale;
            dx = invStd * (dxhat - g.ReduceMean(dxhat, norm) - xhat * g.ReduceMean(dxhat * xhat, norm));
        }
        var dscale = c.Needs(1) ? c.SumTo(dy * xhat, scale) : null;
        return c.InputCount > 2 ? [dx, dscale, c.Needs(2) ? c.SumTo(dy, c.X(2)) : null] : [dx, dscale];
    }

    private static Value?[] LogSoftmax(GradContext c)
    {
        var g = c.G;
        var y = c.Y();
        int axis = y.Shape.Axis(c.Node.GetInt("axis", -1), "LogSoftmax");
        // dx = dy - softmax * sum(dy). A loss that picks log-probabilities (NegativeLogLikelihoodLoss, GatherElements)
        // sends dy as a scatter into zeros; with one pick per row (-s at the label), dx = s * (softmax - onehot):
        // -1 scattered into exp(y) in place, then the row scale, instead of building, summing and subtracting an
        // (N, V) tensor of zeros. The scale comes last so that a MatMul's rule can move it to narrower operands.
        if (OnePickPerRow(c.Dy, axis, y) is { } pick)
        {
            var minusOne = g.ConstantOfShape(c.ShapeOf(pick.Indices), -1, y.Type);
            return [g.ScatterElements(g.Exp(y), pick.Indices, minusOne, axis, reduction: "add") * -pick.Updates];
        }
        return [c.Dy - g.Exp(y) * g.ReduceSum(c.Dy, [axis], keepDims: true)];
    }

    /// <summary>
    /// When <paramref name="dy"/> is <c>ScatterElements(zeros, indices, updates, axis, "add")</c> with one index per
    /// row along <paramref name="axis"/> (indices and updates shaped like <paramref name="like"/> but 1 along the axis),
    /// its indices and updates; else null.
    /// </summary>
    private static (Value Indices, Value Updates)? OnePickPerRow(Value dy, int axis, Value like)
    {
        if (dy.Producer is not { OpType: "ScatterElements", Domain: "" } scatter || scatter.GetString("reduction", "none") != "add") return null;
        var (data, indices, updates) = (scatter.Inputs[0]!, scatter.Inputs[1]!, scatter.Inputs[2]!);
        if (data.Shape.Axis(scatter.GetInt("axis", 0), "ScatterElements") != axis || !IsZeros(data)) return null;
        for (int i = 0; i < like.Rank; i++)
            if (i == axis ? !(indices.Shape[i] is { IsStatic: true, Value: 1 }) : indices.Shape[i] != like.Shape[i] || updates.Shape[i] != like.Shape[i])
                return null;
        return (indices, updates);
    }

    private static bool IsZeros(Value v) => v.Producer is { OpType: "ConstantOfShape", Domain: "" } fill
        && (!fill.Attributes.TryGetValue("value", out var a) || a.Tensor is { } t && t.ToDoubles().All(x => x == 0));

    private static Value?[] MatMul(GradContext c)
    {
        var g = c.G;
        var (a, b) = (c.X(0), c.X(1));
        // Promote 1-D operands as numpy does, so the rule only sees (..., m, k) @ (..., k, n).
        var a2 = a.Rank == 1 ? g.Unsqueeze(a, 0) : a;
        var b2 = b.Rank == 1 ? g.Unsqueeze(b, -1) : b;
        var dy = c.Dy;
        if (a.Rank == 1) dy = g.Unsqueeze(dy, dy.Rank - 1);
        if (b.Rank == 1) dy = g.Unsqueeze(dy, dy.Rank);
        Value T(Value v) => g.Transpose(v, Enumerable.Range(0, v.Rank - 2).Select(i => (long)i).Concat([v.Rank - 1, v.Rank - 2]).ToArray());
        Value? da = null, db = null;
        // dy = rows * scale, one scale per row (a language model's (softmax - onehot) * coef), through a weight shared
        // across the batch that is narrower than dy (k < n): scale the (M, k) operands instead of the (M, n) dy.
        // db is a MatMul with the narrow operand transposed, not a Gemm with transA, which the Transpose rule would
        // turn into rowsᵀ @ x for a transposed weight: ORT's Gemm with the wide (M, n) operand transposed took 430 ms
        // for the GPT-2 bench head where this product and the transpose of its (k, n) result took 300 + 11 ms.
        if (a.Rank >= 2 && b.Rank == 2 && RowScaled(dy) is { } rs && a.Shape[^1] is { IsStatic: true } k && dy.Shape[^1] is { IsStatic: true } n && k.Value < n.Value)
        {
            var aRows = a.Rank == 2 ? a : g.Flatten(a, a.Rank - 1);                             // (M, k)
            if (c.Needs(0)) da = g.MatMul(rs.Rows, T(b)) * rs.Scale;
            if (da is not null && a.Rank > 2) da = c.ReshapeLike(da, a);
            if (c.Needs(1)) db = g.MatMul(g.Transpose(aRows * rs.Scale), rs.Rows);             // (k, n)
            return [da, db];
        }
        if (c.Needs(0))
        {
            da = c.SumTo(g.MatMul(dy, T(b2)), a2);
            if (a.Rank == 1) da = g.Squeeze(da, 0);
        }
        if (c.Needs(1))
        {
            // A weight shared across the batch: one (k, M) @ (M, n) product instead of a batch of them and a sum.
            db = b2.Rank == 2 && a2.Rank > 2
                ? g.Gemm(g.Flatten(a2, a2.Rank - 1), g.Flatten(dy, dy.Rank - 1), null, 1, 1, transA: true)
                : c.SumTo(g.MatMul(T(a2), dy), b2);
            if (b.Rank == 1) db = g.Squeeze(db, -1);
        }
        return [da, db];
    }

    /// <summary>
    /// When <paramref name="dy"/> (..., m, n) is <c>rows * scale</c> with rows (M, n) and scale (M, 1), possibly viewed
    /// through a Reshape that keeps n: rows and scale; else null.
    /// </summary>
    private static (Value Rows, Value Scale)? RowScaled(Value dy)
    {
        var v = dy.Producer is { OpType: "Reshape", Domain: "" } r ? r.Inputs[0]! : dy;
        if (v.Rank != 2 || v.Shape[1] != dy.Shape[^1] || v.Producer is not { OpType: "Mul", Domain: "" } mul) return null;
        foreach (var (rows, scale) in new[] { (mul.Inputs[0]!, mul.Inputs[1]!), (mul.Inputs[1]!, mul.Inputs[0]!) })
            if (rows.Shape.Equals(v.Shape) && scale.Rank == 2 && scale.Shape[0] == v.Shape[0] && scale.Shape[1] is { IsStatic: true, Value: 1 })
                return (rows, scale);
        return null;
    }

    private static Value?[] MaxPool(GradContext c)
    {
        var x = c.X(0);
        if (c.Node.Outputs.Count < 2 || c.Node.GetInt("storage_order", 0) != 0)
            throw new NotSupportedException($"{c.Node}: the gradient needs the Indices output in row-major storage order.");
        var g = c.G;
        // Indices are flat positions in the whole input tensor; scatter-add dy back to them.
        var numel = g.ReduceProd(c.ShapeOf(x), [0], keepDims: true);
        var flat = g.ScatterND(g.ConstantOfShape(numel, 0, x.Type), g.Reshape(c.Y(1), -1, 1), g.Reshape(c.Dy, -1), "add");
        return [c.ReshapeLike(flat, x)];
    }

    private static Value?[] NegativeLogLikelihoodLoss(GradContext c)
    {
        var g = c.G;
        var input = c.X(0);
        var (safe, coef) = PerLabel(c, c.X(1), c.Dy);
        var perLabel = coef.Rank == 0 ? g.Expand(coef, c.ShapeOf(c.X(1))) : coef;
        // -coef at each label and zero elsewhere, as a scatter into zeros that LogSoftmax's rule reads without
        // materialising it. Indices and updates take the input's dims (1 along the classes), so that rule can
        // tell they pick one class per row even where the labels' dims are not known to equal the input's.
        var shape = input.Shape.IsStatic
            ? g.Ints(input.Shape.ToStatic().Select((d, i) => i == 1 ? 1 : d).ToArray())
            : g.Concat(0, Enumerable.Range(0, input.Rank).Select(i => i == 1 ? g.Ints(1) : c.SizeAlong(input, i)).ToArray());
        var dx = g.ScatterElements(c.ZerosLike(input), g.Reshape(safe, shape), g.Reshape(-perLabel, shape), axis: 1, reduction: "add");
        return c.InputCount > 2 ? [dx, null, null] : [dx, null];
    }

    /// <summary>
    /// What a loss that picks one class per label (NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss) sends back:
    /// the labels with ignore_index replaced by 0 (safe to gather and scatter), and per label dloss/d(picked value)
    /// negated: <paramref name="dl"/> times the class weight (0 where ignored), over the summed weights (or the
    /// count) for reduction "mean". Shaped like the labels, or a scalar without weights or ignore_index.
    /// </summary>
    private static (Value Safe, Value Coef) PerLabel(GradContext c, Value labels, Value dl)
    {
        var g = c.G;
        var type = c.X(0).Type;
        if (labels.Type != DType.Int64) labels = g.Cast(labels, DType.Int64);
        Value? valid = null;
        var safe = labels;
        if (c.Node.Attributes.ContainsKey("ignore_index"))
        {
            valid = g.Not(g.Equal(labels, g.Scalar(c.Node.GetInt("ignore_index", 0), DType.Int64)));
            safe = g.Where(valid, labels, g.Scalar(0, DType.Int64));
        }
        Value? w = c.Node.Input(2) is { } weights ? g.Gather(weights, safe) : null;
        if (valid is not null) w = w is null ? g.Cast(valid, type) : w * g.Cast(valid, type);
        var coef = w is null ? dl : dl * w;                                                  // (N, d...) or scalar
        if (c.Node.GetString("reduction", "mean") == "mean")
            coef = coef / (w is null ? c.CountOf(labels, Enumerable.Range(0, labels.Rank)) : g.ReduceSum(w, [], keepDims: false));
        return (safe, coef);
    }

    private static Value?[] SoftmaxCrossEntropyLoss(GradContext c)
    {
        var g = c.G;
        var scores = c.X(0);
        var logp = c.Node.Outputs.Count > 1 ? c.Y(1) : g.LogSoftmax(scores, 1);
        var p = g.Exp(logp);
        Value? dScores = null;
        if (c.DyOf(0) is { } dl)
        {
            var (safe, coef) = PerLabel(c, c.X(1), dl);
            // (softmax - onehot) * coef without a one-hot: scale the probabilities, then scatter-add -coef
            // at each label. For a 50k vocabulary a one-hot would be a second (N, V) temporary per step.
            var scaled = p * (coef.Rank == 0 ? coef : g.Unsqueeze(coef, 1));
            var perLabel = coef.Rank == 0 ? g.Expand(coef, c.ShapeOf(c.X(1))) : coef;
            dScores = g.ScatterElements(scaled, g.Unsqueeze(safe, 1), g.Unsqueeze(-perLabel, 1), axis: 1, reduction: "add");
        }
        if (c.DyOf(1) is { } dlp)
        {
            var viaLogp = dlp - p * g.ReduceSum(dlp, [1], keepDims: true);
            dScores = dScores is null ? viaLogp : dScores + viaLogp;
        }
        return c.InputCount > 2 ? [dScores, null, null] : [dScores, null];
    }
}
