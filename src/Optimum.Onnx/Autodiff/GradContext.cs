namespace Optimum.Onnx;

/// <summary>A gradient rule: given the node and the gradients of its outputs, one gradient per input (null = none).</summary>
public delegate Value?[] GradientRule(GradContext c);

/// <summary>What a <see cref="GradientRule"/> sees: the graph, the node, its output gradients, and helpers.</summary>
public sealed class GradContext
{
    private readonly Value?[] _dys;
    private readonly bool[] _needs;

    internal GradContext(GraphBuilder g, Node node, Value?[] dys, bool[] needs)
    {
        G = g;
        Node = node;
        _dys = dys;
        _needs = needs;
    }

    public GraphBuilder G { get; }
    public Node Node { get; }

    /// <summary>Input <paramref name="i"/> (throws when absent).</summary>
    public Value X(int i) => Node.Input(i) ?? throw new NotSupportedException($"{Node} lacks input {i}, which its gradient needs.");
    /// <summary>Output <paramref name="i"/>.</summary>
    public Value Y(int i = 0) => i < Node.Outputs.Count ? Node.Outputs[i] : throw new NotSupportedException($"{Node} lacks output {i}, which its gradient needs.");
    /// <summary>Gradient of output <paramref name="i"/>, or null when the loss does not depend on it.</summary>
    public Value? DyOf(int i) => i < _dys.Length ? _dys[i] : null;
    /// <summary>Gradient of the first output (zeros when only other outputs have one).</summary>
    public Value Dy => _dys[0] ?? ZerosLike(Y(0));
    /// <summary>Whether input <paramref name="i"/> needs a gradient.</summary>
    public bool Needs(int i) => i < _needs.Length && _needs[i];

    /// <summary>The input count, so rules can return arrays of the right length.</summary>
    public int InputCount => Node.Inputs.Count;

    public Value Scalar(double v) => G.Scalar(v, Dy.Type);
    public Value Zero => Scalar(0);

    public Value ZerosLike(Value v) => v.Shape.IsStatic
        ? G.ConstantOfShape(G.Ints(v.Shape.ToStatic()), 0, v.Type)
        : G.ConstantOfShape(G.ShapeOf(v), 0, v.Type);

    /// <summary>The runtime shape of <paramref name="v"/>: a constant when static, else <c>Shape(v)</c>.</summary>
    public Value ShapeOf(Value v) => v.Shape.IsStatic ? G.Ints(v.Shape.ToStatic()) : G.ShapeOf(v);

    /// <summary>Reshape to the shape of <paramref name="like"/>.</summary>
    public Value ReshapeLike(Value v, Value like) => G.Reshape(v, ShapeOf(like));

    /// <summary>Integer attribute or Known input holding axes; null when absent.</summary>
    public long[]? AxesInput(int index)
    {
        var a = Node.Input(index);
        if (a is null) return Node.GetInts("axes");
        return a.Known?.Select(d => d.Value).ToArray()
            ?? throw new NotSupportedException($"{Node} has axes that are not known at build time.");
    }

    /// <summary>
    /// Undoes numpy broadcasting: sums <paramref name="grad"/> over the dims that were broadcast to
    /// reach its shape from <paramref name="target"/>'s, and drops the added leading dims.
    /// </summary>
    public Value SumTo(Value grad, Value target)
    {
        var gs = grad.Shape;
        var ts = target.Shape;
        int lead = gs.Rank - ts.Rank;
        if (lead < 0) throw new InvalidOperationException($"Cannot reduce gradient {gs} to the larger shape {ts} in {Node}.");
        var axes = new List<long>();
        for (int i = 0; i < gs.Rank; i++)
        {
            if (i < lead) { axes.Add(i); continue; }
            var t = ts[i - lead];
            var d = gs[i];
            if (t == d) continue;
            if (t.IsStatic && t.Value == 1) { if (!(d.IsStatic && d.Value == 1)) axes.Add(i); continue; }
            if (d.IsStatic && t.IsStatic && d.Value != t.Value)
                throw new InvalidOperationException($"Gradient {gs} does not broadcast from {ts} in {Node}.");
            if (!t.IsKnown || !d.IsKnown || t.IsSymbolic || d.IsSymbolic)
                throw new NotSupportedException($"Cannot tell whether dim {i} of {gs} was broadcast from {ts} in {Node}; give the symbolic dims the same names.");
        }
        if (axes.Count == 0) return grad;
        var r = G.ReduceSum(grad, [.. axes], keepDims: true);
        return lead == 0 ? r : G.Squeeze(r, Enumerable.Range(0, lead).Select(i => (long)i).ToArray());
    }

    /// <summary>Element count of the dims <paramref name="axes"/> of <paramref name="x"/> as a scalar of the gradient type.</summary>
    public Value CountOf(Value x, IEnumerable<int> axes)
    {
        var ax = axes.ToArray();
        var p = Dim.Product(ax.Select(a => x.Shape[a]));
        if (p.IsStatic) return Scalar(p.Value);
        var dims = G.Gather(G.ShapeOf(x), G.Ints(ax.Select(a => (long)a).ToArray()));
        return G.Cast(G.ReduceProd(dims, [0], keepDims: false), Dy.Type);
    }

    /// <summary>Dim <paramref name="axis"/> of <paramref name="x"/> as a 1-element int64 tensor.</summary>
    public Value SizeAlong(Value x, int axis) => x.Shape[axis].IsStatic
        ? G.Ints(x.Shape[axis].Value)
        : G.Gather(G.ShapeOf(x), G.Ints(axis));
}
