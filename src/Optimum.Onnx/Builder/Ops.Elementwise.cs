namespace Optimum.Onnx;

// Elementwise ops: numpy broadcasting, unary maths, comparisons, Where, Cast.
public sealed partial class GraphBuilder
{
    /// <summary>Numpy-style broadcast of shapes; throws naming the op, node and both shapes.</summary>
    internal static Shape Broadcast(string op, string node, params Shape[] shapes)
    {
        int rank = shapes.Max(s => s.Rank);
        var dims = new Dim[rank];
        for (int i = 0; i < rank; i++)
        {
            Dim? r = null;
            foreach (var s in shapes)
            {
                int j = i - (rank - s.Rank);
                if (j < 0) continue;
                var d = s[j];
                if (r is null || r.Value == d || (r.Value.IsStatic && r.Value.Value == 1)) r = d;
                else if (d.IsStatic && d.Value == 1) { }
                else if (!d.IsKnown || d.IsAnonymous) { }
                else if (!r.Value.IsKnown || r.Value.IsAnonymous) r = d;
                else throw Error(op, node, $"Cannot broadcast {string.Join(" with ", shapes.Select(x => x.ToString()))}");
            }
            dims[i] = r!.Value;
        }
        return new Shape(dims);
    }

    /// <summary>True when <paramref name="small"/> broadcasts to exactly <paramref name="target"/> (anonymous dims may match anything).</summary>
    internal static bool BroadcastsTo(Shape small, Shape target) =>
        small.Rank <= target.Rank && Enumerable.Range(0, small.Rank).All(i =>
        {
            var d = small[i];
            var t = target[target.Rank - small.Rank + i];
            return (d.IsStatic && d.Value == 1) || Dim.MaybeEqual(d, t);
        });

    private Value Binary(string op, Value a, Value b, DType? resultType = null)
    {
        var outs = Emit(op, [a, b], null, n =>
        {
            if (a.Type != b.Type) throw Error(op, n, $"Element types differ: {a.Type.Name()}{a.Shape} and {b.Type.Name()}{b.Shape}");
            return [(resultType ?? a.Type, Broadcast(op, n, a.Shape, b.Shape))];
        });
        var y = outs[0];
        if (a.Known is { } ka && b.Known is { } kb && a.Rank <= 1 && b.Rank <= 1 && (ka.Count == kb.Count || ka.Count == 1 || kb.Count == 1))
            y.Known = FoldKnown(op, ka, kb);
        return y;
    }

    private static Dim[]? FoldKnown(string op, IReadOnlyList<Dim> a, IReadOnlyList<Dim> b)
    {
        int n = Math.Max(a.Count, b.Count);
        var r = new Dim[n];
        for (int i = 0; i < n; i++)
        {
            var x = a[a.Count == 1 ? 0 : i];
            var y = b[b.Count == 1 ? 0 : i];
            switch (op)
            {
                case "Mul": r[i] = x * y; break;
                case "Div" when Dim.TryDivide(x, y, out var q): r[i] = q; break;
                case "Add" when x.IsStatic && y.IsStatic: r[i] = x.Value + y.Value; break;
                case "Sub" when x.IsStatic && y.IsStatic && x.Value >= y.Value: r[i] = x.Value - y.Value; break;
                default: return null;
            }
        }
        return r;
    }

    public Value Add(Value a, Value b) => Binary("Add", a, b);
    public Value Sub(Value a, Value b) => Binary("Sub", a, b);
    public Value Mul(Value a, Value b) => Binary("Mul", a, b);
    public Value Div(Value a, Value b) => Binary("Div", a, b);
    /// <summary>Elementwise <c>a ** b</c>; gradients flow to both (to b through log a).</summary>
    public Value Pow(Value a, Value b) => Emit("Pow", [a, b], null, n => [(a.Type, Broadcast("Pow", n, a.Shape, b.Shape))])[0];
    public Value Pow(Value a, double exponent) => Pow(a, Scalar(exponent, a.Type));
    public Value Max(Value a, Value b) => Binary("Max", a, b);
    /// <summary>Integer remainder with the sign of the divisor (ONNX Mod, fmod = 0).</summary>
    public Value Mod(Value a, Value b) => Binary("Mod", a, b);
    public Value Min(Value a, Value b) => Binary("Min", a, b);
    public Value Equal(Value a, Value b) => Binary("Equal", a, b, DType.Bool);
    public Value Less(Value a, Value b) => Binary("Less", a, b, DType.Bool);
    public Value Greater(Value a, Value b) => Binary("Greater", a, b, DType.Bool);
    public Value GreaterOrEqual(Value a, Value b) => Binary("GreaterOrEqual", a, b, DType.Bool);
    public Value LessOrEqual(Value a, Value b) => Binary("LessOrEqual", a, b, DType.Bool);
    public Value And(Value a, Value b) => Binary("And", a, b);
    public Value Or(Value a, Value b) => Binary("Or", a, b);

    /// <summary>Elementwise sum of any number of same-typed tensors (ONNX Sum).</summary>
    public Value Sum(params Value[] xs)
    {
        if (xs.Length == 0) throw new GraphBuildException("Sum needs at least one input.");
        if (xs.Length == 1) return xs[0];
        return Emit("Sum", xs, null, n =>
        {
            if (xs.Any(x => x.Type != xs[0].Type)) throw Error("Sum", n, "Element types differ: " + string.Join(", ", xs.Select(x => x.Type.Name())));
            return [(xs[0].Type, Broadcast("Sum", n, xs.Select(x => x.Shape).ToArray()))];
        })[0];
    }

    private Value Unary(string op, Value x, Dictionary<string, AttrValue>? attrs = null, bool floatOnly = true)
    {
        return Emit(op, [x], attrs, n =>
        {
            if (floatOnly && !x.Type.IsFloating()) throw Error(op, n, $"Expected a floating-point input, got {x.Type.Name()}{x.Shape}");
            return [(x.Type, x.Shape)];
        })[0];
    }

    public Value Neg(Value x) => Unary("Neg", x, floatOnly: false);
    public Value Abs(Value x) => Unary("Abs", x, floatOnly: false);
    public Value Sign(Value x) => Unary("Sign", x, floatOnly: false);
    public Value Sqrt(Value x) => Unary("Sqrt", x);
    public Value Reciprocal(Value x) => Unary("Reciprocal", x);
    public Value Exp(Value x) => Unary("Exp", x);
    public Value Log(Value x) => Unary("Log", x);
    public Value Tanh(Value x) => Unary("Tanh", x);
    public Value Erf(Value x) => Unary("Erf", x);
    public Value Sigmoid(Value x) => Unary("Sigmoid", x);
    public Value Relu(Value x) => Unary("Relu", x);
    public Value Softplus(Value x) => Unary("Softplus", x);
    public Value Floor(Value x) => Unary("Floor", x);
    public Value Ceil(Value x) => Unary("Ceil", x);
    public Value Sin(Value x) => Unary("Sin", x);
    public Value Cos(Value x) => Unary("Cos", x);
    /// <summary>
    /// ONNX Gelu (opset 20): x Φ(x), or with <paramref name="tanh"/> its approximation 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
    /// (HF's gelu_new). One op keeps only x for the backward pass, where the spelled-out formula keeps four tensors.
    /// </summary>
    public Value Gelu(Value x, bool tanh)
    {
        Opset = Math.Max(Opset, OnnxVersions.GeluOpset);
        return Unary("Gelu", x, new() { ["approximate"] = tanh ? "tanh" : "none" });
    }
    public Value Elu(Value x, float alpha = 1f) => Unary("Elu", x, new() { ["alpha"] = alpha });
    public Value Not(Value x) => Unary("Not", x, floatOnly: false);

    /// <summary>A copy of <paramref name="x"/>, optionally under a chosen value name.</summary>
    public Value Identity(Value x, string? name = null)
    {
        var y = Emit("Identity", [x], null, _ => [(x.Type, x.Shape)], name)[0];
        y.Known = x.Known;
        return y;
    }

    public Value Cast(Value x, DType to)
    {
        var y = Emit("Cast", [x], new() { ["to"] = (long)to }, _ => [(to, x.Shape)])[0];
        if (to is DType.Int64 or DType.Int32) y.Known = x.Known;
        return y;
    }

    /// <summary><c>cond ? x : y</c> elementwise, with broadcasting of all three.</summary>
    public Value Where(Value cond, Value x, Value y) => Emit("Where", [cond, x, y], null, n =>
    {
        if (cond.Type != DType.Bool) throw Error("Where", n, $"Condition must be bool, got {cond.Type.Name()}{cond.Shape}");
        if (x.Type != y.Type) throw Error("Where", n, $"Element types differ: {x.Type.Name()}{x.Shape} and {y.Type.Name()}{y.Shape}");
        return [(x.Type, Broadcast("Where", n, cond.Shape, x.Shape, y.Shape))];
    })[0];
}
