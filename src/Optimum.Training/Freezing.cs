using System.Security.Cryptography;
using System.Text;
using Optimum.Core;

namespace Optimum.Training;

/// <summary>
/// Which parameters a run freezes (<see cref="TrainerOptions.Freeze"/>, <c>--freeze</c>). A pattern is matched against
/// a parameter's HF name segment by segment (segments are separated by '.'):
/// <list type="bullet">
/// <item><c>*</c> inside a segment matches any characters of that segment (never a '.'): <c>h.*.attn</c>, <c>ln_*</c>;</item>
/// <item>a segment <c>**</c> matches any number of whole segments, none included: <c>**.bias</c> (every bias, a suffix
/// match), <c>transformer.**.weight</c>;</item>
/// <item>a pattern matches a name when it matches the whole name or a leading run of its segments, so a module's name
/// freezes all of its parameters: <c>transformer.wte</c> freezes <c>transformer.wte.weight</c>, <c>transformer.h.0</c>
/// the first block (but not <c>transformer.h.10</c>: segments are compared whole).</item>
/// </list>
/// Matching is case-sensitive. Buffers (parameters that are never trained, e.g. BatchNorm running statistics) are not
/// counted: a pattern that matches no trainable parameter, or patterns that leave nothing to train, are refused.
/// </summary>
public static class Freezing
{
    /// <summary>Whether <paramref name="pattern"/> matches <paramref name="name"/> (see the class summary).</summary>
    public static bool Matches(string pattern, string name)
    {
        if (string.IsNullOrWhiteSpace(pattern)) throw new ArgumentException("A freeze pattern is empty.", nameof(pattern));
        return Match(pattern.Split('.'), 0, name.Split('.'), 0);
    }

    private static bool Match(string[] p, int i, string[] n, int j)
    {
        if (i == p.Length) return true;                                                  // a leading run of segments: a module prefix
        if (p[i] == "**")
        {
            for (int k = j; k <= n.Length; k++) if (Match(p, i + 1, n, k)) return true;
            return false;
        }
        return j < n.Length && Segment(p[i], n[j]) && Match(p, i + 1, n, j + 1);
    }

    /// <summary>Glob over one segment: '*' is any run of characters.</summary>
    private static bool Segment(string p, string s)
    {
        int pi = 0, si = 0, star = -1, mark = 0;
        while (si < s.Length)
        {
            if (pi < p.Length && p[pi] == '*') { star = pi++; mark = si; }
            else if (pi < p.Length && p[pi] == s[si]) { pi++; si++; }
            else if (star >= 0) { pi = star + 1; si = ++mark; }
            else return false;
        }
        while (pi < p.Length && p[pi] == '*') pi++;
        return pi == p.Length;
    }

    /// <summary>
    /// The names of the trainable parameters <paramref name="patterns"/> freeze, in graph order. A pattern that matches no
    /// trainable parameter, or patterns that freeze every trainable parameter, are refused with the pattern and examples.
    /// </summary>
    public static IReadOnlyList<string> Resolve(IReadOnlyList<string> patterns, IReadOnlyList<ParameterInfo> parameters)
    {
        if (patterns.Count == 0) return [];
        var trainable = parameters.Where(p => p.Trainable).Select(p => p.Name).ToArray();
        foreach (var pattern in patterns)
            if (!trainable.Any(n => Matches(pattern, n)))
                throw new ArgumentException($"--freeze '{pattern}' matches no trainable parameter; names look like {string.Join(", ", trainable.Take(4).Select(n => $"'{n}'"))}"
                    + " (patterns match whole '.'-separated segments or a leading run of them; '*' stays inside a segment, '**' spans segments).");
        var frozen = trainable.Where(n => patterns.Any(p => Matches(p, n))).ToArray();
        if (frozen.Length == trainable.Length)
            throw new ArgumentException($"--freeze {string.Join(" ", patterns.Select(p => $"'{p}'"))} freezes all {trainable.Length} trainable parameters: nothing would be trained.");
        return frozen;
    }

    /// <summary>The parameter list with <paramref name="frozen"/> marked not trainable (they keep their place in graph order).</summary>
    public static IReadOnlyList<ParameterInfo> Apply(IReadOnlyList<ParameterInfo> parameters, IReadOnlyCollection<string> frozen)
    {
        if (frozen.Count == 0) return parameters;
        var set = frozen.ToHashSet(StringComparer.Ordinal);
        return parameters.Select(p => set.Contains(p.Name) ? p with { Trainable = false } : p).ToArray();
    }

    /// <summary>
    /// SHA-256 (lowercase hex) of the frozen weights: for each frozen parameter in graph order, its name, a zero byte and
    /// its float32 values (little-endian). Checkpoints record it; a resume against other base weights is refused.
    /// </summary>
    public static string Checksum(ParameterStore store, IReadOnlyCollection<string> frozen)
    {
        var set = frozen.ToHashSet(StringComparer.Ordinal);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (int i = 0; i < store.Parameters.Count; i++)
        {
            if (!set.Contains(store.Parameters[i].Name)) continue;
            sha.AppendData(Encoding.UTF8.GetBytes(store.Parameters[i].Name));
            sha.AppendData([0]);
            sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes((ReadOnlySpan<float>)store.Param(i)));
        }
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
    }
}
