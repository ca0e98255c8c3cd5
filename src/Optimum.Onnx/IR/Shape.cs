namespace Optimum.Onnx;

/// <summary>An immutable tensor shape of <see cref="Dim"/>s; prints as <c>(batch, 3)</c>.</summary>
public sealed class Shape : IReadOnlyList<Dim>, IEquatable<Shape>
{
    private readonly Dim[] _dims;

    public Shape(IEnumerable<Dim> dims) => _dims = dims.ToArray();

    /// <summary>Builds a shape from sizes and symbol names: <c>Shape.Of("batch", 784)</c>.</summary>
    public static Shape Of(params Dim[] dims) => new(dims);

    /// <summary>The shape of a scalar.</summary>
    public static Shape Scalar { get; } = new([]);

    public int Rank => _dims.Length;
    public int Count => _dims.Length;
    public Dim this[int index] => _dims[index];

    /// <summary>True when every dimension is a static size.</summary>
    public bool IsStatic => _dims.All(d => d.IsStatic);

    /// <summary>Element count as a (possibly symbolic) dimension.</summary>
    public Dim NumElements => Dim.Product(_dims);

    /// <summary>Static sizes; throws when any dimension is not static.</summary>
    public long[] ToStatic() => IsStatic
        ? _dims.Select(d => d.Value).ToArray()
        : throw new InvalidOperationException($"Shape {this} is not static.");

    /// <summary>Normalises a possibly negative axis against this rank, naming <paramref name="op"/> on failure.</summary>
    public int Axis(long axis, string op)
    {
        var a = axis < 0 ? axis + Rank : axis;
        if (a < 0 || a >= Rank)
            throw new ArgumentOutOfRangeException(nameof(axis), $"Axis {axis} is out of range for rank {Rank} shape {this} in {op}.");
        return (int)a;
    }

    public IEnumerator<Dim> GetEnumerator() => ((IEnumerable<Dim>)_dims).GetEnumerator();
    System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => _dims.GetEnumerator();

    public bool Equals(Shape? other) => other is not null && _dims.AsSpan().SequenceEqual(other._dims);
    public override bool Equals(object? obj) => Equals(obj as Shape);
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (var d in _dims) h.Add(d);
        return h.ToHashCode();
    }

    public override string ToString() => "(" + string.Join(", ", _dims) + (Rank == 1 ? ",)" : ")");
}
