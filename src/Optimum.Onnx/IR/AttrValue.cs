using System.Globalization;

namespace Optimum.Onnx;

/// <summary>An ONNX node attribute value (int, float, string, tensor, or lists of ints/floats).</summary>
public sealed class AttrValue
{
    private AttrValue(AttrKind kind) => Kind = kind;

    public AttrKind Kind { get; }
    public long Int { get; private init; }
    public float Float { get; private init; }
    public string String { get; private init; } = "";
    public TensorData? Tensor { get; private init; }
    public IReadOnlyList<long> Ints { get; private init; } = [];
    public IReadOnlyList<float> Floats { get; private init; } = [];

    public static AttrValue Of(long v) => new(AttrKind.Int) { Int = v };
    public static AttrValue Of(float v) => new(AttrKind.Float) { Float = v };
    public static AttrValue Of(string v) => new(AttrKind.String) { String = v };
    public static AttrValue Of(TensorData v) => new(AttrKind.Tensor) { Tensor = v };
    public static AttrValue Of(IEnumerable<long> v) => new(AttrKind.Ints) { Ints = v.ToArray() };
    public static AttrValue Of(IEnumerable<float> v) => new(AttrKind.Floats) { Floats = v.ToArray() };

    public static implicit operator AttrValue(long v) => Of(v);
    public static implicit operator AttrValue(int v) => Of(v);
    public static implicit operator AttrValue(float v) => Of(v);
    public static implicit operator AttrValue(string v) => Of(v);
    public static implicit operator AttrValue(long[] v) => Of(v);
    public static implicit operator AttrValue(float[] v) => Of(v);

    public override string ToString() => Kind switch
    {
        AttrKind.Int => Int.ToString(CultureInfo.InvariantCulture),
        AttrKind.Float => Float.ToString(CultureInfo.InvariantCulture),
        AttrKind.String => $"\"{String}\"",
        AttrKind.Ints => "[" + string.Join(", ", Ints) + "]",
        AttrKind.Floats => "[" + string.Join(", ", Floats.Select(f => f.ToString(CultureInfo.InvariantCulture))) + "]",
        _ => "<tensor>",
    };
}

public enum AttrKind { Float = 1, Int = 2, String = 3, Tensor = 4, Floats = 6, Ints = 7 }
