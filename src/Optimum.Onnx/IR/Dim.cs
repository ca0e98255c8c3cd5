using System.Text;

namespace Optimum.Onnx;

/// <summary>
/// One dimension of a shape: a static size, a symbolic monomial such as <c>batch</c> or
/// <c>4*batch*seq</c>, or unknown. Monomials keep reshapes of symbolic shapes exact
/// (<c>(batch, seq, 768) -> (-1, 768)</c> gives <c>batch*seq</c>) and cancel on division.
/// </summary>
public readonly struct Dim : IEquatable<Dim>
{
    private readonly long _coeff;
    private readonly string[]? _symbols; // sorted ordinal; null or empty when static
    private readonly bool _known;

    private Dim(long coeff, string[]? symbols)
    {
        _coeff = coeff;
        _symbols = symbols is { Length: > 0 } ? symbols : null;
        _known = true;
    }

    /// <summary>A dimension nothing is known about (written as neither value nor parameter).</summary>
    public static Dim Unknown => default;

    /// <summary>A static size. Negative values only occur in build-time contents of shape tensors (Reshape's -1).</summary>
    public static Dim Of(long size) => new(size, null);

    /// <summary>A named symbolic dimension such as <c>batch</c>.</summary>
    public static Dim Sym(string name)
    {
        if (string.IsNullOrWhiteSpace(name) || name.Contains('*'))
            throw new ArgumentException($"Invalid symbolic dimension name '{name}'.", nameof(name));
        return new Dim(1, [name]);
    }

    /// <summary>Parses what <see cref="ToString"/> writes: <c>7</c>, <c>batch</c>, <c>4*batch*seq</c>, <c>?</c>.</summary>
    public static Dim Parse(string text)
    {
        if (text == "?" || text.Length == 0) return Unknown;
        long coeff = 1;
        var symbols = new List<string>();
        foreach (var part in text.Split('*'))
        {
            if (long.TryParse(part, out var n)) coeff *= n;
            else symbols.Add(part);
        }
        symbols.Sort(StringComparer.Ordinal);
        return new Dim(coeff, [.. symbols]);
    }

    public static implicit operator Dim(long size) => Of(size);
    public static implicit operator Dim(int size) => Of(size);
    public static implicit operator Dim(string symbol) => Sym(symbol);

    public bool IsKnown => _known;
    public bool IsStatic => _known && _symbols is null;
    public bool IsSymbolic => _known && _symbols is not null;
    /// <summary>
    /// A symbol the builder made up for a size it could not express (e.g. <c>n - 2</c>), named <c>?k</c>:
    /// equal only to itself, and broadcast-compatible with anything.
    /// </summary>
    public bool IsAnonymous => _symbols is not null && _symbols.Any(s => s.StartsWith('?'));

    /// <summary>The static size; throws when the dimension is symbolic or unknown.</summary>
    public long Value => IsStatic ? _coeff : throw new InvalidOperationException($"Dimension '{this}' is not static.");

    /// <summary>False only when the two dims are known to differ (anonymous and unknown dims may equal anything).</summary>
    public static bool MaybeEqual(Dim a, Dim b) => !a.IsKnown || !b.IsKnown || a.IsAnonymous || b.IsAnonymous || a == b;

    public static Dim operator *(Dim a, Dim b)
    {
        if (!a._known || !b._known) return Unknown;
        if (a._coeff == 0 || b._coeff == 0) return Of(0);
        var syms = (a._symbols ?? []).Concat(b._symbols ?? []).ToArray();
        Array.Sort(syms, StringComparer.Ordinal);
        return new Dim(checked(a._coeff * b._coeff), syms);
    }

    /// <summary>Exact division; false when <paramref name="b"/> does not divide <paramref name="a"/> symbolically.</summary>
    public static bool TryDivide(Dim a, Dim b, out Dim quotient)
    {
        quotient = Unknown;
        if (!a._known || !b._known || b._coeff == 0 || a._coeff % b._coeff != 0) return false;
        var rest = new List<string>(a._symbols ?? []);
        foreach (var s in b._symbols ?? [])
            if (!rest.Remove(s)) return false;
        quotient = new Dim(a._coeff / b._coeff, [.. rest]);
        return true;
    }

    /// <summary>Product of dimensions (1 for none).</summary>
    public static Dim Product(IEnumerable<Dim> dims)
    {
        Dim p = Of(1);
        foreach (var d in dims) p *= d;
        return p;
    }

    public bool Equals(Dim other)
    {
        if (_known != other._known) return false;
        if (!_known) return false; // two unknowns are not known to be equal
        if (_coeff != other._coeff) return false;
        var a = _symbols ?? [];
        var b = other._symbols ?? [];
        return a.AsSpan().SequenceEqual(b);
    }

    public override bool Equals(object? obj) => obj is Dim d && Equals(d);
    public static bool operator ==(Dim a, Dim b) => a.Equals(b);
    public static bool operator !=(Dim a, Dim b) => !a.Equals(b);

    public override int GetHashCode()
    {
        var h = new HashCode();
        h.Add(_known);
        h.Add(_coeff);
        foreach (var s in _symbols ?? []) h.Add(s);
        return h.ToHashCode();
    }

    public override string ToString()
    {
        if (!_known) return "?";
        if (_symbols is null) return _coeff.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var sb = new StringBuilder();
        if (_coeff != 1) sb.Append(_coeff).Append('*');
        sb.AppendJoin('*', _symbols);
        return sb.ToString();
    }
}
