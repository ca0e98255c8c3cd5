namespace Optimum.Onnx;

// Neural-network ops: MatMul, Gemm, normalisations, dropout, losses, convolution and pooling.
public sealed partial class GraphBuilder
{
    /// <summary>
    /// Numpy matmul: (..., m, k) @ (..., k, n) with broadcast batch dims; 1-D operands as numpy treats them.
    /// A linear layer's product (see <see cref="LinearUse"/>) is offered to <see cref="LinearRewrite"/>.
    /// </summary>
    public Value MatMul(Value a, Value b) => AfterLinear(a, b, gemmTransB: null,
        Autocasts(a, b) ? Cast(MatMulNode(Cast(a, Autocast!.Value), Cast(b, Autocast!.Value)), DType.Float) : MatMulNode(a, b));

    /// <summary>
    /// Mixed precision (torch.autocast's rule for matmul and linear): when set to Float16 or BFloat16, MatMul and Gemm of
    /// float32 operands compute in that type, their inputs cast to it and the product cast back to float32; everything else
    /// (softmax, norms, the loss, the parameters themselves: the float32 master weights) stays float32. Autodiff then
    /// differentiates through the casts, so gradients come out float32. Null (the default): no casts.
    /// </summary>
    public DType? Autocast
    {
        get => _autocast;
        set => _autocast = value is null or DType.Float16 or DType.BFloat16 ? value
            : throw new ArgumentException($"Autocast computes in float16 or bfloat16, got {value.Value.Name()}.", nameof(value));
    }
    private DType? _autocast;

    private bool Autocasts(params Value?[] xs) => _autocast is not null && xs.All(x => x is null || x.Type == DType.Float);

    private Value MatMulNode(Value a, Value b) => Emit("MatMul", [a, b], null, n =>
    {
        if (a.Type != b.Type) throw Error("MatMul", n, $"Element types differ: {a.Type.Name()}{a.Shape} and {b.Type.Name()}{b.Shape}");
        if (a.Rank == 0 || b.Rank == 0) throw Error("MatMul", n, $"Cannot multiply scalars {a.Shape} and {b.Shape}");
        var sa = a.Rank == 1 ? Shape.Of(1, a.Shape[0]) : a.Shape;
        var sb = b.Rank == 1 ? Shape.Of(b.Shape[0], 1) : b.Shape;
        Dim ka = sa[^1], kb = sb[^2];
        if (!Dim.MaybeEqual(ka, kb))
            throw Error("MatMul", n, $"Inner dims differ: {a.Shape} @ {b.Shape}");
        var batch = Broadcast("MatMul", n, new Shape(sa.Take(sa.Rank - 2)), new Shape(sb.Take(sb.Rank - 2)));
        var dims = batch.ToList();
        if (a.Rank > 1) dims.Add(sa[^2]);
        if (b.Rank > 1) dims.Add(sb[^1]);
        return [(a.Type, new Shape(dims))];
    })[0];

    /// <summary><c>alpha * A' @ B' + beta * C</c> for 2-D A and B (optionally transposed); with a parameter as B, offered to <see cref="LinearRewrite"/>.</summary>
    public Value Gemm(Value a, Value b, Value? c = null, float alpha = 1f, float beta = 1f, bool transA = false, bool transB = false)
    {
        var attrs = new Dictionary<string, AttrValue> { ["alpha"] = alpha, ["beta"] = beta, ["transA"] = transA ? 1L : 0L, ["transB"] = transB ? 1L : 0L };
        bool low = Autocasts(a, b, c);
        var (ea, eb, ec) = low ? (Cast(a, _autocast!.Value), Cast(b, _autocast!.Value), c is null ? null : Cast(c, _autocast!.Value)) : (a, b, c);
        var output = Emit("Gemm", ec is null ? [ea, eb] : [ea, eb, ec], attrs, n =>
        {
            if (a.Rank != 2 || b.Rank != 2) throw Error("Gemm", n, $"A and B must be 2-D, got {a.Shape} and {b.Shape}");
            Dim m = transA ? a.Shape[1] : a.Shape[0], ka = transA ? a.Shape[0] : a.Shape[1];
            Dim kb = transB ? b.Shape[1] : b.Shape[0], nn = transB ? b.Shape[0] : b.Shape[1];
            if (!Dim.MaybeEqual(ka, kb)) throw Error("Gemm", n, $"Inner dims differ: A {a.Shape} (transA={transA}) and B {b.Shape} (transB={transB})");
            var y = Shape.Of(m, nn);
            if (c is not null && !BroadcastsTo(c.Shape, y))
                throw Error("Gemm", n, $"C {c.Shape} does not broadcast to {y}");
            return [(ea.Type, y)];
        })[0];
        return AfterLinear(a, b, transB, low ? Cast(output, DType.Float) : output, transA);
    }

    /// <summary>
    /// ONNX LayerNormalization over the dims from <paramref name="axis"/> on. The node also
    /// outputs the mean and inverse standard deviation, which its gradient reuses.
    /// </summary>
    public Value LayerNormalization(Value x, Value scale, Value? bias = null, long axis = -1, float epsilon = 1e-5f)
    {
        var attrs = new Dictionary<string, AttrValue> { ["axis"] = axis, ["epsilon"] = epsilon };
        return Emit("LayerNormalization", bias is null ? [x, scale] : [x, scale, bias], attrs, n =>
        {
            int a = x.Shape.Axis(axis, "LayerNormalization");
            var norm = new Shape(x.Shape.Skip(a));
            foreach (var p in bias is null ? [scale] : new[] { scale, bias })
                if (!BroadcastsTo(p.Shape, norm))
                    throw Error("LayerNormalization", n, $"Scale/bias {p.Shape} does not match normalized shape {norm} of {x.Shape}");
            var stats = new Shape(x.Shape.Take(a).Concat(Enumerable.Repeat(Dim.Of(1), x.Rank - a)));
            // stash_type 1: statistics are float whatever the input type.
            return [(x.Type, x.Shape), (DType.Float, stats), (DType.Float, stats)];
        })[0];
    }

    /// <summary>
    /// Dropout with probability <paramref name="ratio"/>. In training the node also outputs its mask
    /// (the gradient reuses it); outside training it is the identity and adds no node.
    /// </summary>
    public Value Dropout(Value x, double ratio, bool training, long? seed = null)
    {
        if (ratio < 0 || ratio >= 1) throw new ArgumentOutOfRangeException(nameof(ratio), ratio, "Dropout ratio must be in [0, 1).");
        if (!training) return x;
        Dictionary<string, AttrValue>? attrs = seed is { } s ? new() { ["seed"] = s } : null;
        return Emit("Dropout", [x, Scalar(ratio, x.Type), Constant(TensorData.FromBools([true]), null)], attrs,
            _ => [(x.Type, x.Shape), (DType.Bool, x.Shape)])[0];
    }

    /// <summary>
    /// Dropout whose mask is a counter-based hash of (<paramref name="seed"/>, <paramref name="salt"/>,
    /// element index) built from standard int64 ops, so the same seed gives the same mask: training
    /// with a per-step seed input resumes exactly, which ORT's stateful Dropout cannot. Outside
    /// training it is the identity. <paramref name="seed"/> is an int64 scalar in [0, 2^31).
    /// </summary>
    public Value Dropout(Value x, double ratio, bool training, Value seed, long salt)
    {
        if (ratio < 0 || ratio >= 1) throw new ArgumentOutOfRangeException(nameof(ratio), ratio, "Dropout ratio must be in [0, 1).");
        if (!training || ratio == 0) return x;
        if (seed.Type != DType.Int64 || seed.Rank != 0) throw new GraphBuildException($"Dropout seed must be an int64 scalar, got {seed}.");
        var shape = ShapeOf(x);
        var idx = Reshape(Range(Scalar(0, DType.Int64), ReduceProd(shape, [0], keepDims: false), Scalar(1, DType.Int64)), shape);
        var u = Cast(Hash(seed, salt, idx), x.Type) * (1.0 / HashModulus);   // ~U[0, 1)
        return Where(GreaterOrEqual(u, Scalar(ratio, x.Type)), x * (1 / (1 - ratio)), Scalar(0, x.Type));
    }

    /// <summary>The hash's range: values are in [0, 2^31 - 1).</summary>
    public const long HashModulus = 2147483647;                      // 2^31 - 1: products of two residues fit in int64

    /// <summary>
    /// A counter-based hash of (<paramref name="seed"/>, <paramref name="salt"/>, each element of the
    /// int64 <paramref name="counter"/> (below 2^40)) into [0, 2^31 - 1), made of standard int64 ops:
    /// the random source of the seeded dropout and of ProbSparse attention's key sampling.
    /// </summary>
    public Value Hash(Value seed, long salt, Value counter)
    {
        if (seed.Type != DType.Int64 || seed.Rank != 0) throw new GraphBuildException($"A hash seed must be an int64 scalar, got {seed}.");
        var p = Scalar(HashModulus, DType.Int64);
        Value I(long v) => Scalar(v, DType.Int64);
        var s = Mod(seed * I(1000003) + I(salt * 7919 + 12345), p);
        var h = Mod(counter * I(48271) + s, p);                      // counter < 2^40 keeps this below 2^63
        h = Mod(h * h + s, p);
        h = Mod(h * I(16807) + I(salt + 1), p);
        return Mod(h * h + I(7), p);
    }

    /// <summary>
    /// ONNX NegativeLogLikelihoodLoss: <paramref name="input"/> (N, C, d...) holds log-probabilities and
    /// <paramref name="target"/> (N, d...) integer classes; the loss is -input[n, target[n]] (times
    /// <paramref name="weight"/>[target[n]]), targets equal to <paramref name="ignoreIndex"/> count for nothing,
    /// and "mean" divides by the summed weights (the count) of the others. Scalar unless <paramref name="reduction"/> is "none".
    /// <c>NegativeLogLikelihoodLoss(LogSoftmax(scores, 1), labels)</c> is how ONNX defines SoftmaxCrossEntropyLoss.
    /// </summary>
    public Value NegativeLogLikelihoodLoss(Value input, Value target, Value? weight = null, string reduction = "mean", long? ignoreIndex = null)
    {
        var attrs = new Dictionary<string, AttrValue> { ["reduction"] = reduction };
        if (ignoreIndex is { } ii) attrs["ignore_index"] = ii;
        return Emit("NegativeLogLikelihoodLoss", weight is null ? [input, target] : [input, target, weight], attrs, n =>
        {
            CheckLabelLoss("NegativeLogLikelihoodLoss", n, input, target, weight, reduction);
            return [(input.Type, reduction == "none" ? target.Shape : Shape.Scalar)];
        })[0];
    }

    /// <summary>
    /// ONNX SoftmaxCrossEntropyLoss: <paramref name="scores"/> (N, C, d...) and integer
    /// <paramref name="labels"/> (N, d...); labels equal to <paramref name="ignoreIndex"/> count for nothing.
    /// Returns the loss (scalar unless <paramref name="reduction"/> is "none"); the node also outputs log-probabilities.
    /// </summary>
    public Value SoftmaxCrossEntropyLoss(Value scores, Value labels, Value? weights = null, string reduction = "mean", long? ignoreIndex = null)
    {
        var attrs = new Dictionary<string, AttrValue> { ["reduction"] = reduction };
        if (ignoreIndex is { } ii) attrs["ignore_index"] = ii;
        return Emit("SoftmaxCrossEntropyLoss", weights is null ? [scores, labels] : [scores, labels, weights], attrs, n =>
        {
            CheckLabelLoss("SoftmaxCrossEntropyLoss", n, scores, labels, weights, reduction);
            return [(scores.Type, reduction == "none" ? labels.Shape : Shape.Scalar), (scores.Type, scores.Shape)];
        })[0];
    }

    private static void CheckLabelLoss(string op, string n, Value scores, Value labels, Value? weights, string reduction)
    {
        if (reduction is not ("mean" or "sum" or "none")) throw Error(op, n, $"Unknown reduction '{reduction}'");
        if (scores.Rank < 2) throw Error(op, n, $"Scores must be (N, C, ...), got {scores.Shape}");
        if (labels.Type is not (DType.Int64 or DType.Int32)) throw Error(op, n, $"Labels must be int32 or int64, got {labels.Type.Name()}");
        var expected = new Shape(scores.Shape.Where((_, i) => i != 1));
        if (labels.Rank != expected.Rank || Enumerable.Range(0, expected.Rank).Any(i => !Dim.MaybeEqual(labels.Shape[i], expected[i])))
            throw Error(op, n, $"Labels {labels.Shape} do not match scores {scores.Shape} (expected {expected})");
        if (weights is not null && (weights.Rank != 1 || !Dim.MaybeEqual(weights.Shape[0], scores.Shape[1])))
            throw Error(op, n, $"Weights {weights.Shape} must be (C,) for scores {scores.Shape}");
    }

    /// <summary>N-d convolution (N, C, spatial...) with weights (M, C/group, kernel...), explicit pads [begins..., ends...].</summary>
    public Value Conv(Value x, Value w, Value? b = null, long[]? strides = null, long[]? pads = null, long[]? dilations = null, long group = 1)
    {
        int sp = x.Rank - 2;
        strides ??= Ones(sp); dilations ??= Ones(sp); pads ??= new long[2 * sp];
        var attrs = new Dictionary<string, AttrValue> { ["dilations"] = dilations, ["group"] = group, ["pads"] = pads, ["strides"] = strides };
        // The kernel may be data (Conv's own weight gradient convolves with dy); its shape is then read at run time.
        if (w.Shape.Skip(2).All(d => d.IsStatic)) attrs["kernel_shape"] = w.Shape.Skip(2).Select(d => d.Value).ToArray();
        return Emit("Conv", b is null ? [x, w] : [x, w, b], attrs, n =>
        {
            CheckConv("Conv", n, x, w, strides, pads, dilations, group, x.Shape[1], w.Shape[1] * group);
            var dims = new List<Dim> { x.Shape[0], w.Shape[0] };
            for (int i = 0; i < sp; i++)
            {
                var L = x.Shape[2 + i];
                var k = w.Shape[2 + i];
                dims.Add(L.IsStatic && k.IsStatic ? (L.Value + pads[i] + pads[sp + i] - dilations[i] * (k.Value - 1) - 1) / strides[i] + 1 : Dim.Unknown);
            }
            return [(x.Type, new Shape(dims))];
        })[0];
    }

    /// <summary>Transposed convolution; weights are (C, M/group, kernel...).</summary>
    public Value ConvTranspose(Value x, Value w, Value? b = null, long[]? strides = null, long[]? pads = null, long[]? dilations = null, long group = 1, long[]? outputPadding = null)
    {
        int sp = x.Rank - 2;
        strides ??= Ones(sp); dilations ??= Ones(sp); pads ??= new long[2 * sp]; outputPadding ??= new long[sp];
        if (!w.Shape.IsStatic) throw new GraphBuildException($"ConvTranspose needs a static weight shape, got {w}.");
        var attrs = new Dictionary<string, AttrValue> { ["dilations"] = dilations, ["group"] = group, ["kernel_shape"] = w.Shape.Skip(2).Select(d => d.Value).ToArray(), ["output_padding"] = outputPadding, ["pads"] = pads, ["strides"] = strides };
        return Emit("ConvTranspose", b is null ? [x, w] : [x, w, b], attrs, n =>
        {
            CheckConv("ConvTranspose", n, x, w, strides, pads, dilations, group, x.Shape[1], w.Shape[0]);
            var dims = new List<Dim> { x.Shape[0], w.Shape[1] * group };
            for (int i = 0; i < sp; i++)
            {
                var L = x.Shape[2 + i];
                long k = w.Shape[2 + i].Value;
                dims.Add(L.IsStatic ? strides[i] * (L.Value - 1) + outputPadding[i] + dilations[i] * (k - 1) + 1 - pads[i] - pads[sp + i] : Dim.Unknown);
            }
            return [(x.Type, new Shape(dims))];
        })[0];
    }

    private static long[] Ones(int n) => Enumerable.Repeat(1L, n).ToArray();

    private static void CheckConv(string op, string n, Value x, Value w, long[] strides, long[] pads, long[] dilations, long group, Dim xChannels, Dim wChannels)
    {
        int sp = x.Rank - 2;
        if (sp < 1 || w.Rank != x.Rank) throw Error(op, n, $"Input {x.Shape} and weight {w.Shape} must both be (N, C, spatial...)");
        if (strides.Length != sp || dilations.Length != sp || pads.Length != 2 * sp)
            throw Error(op, n, $"strides/dilations need {sp} values and pads {2 * sp} for {x.Shape}");
        if (group < 1 || (xChannels.IsStatic && xChannels.Value % group != 0)) throw Error(op, n, $"group {group} does not divide the channels of {x.Shape}");
        if (!Dim.MaybeEqual(xChannels, wChannels))
            throw Error(op, n, $"Input channels of {x.Shape} do not match weight {w.Shape} with group {group}");
    }

    /// <summary>Max pooling; the node also outputs the flat indices of the maxima, which its gradient reuses.</summary>
    public Value MaxPool(Value x, long[] kernel, long[]? strides = null, long[]? pads = null, long[]? dilations = null, bool ceilMode = false)
    {
        int sp = kernel.Length;
        strides ??= Ones(sp); dilations ??= Ones(sp); pads ??= new long[2 * sp];
        var attrs = new Dictionary<string, AttrValue> { ["ceil_mode"] = ceilMode ? 1L : 0L, ["dilations"] = dilations, ["kernel_shape"] = kernel, ["pads"] = pads, ["strides"] = strides };
        return Emit("MaxPool", [x], attrs, n =>
        {
            if (x.Rank != sp + 2) throw Error("MaxPool", n, $"Kernel [{string.Join(", ", kernel)}] does not fit input {x.Shape}");
            var dims = new List<Dim> { x.Shape[0], x.Shape[1] };
            for (int i = 0; i < sp; i++)
            {
                var L = x.Shape[2 + i];
                if (!L.IsStatic) { dims.Add(Dim.Unknown); continue; }
                double q = (L.Value + pads[i] + pads[sp + i] - dilations[i] * (kernel[i] - 1) - 1) / (double)strides[i];
                long outLen = (long)(ceilMode ? Math.Ceiling(q) : Math.Floor(q)) + 1;
                // With ceil_mode, a last window that would start inside the end padding is dropped (ONNX >= 1.16, ORT).
                if (ceilMode && (outLen - 1) * strides[i] >= L.Value + pads[i]) outLen--;
                dims.Add(outLen);
            }
            var s = new Shape(dims);
            return [(x.Type, s), (DType.Int64, s)];
        })[0];
    }

    /// <summary>
    /// BatchNormalization over (N, C, ...). In training it normalises with batch statistics and
    /// returns the updated running mean and variance as well: [Y, runningMean, runningVar];
    /// otherwise it uses <paramref name="mean"/> and <paramref name="var"/> and returns [Y].
    /// </summary>
    public Value[] BatchNormalization(Value x, Value scale, Value bias, Value mean, Value var, bool training, float epsilon = 1e-5f, float momentum = 0.9f)
    {
        var attrs = new Dictionary<string, AttrValue> { ["epsilon"] = epsilon, ["momentum"] = momentum, ["training_mode"] = training ? 1L : 0L };
        return Emit("BatchNormalization", [x, scale, bias, mean, var], attrs, n =>
        {
            if (x.Rank < 2) throw Error("BatchNormalization", n, $"Input must be (N, C, ...), got {x.Shape}");
            foreach (var p in new[] { scale, bias, mean, var })
                if (p.Rank != 1 || !Dim.MaybeEqual(p.Shape[0], x.Shape[1]))
                    throw Error("BatchNormalization", n, $"Per-channel input '{p.Name}' {p.Shape} does not match channels of {x.Shape}");
            return training ? [(x.Type, x.Shape), (mean.Type, mean.Shape), (var.Type, var.Shape)] : [(x.Type, x.Shape)];
        });
    }

    /// <summary>
    /// Nearest-neighbour upsampling by whole <paramref name="factors"/> per axis, as torch's
    /// <c>F.interpolate(mode="nearest")</c> does it: out[i] = x[floor(i / f)] (ONNX Resize with asymmetric
    /// coordinates and floor rounding).
    /// </summary>
    public Value ResizeNearest(Value x, long[] factors) => Emit("Resize",
        [x, null, Constant(TensorData.FromFloats(factors.Select(f => (float)f).ToArray(), factors.Length))],
        new() { ["coordinate_transformation_mode"] = "asymmetric", ["mode"] = "nearest", ["nearest_mode"] = "floor" }, n =>
        {
            if (factors.Length != x.Rank || factors.Any(f => f < 1))
                throw Error("Resize", n, $"factors [{string.Join(", ", factors)}] must be {x.Rank} whole numbers >= 1 for {x.Shape}");
            return [(x.Type, new Shape(x.Shape.Select((d, i) => factors[i] == 1 ? d : d * Dim.Of(factors[i]))))];
        })[0];

    /// <summary>
    /// torch's GroupNorm over x (N, C, ...): the C channels split into <paramref name="groups"/>, each group normalised
    /// over its channels and positions (biased variance plus <paramref name="epsilon"/>), then a per-channel
    /// <paramref name="scale"/> and <paramref name="bias"/> (C). Built from Reshape, ReduceMean and Sqrt rather than ONNX
    /// GroupNormalization, whose scale and bias are per group in opset 18 but per channel in opset 21.
    /// </summary>
    public Value GroupNorm(Value x, long groups, Value scale, Value bias, double epsilon = 1e-5)
    {
        if (x.Rank < 2 || !x.Shape[1].IsStatic || groups < 1 || x.Shape[1].Value % groups != 0)
            throw new GraphBuildException($"GroupNorm needs (N, C, ...) with a static C divisible by {groups} groups, got {x.Shape}");
        long channels = x.Shape[1].Value;
        static bool PerChannel(Value v, long c) => v.Rank == 1 && v.Shape[0].IsStatic && v.Shape[0].Value == c;
        if (!PerChannel(scale, channels) || !PerChannel(bias, channels))
            throw new GraphBuildException($"GroupNorm's scale {scale.Shape} and bias {bias.Shape} must be ({channels})");
        var grouped = Reshape(x, 0, groups, -1);                                        // (N, G, C/G · positions)
        var centred = grouped - ReduceMean(grouped, [2]);
        var normed = centred / Sqrt(ReduceMean(centred * centred, [2]) + epsilon);
        long[] perChannel = [channels, .. Enumerable.Repeat(1L, x.Rank - 2)];             // (C, 1, ...) against (N, C, ...)
        return Reshape(normed, ShapeOf(x)) * Reshape(scale, perChannel) + Reshape(bias, perChannel);
    }
}
