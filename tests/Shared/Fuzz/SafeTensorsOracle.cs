using System.Buffers.Binary;
using System.Numerics;
using System.Text.Json;
using Optimum.Core;

namespace Optimum.Tests.Fuzz;

/// <summary>A tensor as the fuzzer builds files from: name, dtype string, shape, raw little-endian bytes.</summary>
public sealed record StTensor(string Name, string DType, long[] Shape, byte[] Bytes);

/// <summary>What the oracle makes of a file: accepted (with the weights and unused names a reader must produce) or why not.</summary>
public sealed record StJudgement(bool Ok, string Why, float[][]? Weights = null, IReadOnlyList<string>? Unused = null);

/// <summary>
/// An independent reading of the safetensors format (huggingface/safetensors' spec: u64 little-endian header length, a JSON
/// object of tensors and an optional string-to-string <c>__metadata__</c>, tensors covering the data section exactly) and of
/// what a model needs from it: every parameter (HF name, or without the <c>transformer.</c> prefix), a floating-point dtype,
/// the model's shape and finite values. The fuzzer's verdicts come from here, not from the library under test.
/// </summary>
public static class SafeTensorsOracle
{
    public static readonly IReadOnlyDictionary<string, int> Sizes = new Dictionary<string, int>(StringComparer.Ordinal)
    {
        ["F32"] = 4, ["F16"] = 2, ["BF16"] = 2, ["F64"] = 8, ["I64"] = 8, ["I32"] = 4, ["I8"] = 1, ["U8"] = 1, ["BOOL"] = 1,
    };

    private static readonly string[] BufferSuffixes = [".attn.bias", ".attn.masked_bias", ".num_batches_tracked"];

    /// <summary>The file's structure alone: the entries (name, dtype, shape, data bytes), or why it is not a safetensors file.</summary>
    public static (List<StTensor>? Tensors, string Why) Structure(byte[] file)
    {
        if (file.Length < 8) return (null, "shorter than the 8-byte header length");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(file);
        if (n > (ulong)(file.Length - 8)) return (null, $"header length {n} past the end");
        int dataStart = 8 + (int)n;
        long dataLen = file.Length - dataStart;
        JsonDocument doc;
        try { doc = JsonDocument.Parse(file.AsMemory(8, (int)n)); }
        catch (JsonException) { return (null, "header is not JSON"); }
        using var owned = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object) return (null, "header is not an object");
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var entries = new List<(string Name, string DType, long[] Shape, long Begin, long End)>();
        try
        {
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                var name = p.Name;
                if (!seen.Add(name)) return (null, $"'{name}' twice");
                if (name == "__metadata__")
                {
                    if (p.Value.ValueKind == JsonValueKind.Null) continue;                    // Option<HashMap<String, String>>: null is none
                    if (p.Value.ValueKind != JsonValueKind.Object) return (null, "__metadata__ not an object");
                    var keys = new HashSet<string>(StringComparer.Ordinal);
                    foreach (var m in p.Value.EnumerateObject())
                    {
                        if (!keys.Add(m.Name)) return (null, "__metadata__ key twice");
                        if (m.Value.ValueKind != JsonValueKind.String) return (null, "__metadata__ value not a string");
                        _ = m.Value.GetString();
                    }
                    continue;
                }
                var t = p.Value;
                if (t.ValueKind != JsonValueKind.Object) return (null, "entry not an object");
                if (!t.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String || !Sizes.TryGetValue(dt.GetString()!, out int size))
                    return (null, "dtype");
                if (!t.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array) return (null, "shape not an array");
                var shape = new List<long>();
                foreach (var d in sh.EnumerateArray())
                {
                    if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out var v) || v < 0) return (null, "shape entry");
                    shape.Add(v);
                }
                if (!t.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2) return (null, "data_offsets");
                if (off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
                    || !off[0].TryGetInt64(out var b) || !off[1].TryGetInt64(out var e) || b < 0 || e < b) return (null, "data_offsets values");
                if (e > dataLen) return (null, "data_offsets past the data");
                var bytes = shape.Aggregate(BigInteger.One, (a, d) => a * d) * size;
                if (bytes != e - b) return (null, "data_offsets span differs from the shape");
                entries.Add((name, dt.GetString()!, shape.ToArray(), b, e));
            }
        }
        catch (InvalidOperationException) { return (null, "a string that does not decode (lone surrogate)"); }
        long expected = 0;
        foreach (var x in entries.OrderBy(x => x.Begin).ThenBy(x => x.End))
        {
            if (x.Begin != expected) return (null, "gap or overlap");
            expected = x.End;
        }
        if (expected != dataLen) return (null, "data section not covered exactly");
        return (entries.Select(x => new StTensor(x.Name, x.DType, x.Shape, file[(dataStart + (int)x.Begin)..(dataStart + (int)x.End)])).ToList(), "");
    }

    /// <summary>The <c>__metadata__</c> of a file that <see cref="Structure"/> accepts (empty when absent or null).</summary>
    public static Dictionary<string, string> Metadata(byte[] file)
    {
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(file);
        using var doc = JsonDocument.Parse(file.AsMemory(8, n));
        return doc.RootElement.TryGetProperty("__metadata__", out var m) && m.ValueKind == JsonValueKind.Object
            ? m.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!, StringComparer.Ordinal)
            : new Dictionary<string, string>(StringComparer.Ordinal);
    }

    /// <summary>The file read for a model with <paramref name="parameters"/> (as an export or a checkpoint load reads it).</summary>
    public static StJudgement Judge(byte[] file, IReadOnlyList<ParameterInfo> parameters)
    {
        var (tensors, why) = Structure(file);
        if (tensors is null) return new(false, why);
        var byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        var used = new HashSet<string>(StringComparer.Ordinal);
        var weights = new float[parameters.Count][];
        for (int i = 0; i < parameters.Count; i++)
        {
            var p = parameters[i];
            var key = byName.ContainsKey(p.Name) ? p.Name
                : p.Name.StartsWith("transformer.", StringComparison.Ordinal) && byName.ContainsKey(p.Name["transformer.".Length..]) ? p.Name["transformer.".Length..]
                : null;
            if (key is null) return new(false, $"no tensor '{p.Name}'");
            var t = byName[key];
            if (!t.Shape.SequenceEqual(p.Shape)) return new(false, $"'{key}' shape [{string.Join(", ", t.Shape)}] is not [{string.Join(", ", p.Shape)}]");
            var values = Decode(t);
            if (values is null) return new(false, $"'{key}' is {t.DType}, not floating-point");
            if (Array.Exists(values, v => !float.IsFinite(v))) return new(false, $"'{key}' has a non-finite value");
            weights[i] = values;
            used.Add(key);
        }
        var unused = tensors.Select(t => t.Name).Where(n => !used.Contains(n) && !BufferSuffixes.Any(s => n.EndsWith(s, StringComparison.Ordinal))).ToArray();
        return new(true, "", weights, unused);
    }

    /// <summary>A floating-point tensor's values as float32 (null for other dtypes).</summary>
    public static float[]? Decode(StTensor t)
    {
        var b = t.Bytes.AsSpan();
        int size = t.DType switch { "F32" => 4, "F64" => 8, "F16" or "BF16" => 2, _ => 0 };
        if (size == 0) return null;
        var r = new float[b.Length / size];
        for (int i = 0; i < r.Length; i++)
        {
            var s = b[(size * i)..];
            r[i] = t.DType switch
            {
                "F32" => BinaryPrimitives.ReadSingleLittleEndian(s),
                "F64" => (float)BinaryPrimitives.ReadDoubleLittleEndian(s),
                "F16" => (float)BinaryPrimitives.ReadHalfLittleEndian(s),
                _ => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(s) << 16),
            };
        }
        return r;
    }

    /// <summary>float32 values as bytes of <paramref name="dtype"/> (F32, F16, BF16 by truncation, F64).</summary>
    public static byte[] Encode(float[] values, string dtype)
    {
        int size = Sizes[dtype];
        var r = new byte[values.Length * size];
        for (int i = 0; i < values.Length; i++)
        {
            var s = r.AsSpan(i * size);
            switch (dtype)
            {
                case "F32": BinaryPrimitives.WriteSingleLittleEndian(s, values[i]); break;
                case "F64": BinaryPrimitives.WriteDoubleLittleEndian(s, values[i]); break;
                case "F16": BinaryPrimitives.WriteHalfLittleEndian(s, (Half)values[i]); break;
                case "BF16": BinaryPrimitives.WriteUInt16LittleEndian(s, (ushort)(BitConverter.SingleToInt32Bits(values[i]) >>> 16)); break;
                default: throw new ArgumentException(dtype);
            }
        }
        return r;
    }
}
