namespace Optimum.Onnx;

// Reductions and (log-)softmax.
public sealed partial class GraphBuilder
{
    private Value Reduce(string op, Value x, long[] axes, bool keepDims)
    {
        Value?[] inputs = axes.Length == 0 ? [x] : [x, Ints(axes)];
        var y = Emit(op, inputs, new() { ["keepdims"] = keepDims ? 1L : 0L }, n =>
        {
            var norm = axes.Length == 0 ? Enumerable.Range(0, x.Rank).ToArray() : axes.Select(a => x.Shape.Axis(a, op)).ToArray();
            if (norm.Distinct().Count() != norm.Length) throw Error(op, n, $"Repeated axes [{string.Join(", ", axes)}]");
            var dims = new List<Dim>();
            for (int i = 0; i < x.Rank; i++)
            {
                if (!norm.Contains(i)) dims.Add(x.Shape[i]);
                else if (keepDims) dims.Add(1);
            }
            return [(x.Type, new Shape(dims))];
        })[0];
        if (op == "ReduceProd" && x.Known is { } k && x.Rank == 1) y.Known = [Dim.Product(k)];
        return y;
    }

    /// <summary>Sum over <paramref name="axes"/> (all axes when none are given).</summary>
    public Value ReduceSum(Value x, long[] axes, bool keepDims = true) => Reduce("ReduceSum", x, axes, keepDims);
    public Value ReduceMean(Value x, long[] axes, bool keepDims = true) => Reduce("ReduceMean", x, axes, keepDims);
    /// <summary>Sum of squares over <paramref name="axes"/> (all axes when none are given), without the squares as a tensor.</summary>
    public Value ReduceSumSquare(Value x, long[] axes, bool keepDims = true) => Reduce("ReduceSumSquare", x, axes, keepDims);
    public Value ReduceMax(Value x, long[] axes, bool keepDims = true) => Reduce("ReduceMax", x, axes, keepDims);
    public Value ReduceProd(Value x, long[] axes, bool keepDims = true) => Reduce("ReduceProd", x, axes, keepDims);

    public Value Softmax(Value x, long axis = -1) => SoftmaxLike("Softmax", x, axis);
    public Value LogSoftmax(Value x, long axis = -1) => SoftmaxLike("LogSoftmax", x, axis);

    private Value SoftmaxLike(string op, Value x, long axis) => Emit(op, [x], new() { ["axis"] = axis }, n =>
    {
        x.Shape.Axis(axis, op);
        if (!x.Type.IsFloating()) throw Error(op, n, $"Expected a floating-point input, got {x.Type.Name()}{x.Shape}");
        return [(x.Type, x.Shape)];
    })[0];
}
