namespace Optimum.Onnx;

/// <summary>What a <see cref="Value"/> is in its graph.</summary>
public enum ValueKind { Input, Parameter, Constant, Intermediate }

/// <summary>
/// A tensor in a graph: a graph input, a parameter (a graph input that gradients are taken for),
/// a constant (initializer) or a node output. Values know their builder, so arithmetic operators
/// (<c>x + y</c>, <c>x * 0.5</c>) add nodes to it.
/// </summary>
public sealed class Value
{
    internal Value(GraphBuilder graph, string name, DType type, Shape shape, ValueKind kind)
    {
        Graph = graph;
        Name = name;
        Type = type;
        Shape = shape;
        Kind = kind;
    }

    public GraphBuilder Graph { get; }
    public string Name { get; }
    public DType Type { get; }
    public Shape Shape { get; }
    public ValueKind Kind { get; }
    public int Rank => Shape.Rank;

    /// <summary>The node that produces this value (null for inputs, parameters and constants).</summary>
    public Node? Producer { get; internal set; }
    /// <summary>Which output of <see cref="Producer"/> this is.</summary>
    public int OutputIndex { get; internal set; }
    /// <summary>Contents when <see cref="Kind"/> is <see cref="ValueKind.Constant"/>.</summary>
    public TensorData? Data { get; internal set; }
    /// <summary>
    /// Build-time contents of small integer tensors (shape arithmetic), possibly symbolic:
    /// <c>Shape(x)</c> knows x's dims. Null when unknown.
    /// </summary>
    public IReadOnlyList<Dim>? Known { get; internal set; }

    public override string ToString() => $"'{Name}' {Type.Name()}{Shape}";

    public static Value operator +(Value a, Value b) => a.Graph.Add(a, b);
    public static Value operator -(Value a, Value b) => a.Graph.Sub(a, b);
    public static Value operator *(Value a, Value b) => a.Graph.Mul(a, b);
    public static Value operator /(Value a, Value b) => a.Graph.Div(a, b);
    public static Value operator -(Value a) => a.Graph.Neg(a);
    public static Value operator +(Value a, double b) => a.Graph.Add(a, a.Graph.Scalar(b, a.Type));
    public static Value operator +(double a, Value b) => b.Graph.Add(b.Graph.Scalar(a, b.Type), b);
    public static Value operator -(Value a, double b) => a.Graph.Sub(a, a.Graph.Scalar(b, a.Type));
    public static Value operator -(double a, Value b) => b.Graph.Sub(b.Graph.Scalar(a, b.Type), b);
    public static Value operator *(Value a, double b) => a.Graph.Mul(a, a.Graph.Scalar(b, a.Type));
    public static Value operator *(double a, Value b) => b.Graph.Mul(b.Graph.Scalar(a, b.Type), b);
    public static Value operator /(Value a, double b) => a.Graph.Div(a, a.Graph.Scalar(b, a.Type));
    public static Value operator /(double a, Value b) => b.Graph.Div(b.Graph.Scalar(a, b.Type), b);
}
