namespace Optimum.Core;

/// <summary>
/// Bounds every typed config checks before a graph is built, so that a config.json asking for 2^31 layers or a
/// billion-wide layer is refused naming its fields instead of overflowing, exhausting memory or building for hours.
/// </summary>
public static class ConfigLimits
{
    /// <summary>Most layers a stack may have: several times deeper than released models, and still a graph that builds in minutes.</summary>
    public const int MaxLayers = 1024;

    /// <summary>Most elements of one tensor: parameters are float arrays and views of the flat buffers, indexed by int.</summary>
    public const long MaxTensorElements = int.MaxValue;

    /// <summary>Refuses <paramref name="layers"/> outside [1, <see cref="MaxLayers"/>], naming <paramref name="field"/>.</summary>
    public static void Layers(string source, string field, long layers)
    {
        if (layers is < 1 or > MaxLayers)
            throw new InvalidDataException($"{source}: {field}={layers} is not supported; expected 1 to {MaxLayers} layers.");
    }

    /// <summary>
    /// Refuses a tensor (<paramref name="what"/>, sized by <paramref name="fields"/>) whose element count is not positive or
    /// passes <see cref="MaxTensorElements"/>; computed without overflow.
    /// </summary>
    public static void Tensor(string source, string what, string fields, params long[] dims)
    {
        Int128 n = 1;
        foreach (var d in dims) n *= d;
        if (n < 1 || n > MaxTensorElements)
            throw new InvalidDataException($"{source}: {fields} make {what} [{string.Join(", ", dims)}] with {n} elements; expected 1 to {MaxTensorElements}.");
    }
}
