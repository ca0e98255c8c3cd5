namespace Optimum.Onnx;

// Layout ops: Shape, Reshape, Flatten, Transpose, (Un)Squeeze, Concat, Split, Slice, Gather, Expand, ...
// Small int64 tensors carry their build-time contents (Value.Known) through these ops, so shapes
// computed in the graph (Reshape(g, Shape(x))) keep their symbolic dims.
public sealed partial class GraphBuilder
{
    /// <summary>The shape of <paramref name="x"/> as a 1-D int64 tensor.</summary>
    public Value ShapeOf(Value x)
    {
        var y = Emit("Shape", [x], null, _ => [(DType.Int64, Shape.Of(x.Rank))])[0];
        y.Known = x.Shape.ToArray();
        return y;
    }

    /// <summary>Reshape to <paramref name="dims"/> (ONNX semantics: 0 copies the input dim, -1 is inferred).</summary>
    public Value Reshape(Value x, params long[] dims) => Reshape(x, Ints(dims));

    /// <summary>The runtime length of <paramref name="x"/> along <paramref name="axis"/>, as an int64 scalar.</summary>
    public Value SizeOf(Value x, long axis) => Squeeze(Slice(ShapeOf(x), Ints(axis), Ints(axis + 1), Ints(0)), 0);

    /// <summary>Reshape to the runtime shape <paramref name="shape"/> (1-D int64).</summary>
    public Value Reshape(Value x, Value shape)
    {
        var y = Emit("Reshape", [x, shape], null, n => [(x.Type, ReshapeShape(x.Shape, shape, n))])[0];
        y.Known = x.Known;
        return y;
    }

    private static Shape ReshapeShape(Shape input, Value shape, string node)
    {
        if (shape.Type != DType.Int64 || shape.Rank != 1)
            throw Error("Reshape", node, $"Shape input must be 1-D int64, got {shape.Type.Name()}{shape.Shape}");
        if (shape.Known is not { } target)
        {
            if (!shape.Shape[0].IsStatic) throw Error("Reshape", node, $"Shape input {shape} has unknown length");
            return new Shape(Enumerable.Repeat(Dim.Unknown, (int)shape.Shape[0].Value));
        }
        var dims = new Dim[target.Count];
        int infer = -1;
        for (int i = 0; i < dims.Length; i++)
        {
            var t = target[i];
            if (t.IsStatic && t.Value == 0)
            {
                if (i >= input.Rank) throw Error("Reshape", node, $"Target dim {i} is 0 (copy) but input {input} has rank {input.Rank}");
                dims[i] = input[i];
            }
            else if (t.IsStatic && t.Value == -1) { if (infer >= 0) throw Error("Reshape", node, "More than one -1 in target shape"); infer = i; }
            else dims[i] = t;
        }
        var total = input.NumElements;
        if (infer >= 0)
        {
            var rest = Dim.Product(dims.Where((_, i) => i != infer));
            if (total.IsStatic && rest.IsStatic)
            {
                if (rest.Value == 0 || total.Value % rest.Value != 0)
                    throw Error("Reshape", node, $"Cannot reshape {input} to [{string.Join(", ", target.Select(FormatTarget))}]");
                dims[infer] = total.Value / rest.Value;
            }
            else dims[infer] = Dim.TryDivide(total, rest, out var q) ? q : Dim.Unknown;
        }
        var result = new Shape(dims);
        var count = result.NumElements;
        if (total.IsStatic && count.IsStatic && total.Value != count.Value)
            throw Error("Reshape", node, $"Cannot reshape {input} ({total} elements) to {result} ({count} elements)");
        return result;
    }

    private static string FormatTarget(Dim d) => d.IsStatic && d.Value == -1 ? "-1" : d.ToString();

    /// <summary>Flattens to 2-D: dims before <paramref name="axis"/> and from it on.</summary>
    public Value Flatten(Value x, long axis = 1) => Emit("Flatten", [x], new() { ["axis"] = axis }, n =>
    {
        var a = axis < 0 ? axis + x.Rank : axis;
        if (a < 0 || a > x.Rank) throw Error("Flatten", n, $"Axis {axis} is out of range for {x.Shape}");
        return [(x.Type, Shape.Of(Dim.Product(x.Shape.Take((int)a)), Dim.Product(x.Shape.Skip((int)a))))];
    })[0];

    /// <summary>Permutes dims; no <paramref name="perm"/> reverses them.</summary>
    public Value Transpose(Value x, params long[] perm)
    {
        if (perm.Length == 0) perm = Enumerable.Range(0, x.Rank).Reverse().Select(i => (long)i).ToArray();
        return Emit("Transpose", [x], new() { ["perm"] = perm }, n =>
        {
            if (perm.Length != x.Rank || perm.Distinct().Count() != perm.Length || perm.Any(p => p < 0 || p >= x.Rank))
                throw Error("Transpose", n, $"perm [{string.Join(", ", perm)}] is not a permutation of the dims of {x.Shape}");
            return [(x.Type, new Shape(perm.Select(p => x.Shape[(int)p])))];
        })[0];
    }

    /// <summary>Inserts size-1 dims at <paramref name="axes"/> (of the output).</summary>
    public Value Unsqueeze(Value x, params long[] axes)
    {
        var y = Emit("Unsqueeze", [x, Ints(axes)], null, n =>
        {
            int rank = x.Rank + axes.Length;
            var norm = axes.Select(a => a < 0 ? a + rank : a).ToArray();
            if (norm.Any(a => a < 0 || a >= rank) || norm.Distinct().Count() != norm.Length)
                throw Error("Unsqueeze", n, $"Axes [{string.Join(", ", axes)}] are invalid for {x.Shape}");
            var dims = new List<Dim>();
            int src = 0;
            for (int i = 0; i < rank; i++) dims.Add(norm.Contains(i) ? Dim.Of(1) : x.Shape[src++]);
            return [(x.Type, new Shape(dims))];
        })[0];
        y.Known = x.Known;
        return y;
    }

    /// <summary>Removes size-1 dims at <paramref name="axes"/> (all size-1 dims when none are given).</summary>
    public Value Squeeze(Value x, params long[] axes)
    {
        Value?[] inputs = axes.Length == 0 ? [x] : [x, Ints(axes)];
        var y = Emit("Squeeze", inputs, null, n =>
        {
            var norm = axes.Length == 0
                ? Enumerable.Range(0, x.Rank).Where(i => x.Shape[i].IsStatic && x.Shape[i].Value == 1).Select(i => (long)i).ToArray()
                : axes.Select(a => a < 0 ? a + x.Rank : a).ToArray();
            foreach (var a in norm)
                if (a < 0 || a >= x.Rank || (x.Shape[(int)a].IsStatic && x.Shape[(int)a].Value != 1))
                    throw Error("Squeeze", n, $"Cannot squeeze axis {a} of {x.Shape}");
            return [(x.Type, new Shape(x.Shape.Where((_, i) => !norm.Contains(i))))];
        })[0];
        y.Known = x.Known;
        return y;
    }

    /// <summary>Joins tensors along <paramref name="axis"/>.</summary>
    public Value Concat(long axis, params Value[] xs)
    {
        if (xs.Length == 0) throw new GraphBuildException("Concat needs at least one input.");
        var y = Emit("Concat", xs, new() { ["axis"] = axis }, n =>
        {
            var first = xs[0];
            int a = first.Shape.Axis(axis, "Concat");
            var dims = first.Shape.ToArray();
            foreach (var x in xs.Skip(1))
            {
                if (x.Type != first.Type || x.Rank != first.Rank)
                    throw Error("Concat", n, $"Cannot concatenate {first.Type.Name()}{first.Shape} with {x.Type.Name()}{x.Shape}");
                for (int i = 0; i < dims.Length; i++)
                {
                    if (i == a) continue;
                    if (!Dim.MaybeEqual(dims[i], x.Shape[i]))
                        throw Error("Concat", n, $"Cannot concatenate {first.Shape} with {x.Shape} along axis {axis}");
                }
            }
            dims[a] = xs.All(x => x.Shape[a].IsStatic) ? xs.Sum(x => x.Shape[a].Value) : Dim.Unknown;
            if (!dims[a].IsKnown && xs.Count(x => !(x.Shape[a].IsStatic && x.Shape[a].Value == 0)) == 1)
                dims[a] = xs.First(x => !(x.Shape[a].IsStatic && x.Shape[a].Value == 0)).Shape[a];
            return [(first.Type, new Shape(dims))];
        })[0];
        if (xs.All(x => x.Known is not null) && xs.All(x => x.Rank == 1))
            y.Known = xs.SelectMany(x => x.Known!).ToArray();
        return y;
    }

    /// <summary>Splits along <paramref name="axis"/> into pieces of the given static sizes.</summary>
    public Value[] Split(Value x, long axis, params long[] sizes)
    {
        if (sizes.Length == 0) throw new GraphBuildException("Split needs at least one size.");
        return Split(x, axis, Ints(sizes));
    }

    /// <summary>Splits along <paramref name="axis"/> into pieces whose sizes are the 1-D int64 <paramref name="sizes"/>.</summary>
    public Value[] Split(Value x, long axis, Value sizes)
    {
        if (sizes.Rank != 1 || !sizes.Shape[0].IsStatic)
            throw new GraphBuildException($"Split sizes must be 1-D with a static length, got {sizes}.");
        int count = (int)sizes.Shape[0].Value;
        return Emit("Split", [x, sizes], new() { ["axis"] = axis }, n =>
        {
            int a = x.Shape.Axis(axis, "Split");
            var outs = new (DType, Shape)[count];
            for (int i = 0; i < count; i++)
            {
                var dims = x.Shape.ToArray();
                dims[a] = sizes.Known is { } k ? k[i] : Dim.Unknown;
                outs[i] = (x.Type, new Shape(dims));
            }
            if (sizes.Known is { } known && x.Shape[a].IsKnown)
            {
                var total = known.All(d => d.IsStatic) ? Dim.Of(known.Sum(d => d.Value)) : Dim.Unknown;
                if (total.IsStatic && x.Shape[a].IsStatic && total.Value != x.Shape[a].Value)
                    throw Error("Split", n, $"Sizes [{string.Join(", ", known)}] do not add up to dim {a} of {x.Shape}");
            }
            return outs;
        });
    }

    /// <summary>Slice with static starts/ends/axes/steps (ONNX clamping rules; long.MaxValue means "to the end").</summary>
    public Value Slice(Value x, long[] starts, long[] ends, long[]? axes = null, long[]? steps = null)
    {
        axes ??= Enumerable.Range(0, starts.Length).Select(i => (long)i).ToArray();
        steps ??= Enumerable.Repeat(1L, starts.Length).ToArray();
        return Slice(x, Ints(starts), Ints(ends), Ints(axes), Ints(steps));
    }

    /// <summary>Slice with runtime starts/ends (1-D int64 tensors) over static <paramref name="axes"/> and <paramref name="steps"/>.</summary>
    public Value Slice(Value x, Value starts, Value ends, Value axes, Value? steps = null)
    {
        Value?[] inputs = steps is null ? [x, starts, ends, axes] : [x, starts, ends, axes, steps];
        var y = Emit("Slice", inputs, null, n =>
        {
            if (axes.Known is not { } ax) throw Error("Slice", n, "Axes must be known at build time");
            var dims = x.Shape.ToArray();
            for (int i = 0; i < ax.Count; i++)
            {
                int a = x.Shape.Axis(ax[i].Value, "Slice");
                var st = starts.Known?[i];
                var en = ends.Known?[i];
                long? step = steps is null ? 1 : steps.Known is { } sk && sk[i].IsStatic ? sk[i].Value : null;
                if (step == 0) throw Error("Slice", n, "Step cannot be 0");
                dims[a] = step is { } known ? SliceDim(x.Shape[a], st, en, known) : Dim.Unknown;
            }
            return [(x.Type, new Shape(dims))];
        })[0];
        if (x.Known is { } kx && x.Rank == 1 && starts.Known is { } s0 && ends.Known is { } e0 && s0[0].IsStatic && e0[0].IsStatic
            && (steps is null || steps.Known is [{ IsStatic: true, Value: 1 }]))
        {
            long len = kx.Count, s = Clamp(s0[0].Value, len), e = Clamp(e0[0].Value, len);
            y.Known = kx.Skip((int)s).Take((int)Math.Max(0, e - s)).ToArray();
        }
        return y;
    }

    private static long Clamp(long i, long len) => Math.Clamp(i < 0 ? i + len : i, 0, len);

    private static Dim SliceDim(Dim dim, Dim? start, Dim? end, long step)
    {
        if (start is not { IsStatic: true } s || end is not { } e) return Dim.Unknown;
        if (dim.IsStatic && e.IsStatic)
        {
            long len = dim.Value;
            if (step > 0)
            {
                long b = Clamp(s.Value, len), f = Clamp(e.Value, len);
                return Math.Max(0, (f - b + step - 1) / step);
            }
            if (len == 0) return 0;
            long bb = s.Value < 0 ? s.Value + len : s.Value, ee = e.Value < 0 ? e.Value + len : e.Value;
            bb = Math.Clamp(bb, 0, len - 1);
            ee = Math.Clamp(ee, -1, len - 1);
            return Math.Max(0, (bb - ee + (-step) - 1) / (-step));
        }
        if (step == 1 && s.Value == 0)
        {
            if (e.IsStatic && e.Value >= int.MaxValue) return dim;
            if (e == dim) return dim;
            if (e.IsSymbolic) return e; // slicing [:T] of a longer dim: T <= dim by construction
        }
        if (step == 1 && e.IsStatic && e.Value >= int.MaxValue && s.Value >= 0 && dim.IsStatic)
            return Math.Max(0, dim.Value - s.Value);
        return Dim.Unknown;
    }

    /// <summary>Gathers slices of <paramref name="data"/> along <paramref name="axis"/> at integer <paramref name="indices"/>.</summary>
    public Value Gather(Value data, Value indices, long axis = 0)
    {
        var y = Emit("Gather", [data, indices], new() { ["axis"] = axis }, n =>
        {
            if (indices.Type is not (DType.Int64 or DType.Int32))
                throw Error("Gather", n, $"Indices must be int32 or int64, got {indices.Type.Name()}{indices.Shape}");
            int a = data.Shape.Axis(axis, "Gather");
            var dims = data.Shape.Take(a).Concat(indices.Shape).Concat(data.Shape.Skip(a + 1));
            return [(data.Type, new Shape(dims))];
        })[0];
        if (data.Known is { } kd && data.Rank == 1 && indices.Known is { } ki && ki.All(d => d.IsStatic))
            y.Known = ki.Select(i => kd[(int)(i.Value < 0 ? i.Value + kd.Count : i.Value)]).ToArray();
        return y;
    }

    /// <summary>Broadcasts <paramref name="x"/> to the runtime shape <paramref name="shape"/>.</summary>
    public Value Expand(Value x, Value shape) => Emit("Expand", [x, shape], null, n =>
    {
        if (shape.Known is not { } k) throw Error("Expand", n, "Target shape must be known at build time (a constant or computed from Shape)");
        return [(x.Type, Broadcast("Expand", n, x.Shape, new Shape(k)))];
    })[0];

    public Value Expand(Value x, params long[] dims) => Expand(x, Ints(dims));

    /// <summary>A tensor of the runtime shape <paramref name="shape"/> filled with <paramref name="value"/>.</summary>
    public Value ConstantOfShape(Value shape, double value, DType type)
    {
        var fill = TensorData.FromNumbers(type, [value], 1);
        return Emit("ConstantOfShape", [shape], new() { ["value"] = AttrValue.Of(fill) }, n =>
        {
            if (shape.Known is { } k) return [(type, new Shape(k))];
            if (shape.Rank == 1 && shape.Shape[0].IsStatic) return [(type, new Shape(Enumerable.Repeat(Dim.Unknown, (int)shape.Shape[0].Value)))];
            throw Error("ConstantOfShape", n, $"Shape input {shape} has unknown length");
        })[0];
    }

    /// <summary><c>[start, start+delta, ...) &lt; limit</c> of scalars.</summary>
    public Value Range(Value start, Value limit, Value delta)
    {
        var y = Emit("Range", [start, limit, delta], null, n =>
        {
            Dim len = Dim.Unknown;
            if (start.Known is [{ IsStatic: true } s] && limit.Known is [{ } l] && delta.Known is [{ IsStatic: true } d])
            {
                if (l.IsStatic) len = Math.Max(0, (long)Math.Ceiling((l.Value - s.Value) / (double)d.Value));
                else if (s.Value == 0 && d.Value == 1) len = l;
            }
            return [(start.Type, Shape.Of(len))];
        })[0];
        return y;
    }

    /// <summary>Upper (or lower) triangle of the last two dims, offset by <paramref name="k"/>.</summary>
    public Value Trilu(Value x, bool upper, long k = 0) =>
        Emit("Trilu", [x, Scalar(k, DType.Int64)], new() { ["upper"] = upper ? 1L : 0L }, _ => [(x.Type, x.Shape)])[0];

    /// <summary>ONNX ScatterND; <paramref name="reduction"/> is none, add, mul, max or min.</summary>
    public Value ScatterND(Value data, Value indices, Value updates, string reduction = "none")
    {
        Dictionary<string, AttrValue>? attrs = reduction == "none" ? null : new() { ["reduction"] = reduction };
        return Emit("ScatterND", [data, indices, updates], attrs, n =>
        {
            if (data.Type != updates.Type) throw Error("ScatterND", n, $"Element types differ: {data.Type.Name()} and {updates.Type.Name()}");
            return [(data.Type, data.Shape)];
        })[0];
    }

    /// <summary>ONNX ScatterElements along <paramref name="axis"/>.</summary>
    public Value ScatterElements(Value data, Value indices, Value updates, long axis = 0, string reduction = "none")
    {
        var attrs = new Dictionary<string, AttrValue> { ["axis"] = axis };
        if (reduction != "none") attrs["reduction"] = reduction;
        return Emit("ScatterElements", [data, indices, updates], attrs, n =>
        {
            if (indices.Rank != data.Rank || updates.Rank != data.Rank)
                throw Error("ScatterElements", n, $"data {data.Shape}, indices {indices.Shape} and updates {updates.Shape} must have the same rank");
            return [(data.Type, data.Shape)];
        })[0];
    }

    /// <summary>Constant padding by <paramref name="pads"/> = [begins..., ends...] (non-negative).</summary>
    public Value Pad(Value x, long[] pads, double value = 0) => Emit("Pad", [x, Ints(pads), Scalar(value, x.Type)], null, n =>
    {
        if (pads.Length != 2 * x.Rank || pads.Any(p => p < 0))
            throw Error("Pad", n, $"pads [{string.Join(", ", pads)}] must be {2 * x.Rank} non-negative values for {x.Shape}");
        var dims = x.Shape.Select((d, i) => pads[i] + pads[x.Rank + i] == 0 ? d : d.IsStatic ? Dim.Of(d.Value + pads[i] + pads[x.Rank + i]) : Dim.Unknown);
        return [(x.Type, new Shape(dims))];
    })[0];
    /// <summary>ONNX GatherElements: out[i][j][k] = data[index along <paramref name="axis"/>][j][k]; the result has the indices' shape.</summary>
    public Value GatherElements(Value data, Value indices, long axis = 0) => Emit("GatherElements", [data, indices], new() { ["axis"] = axis }, n =>
    {
        if (indices.Type is not (DType.Int64 or DType.Int32)) throw Error("GatherElements", n, $"Indices must be int32 or int64, got {indices.Type.Name()}{indices.Shape}");
        if (indices.Rank != data.Rank) throw Error("GatherElements", n, $"data {data.Shape} and indices {indices.Shape} must have the same rank");
        data.Shape.Axis(axis, "GatherElements");
        return [(data.Type, indices.Shape)];
    })[0];

    /// <summary>
    /// ONNX TopK along <paramref name="axis"/> with <paramref name="k"/> a 1-element int64 tensor: [values, indices].
    /// <paramref name="kDim"/> names the output length along the axis when the caller knows it.
    /// </summary>
    public Value[] TopK(Value x, Value k, long axis = -1, bool largest = true, bool sorted = true, Dim? kDim = null) =>
        Emit("TopK", [x, k], new() { ["axis"] = axis, ["largest"] = largest ? 1L : 0L, ["sorted"] = sorted ? 1L : 0L }, n =>
        {
            int a = x.Shape.Axis(axis, "TopK");
            if (k.Type != DType.Int64) throw Error("TopK", n, $"k must be int64, got {k}");
            var len = kDim ?? (k.Known is [var kd] ? kd : Dim.Unknown);
            var s = new Shape(x.Shape.Select((d, i) => i == a ? len : d));
            return [(x.Type, s), (DType.Int64, s)];
        });

    /// <summary>ONNX CumSum along <paramref name="axis"/> (optionally exclusive and/or from the end).</summary>
    public Value CumSum(Value x, long axis, bool exclusive = false, bool reverse = false) =>
        Emit("CumSum", [x, Scalar(axis, DType.Int64)], new() { ["exclusive"] = exclusive ? 1L : 0L, ["reverse"] = reverse ? 1L : 0L }, n =>
        {
            x.Shape.Axis(axis, "CumSum");
            return [(x.Type, x.Shape)];
        })[0];
}
