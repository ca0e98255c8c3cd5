namespace Optimum.Core;

/// <summary>
/// The lower-case spelling of enum values used on the command line, in files and on the wire
/// (<c>ScheduleKind.Cosine</c> ↔ "cosine"), and parsing with an error that lists the accepted names.
/// </summary>
public static class EnumNames
{
    /// <summary>The lower-case name of <paramref name="value"/>.</summary>
    public static string Name<T>(T value) where T : struct, Enum =>
        Enum.IsDefined(value) ? value.ToString().ToLowerInvariant() : throw new ArgumentOutOfRangeException(nameof(value), value, $"Not a {typeof(T).Name}.");

    /// <summary>Every accepted name, in declaration order.</summary>
    public static IReadOnlyList<string> Names<T>() where T : struct, Enum => Enum.GetValues<T>().Select(Name).ToArray();

    /// <summary>The value named <paramref name="name"/> (any case); <paramref name="what"/> names the option or field in the error.</summary>
    public static T Parse<T>(string name, string what) where T : struct, Enum
    {
        foreach (var v in Enum.GetValues<T>())
            if (string.Equals(Name(v), name, StringComparison.OrdinalIgnoreCase)) return v;
        throw new ArgumentException($"{what} '{name}' is not one of {string.Join(", ", Names<T>())}.");
    }
}
