namespace Optimum.Onnx;

/// <summary>One operator application. Inputs may be <c>null</c> for omitted optional inputs.</summary>
public sealed class Node
{
    internal Node(string opType, string name, Value?[] inputs, IDictionary<string, AttrValue> attributes)
    {
        OpType = opType;
        Name = name;
        Inputs = inputs;
        Attributes = new SortedDictionary<string, AttrValue>(attributes, StringComparer.Ordinal);
    }

    public string OpType { get; }
    /// <summary>Operator domain; empty for ai.onnx.</summary>
    public string Domain { get; init; } = "";
    public string Name { get; }
    public IReadOnlyList<Value?> Inputs { get; }
    public IReadOnlyList<Value> Outputs { get; internal set; } = [];
    /// <summary>Attributes, sorted by name so that output is deterministic.</summary>
    public IReadOnlyDictionary<string, AttrValue> Attributes { get; }

    /// <summary>The input at <paramref name="index"/>, or null when absent.</summary>
    public Value? Input(int index) => index < Inputs.Count ? Inputs[index] : null;

    public long GetInt(string name, long fallback) => Attributes.TryGetValue(name, out var a) ? a.Int : fallback;
    public float GetFloat(string name, float fallback) => Attributes.TryGetValue(name, out var a) ? a.Float : fallback;
    public string GetString(string name, string fallback) => Attributes.TryGetValue(name, out var a) ? a.String : fallback;
    public long[]? GetInts(string name) => Attributes.TryGetValue(name, out var a) ? a.Ints.ToArray() : null;

    public override string ToString() => $"{OpType} (node '{Name}')";
}
