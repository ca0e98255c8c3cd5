namespace Optimum.Onnx;

/// <summary>
/// Reverse-mode automatic differentiation over a <see cref="GraphBuilder"/>: the gradient nodes
/// are ordinary ONNX ops added to the same graph, so any ONNX Runtime execution provider runs them.
/// </summary>
public static class Autodiff
{
    /// <summary>
    /// Adds nodes computing d<paramref name="loss"/>/d<c>w</c> for each of <paramref name="wrt"/> and
    /// returns them in the same order. Only nodes between <paramref name="wrt"/> and the loss are
    /// differentiated; gradients of values used several times are summed; a value the loss does not
    /// depend on gets zeros. A node without a rule throws <see cref="NotSupportedException"/>.
    /// </summary>
    /// <param name="loss">A floating-point tensor with exactly one element.</param>
    /// <param name="wrt">Values of the same graph (usually its parameters) with floating-point types.</param>
    public static IReadOnlyList<Value> Gradients(Value loss, IReadOnlyList<Value> wrt)
    {
        var g = loss.Graph;
        if (!loss.Type.IsFloating() || !(loss.Shape.NumElements is { IsStatic: true } n && n.Value == 1))
            throw new GraphBuildException($"The loss must be a floating-point scalar, got {loss}.");
        foreach (var w in wrt)
        {
            g.Own(w, "Autodiff");
            if (!w.Type.IsFloating()) throw new GraphBuildException($"Cannot differentiate with respect to {w}: it is not floating-point.");
        }
        if (wrt.Distinct().Count() != wrt.Count) throw new GraphBuildException("The values to differentiate with respect to contain duplicates.");

        var nodes = g.Nodes;
        int lossNode = loss.Producer is { } lp ? IndexOf(nodes, lp) : -1;

        // Forward: float values that depend on one of wrt.
        var reach = new HashSet<Value>(wrt);
        for (int i = 0; i <= lossNode; i++)
            if (nodes[i].Inputs.Any(x => x is not null && reach.Contains(x)))
                foreach (var o in nodes[i].Outputs) if (o.Type.IsFloating()) reach.Add(o);
        // Backward: values the loss depends on.
        var needed = new HashSet<Value> { loss };
        for (int i = lossNode; i >= 0; i--)
            if (nodes[i].Outputs.Any(needed.Contains))
                foreach (var x in nodes[i].Inputs) if (x is not null) needed.Add(x);

        var contributions = new Dictionary<Value, List<Value>> { [loss] = [OnesLike(g, loss)] };
        for (int i = lossNode; i >= 0; i--)
        {
            var node = nodes[i];
            if (!node.Outputs.Any(o => reach.Contains(o) && needed.Contains(o))) continue;
            var dys = node.Outputs.Select(o => contributions.TryGetValue(o, out var l) ? SumOf(g, o, l) : null).ToArray();
            if (dys.All(d => d is null)) continue;
            var needs = node.Inputs.Select(x => x is not null && reach.Contains(x)).ToArray();
            if (!needs.Any(b => b)) continue;

            if (!GradientRules.Table.TryGetValue(node.OpType, out var rule) || node.Domain != "")
                throw new NotSupportedException($"No gradient rule for {node.OpType} (node '{node.Name}'); rules live in {nameof(GradientRules)}.{nameof(GradientRules.Table)} (src/Optimum.Onnx/Autodiff/GradientRules.cs).");
            Value?[] dxs;
            using (g.Scope("grad/" + node.Name))
                dxs = rule(new GradContext(g, node, dys, needs));
            // Rules may describe every optional input; entries past the node's inputs must be null.
            if (dxs.Length < node.Inputs.Count || dxs.Skip(node.Inputs.Count).Any(d => d is not null))
                throw new InvalidOperationException($"Gradient rule for {node} returned {dxs.Length} gradients for {node.Inputs.Count} inputs.");
            for (int k = 0; k < node.Inputs.Count; k++)
            {
                if (!needs[k]) continue;
                var x = node.Inputs[k]!;
                var dx = dxs[k] ?? throw new NotSupportedException(
                    $"{node} has no gradient for input {k} ('{x.Name}'), which depends on a differentiated value.");
                Check(node, x, dx);
                // A rule may produce made-up dims (?k) where x has others; give dx x's runtime shape so that
                // the gradient carries x's symbols further down.
                if (!dx.Shape.Equals(x.Shape))
                    using (g.Scope("grad/" + node.Name))
                        dx = g.Reshape(dx, x.Shape.IsStatic ? g.Ints(x.Shape.ToStatic()) : g.ShapeOf(x));
                if (!contributions.TryGetValue(x, out var list)) contributions[x] = list = [];
                list.Add(dx);
            }
        }
        return wrt.Select(w => contributions.TryGetValue(w, out var l) ? SumOf(g, w, l) : g.ConstantOfShape(g.ShapeOf(w), 0, w.Type)).ToArray();
    }

    private static int IndexOf(IReadOnlyList<Node> nodes, Node n)
    {
        for (int i = nodes.Count - 1; i >= 0; i--) if (ReferenceEquals(nodes[i], n)) return i;
        throw new GraphBuildException($"Node '{n.Name}' is not in the graph.");
    }

    private static Value OnesLike(GraphBuilder g, Value v) => v.Shape.Rank == 0
        ? g.Scalar(1, v.Type)
        : g.Constant(TensorData.FromNumbers(v.Type, [1.0], v.Shape.ToStatic()));

    private static Value SumOf(GraphBuilder g, Value of, List<Value> parts)
    {
        if (parts.Count == 1) return parts[0];
        using (g.Scope("grad/" + of.Name))
        {
            var s = g.Sum([.. parts]);
            parts.Clear();
            parts.Add(s);
            return s;
        }
    }

    private static void Check(Node node, Value x, Value dx)
    {
        if (dx.Type != x.Type)
            throw new InvalidOperationException($"Gradient rule for {node} produced {dx.Type.Name()} for input '{x.Name}' of type {x.Type.Name()}.");
        bool comparable = x.Shape.Rank == dx.Shape.Rank
            ? Enumerable.Range(0, x.Rank).All(i => Dim.MaybeEqual(x.Shape[i], dx.Shape[i]))
            : false;
        if (!comparable)
            throw new InvalidOperationException($"Gradient rule for {node} produced shape {dx.Shape} for input '{x.Name}' of shape {x.Shape}.");
    }
}
