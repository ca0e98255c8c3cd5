using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;
using Optimum.Onnx;

namespace Optimum.Hub;

/// <summary>One tensor of a safetensors file: name, element type, shape and little-endian bytes.</summary>
public sealed record SafeTensor(string Name, DType Type, long[] Shape, byte[] Data)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);

    /// <summary>A float32 tensor (the bytes are copied).</summary>
    public static SafeTensor FromFloats(string name, ReadOnlySpan<float> values, params long[] shape) =>
        new(name, DType.Float, shape, MemoryMarshal.AsBytes(values).ToArray());

    public static SafeTensor FromInt64s(string name, ReadOnlySpan<long> values, params long[] shape) =>
        new(name, DType.Int64, shape, MemoryMarshal.AsBytes(values).ToArray());

    /// <summary>The elements as float32, converting F16, BF16 and F64.</summary>
    public float[] ToFloats()
    {
        var n = checked((int)Count);
        var r = new float[n];
        var s = Data.AsSpan();
        switch (Type)
        {
            case DType.Float: MemoryMarshal.Cast<byte, float>(s).CopyTo(r); break;
            case DType.Float16: for (int i = 0; i < n; i++) r[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(s[(2 * i)..]); break;
            case DType.BFloat16: for (int i = 0; i < n; i++) r[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(s[(2 * i)..]) << 16); break;
            case DType.Double: for (int i = 0; i < n; i++) r[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(s[(8 * i)..]); break;
            default: throw new InvalidOperationException($"Tensor '{Name}' of type {Type.Name()} is not floating-point.");
        }
        return r;
    }

    /// <summary>The elements of an I64 or I32 tensor.</summary>
    public long[] ToInt64s() => Type switch
    {
        DType.Int64 => MemoryMarshal.Cast<byte, long>(Data).ToArray(),
        DType.Int32 => MemoryMarshal.Cast<byte, int>(Data).ToArray().Select(i => (long)i).ToArray(),
        _ => throw new InvalidOperationException($"Tensor '{Name}' of type {Type.Name()} is not an integer tensor."),
    };
}

/// <summary>
/// A tensor to write whose little-endian bytes <paramref name="WriteBytes"/> writes to the file when its turn comes
/// (<see cref="SafeTensorsFile.Write(string, IEnumerable{SafeTensorSource}, IReadOnlyDictionary{string, string}?)"/>).
/// </summary>
public sealed record SafeTensorSource(string Name, DType Type, long[] Shape, Action<Stream> WriteBytes)
{
    public long ByteLength => Shape.Aggregate(1L, (a, b) => a * b) * Type.Size();

    /// <summary>A float32 tensor whose values <paramref name="values"/> gives when it is written (called once, not kept).</summary>
    public static SafeTensorSource Floats(string name, long[] shape, Func<ReadOnlySpan<float>> values) =>
        new(name, DType.Float, shape, s => s.Write(MemoryMarshal.AsBytes(values())));
}

/// <summary>
/// Reads and writes the safetensors format (8-byte little-endian header length, JSON header,
/// contiguous data). Reading validates the header against the file: dtypes, shapes, offsets in
/// bounds, sizes matching shapes, no gaps or overlaps. A bad file is refused naming it and the field.
/// Tensors are read on demand, so large files are not loaded whole.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    private const long MaxHeader = 100 << 20;
    private static readonly Dictionary<string, DType> Types = new(StringComparer.Ordinal)
    {
        ["F32"] = DType.Float, ["F16"] = DType.Float16, ["BF16"] = DType.BFloat16, ["F64"] = DType.Double,
        ["I64"] = DType.Int64, ["I32"] = DType.Int32, ["I8"] = DType.Int8, ["U8"] = DType.UInt8, ["BOOL"] = DType.Bool,
    };

    private readonly SafeFileHandle _file;
    private readonly long _dataStart;
    private readonly Dictionary<string, (DType Type, long[] Shape, long Begin, long End)> _entries;

    private SafeTensorsFile(string path, SafeFileHandle file, long dataStart, Dictionary<string, (DType, long[], long, long)> entries, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _file = file;
        _dataStart = dataStart;
        _entries = entries;
        Metadata = metadata;
    }

    public string Path { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    /// <summary>Tensor names in file order.</summary>
    public IReadOnlyList<string> Names => _entries.OrderBy(e => e.Value.Begin).ThenBy(e => e.Key, StringComparer.Ordinal).Select(e => e.Key).ToArray();
    public bool Contains(string name) => _entries.ContainsKey(name);
    public (DType Type, long[] Shape) Info(string name) => _entries.TryGetValue(name, out var e)
        ? (e.Type, e.Shape)
        : throw new KeyNotFoundException($"{Path}: no tensor '{name}'.");

    /// <summary>Where a tensor's bytes are in the file: the offset from the file's start and the length.</summary>
    public (long Offset, long Length) Location(string name) => _entries.TryGetValue(name, out var e)
        ? (_dataStart + e.Begin, e.End - e.Begin)
        : throw new KeyNotFoundException($"{Path}: no tensor '{name}'.");

    /// <summary>Opens and validates a file; the caller disposes the result.</summary>
    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Safetensors file '{path}' does not exist.", path);
        var file = File.OpenHandle(path);
        try
        {
            long length = RandomAccess.GetLength(file);
            if (length < 8) throw Bad(path, $"file is {length} bytes, too short for a header");
            Span<byte> lenBytes = stackalloc byte[8];
            RandomAccess.Read(file, lenBytes, 0);
            ulong headerLen = BinaryPrimitives.ReadUInt64LittleEndian(lenBytes);
            if (headerLen > (ulong)(length - 8)) throw Bad(path, $"header length {headerLen} exceeds the {length - 8} bytes after it (truncated file?)");
            if (headerLen > MaxHeader) throw Bad(path, $"header length {headerLen} exceeds {MaxHeader} bytes");
            var header = new byte[headerLen];
            RandomAccess.Read(file, header, 8);
            long dataStart = 8 + (long)headerLen, dataLen = length - dataStart;
            var (entries, metadata) = ParseHeader(path, header, dataLen);
            return new SafeTensorsFile(path, file, dataStart, entries, metadata);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    private static (Dictionary<string, (DType, long[], long, long)>, Dictionary<string, string>) ParseHeader(string path, byte[] header, long dataLen)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(header); }
        catch (JsonException e) { throw Bad(path, $"header is not valid JSON ({e.Message})"); }
        using var _ = doc;
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad(path, "header is not a JSON object");
        var entries = new Dictionary<string, (DType, long[], long, long)>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        bool sawMetadata = false;
        try
        {
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                if (p.Name == "__metadata__")
                {
                    // As the reference reader (an optional map of strings): null is no metadata; a key twice is ambiguous.
                    if (sawMetadata) throw Bad(path, "__metadata__ appears twice");
                    sawMetadata = true;
                    if (p.Value.ValueKind == JsonValueKind.Null) continue;
                    if (p.Value.ValueKind != JsonValueKind.Object) throw Bad(path, "__metadata__ is not an object");
                    foreach (var m in p.Value.EnumerateObject())
                        if (!metadata.TryAdd(m.Name, m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : throw Bad(path, $"__metadata__.{m.Name} is not a string")))
                            throw Bad(path, $"__metadata__.{m.Name} appears twice");
                    continue;
                }
                var (name, entry) = ParseEntry(path, p.Name, p.Value, dataLen);
                if (!entries.TryAdd(name, entry)) throw Bad(path, $"tensor '{name}': appears twice");
            }
        }
        // A name or string that is not valid UTF-8 (or escapes half a surrogate pair) only fails when it is read.
        catch (InvalidOperationException e) { throw Bad(path, $"header holds a string that cannot be decoded ({e.Message})"); }
        long expected = 0;
        foreach (var (name, e) in entries.OrderBy(e => e.Value.Item3).ThenBy(e => e.Value.Item4))
        {
            if (e.Item3 != expected) throw Bad(path, $"tensor '{name}': data_offsets begin {e.Item3} should be {expected} (gap or overlap)");
            expected = e.Item4;
        }
        if (expected != dataLen) throw Bad(path, $"the data section has {dataLen} bytes but the tensors cover {expected}");
        return (entries, metadata);
    }

    /// <summary>One tensor's header entry, checked on its own: dtype, shape, and data_offsets in the data section with the shape's size.</summary>
    private static (string, (DType, long[], long, long)) ParseEntry(string path, string name, JsonElement t, long dataLen)
    {
        string Where(string field) => $"tensor '{name}': {field}";
        if (t.ValueKind != JsonValueKind.Object) throw Bad(path, Where("entry is not an object"));
        if (!t.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String || !Types.TryGetValue(dt.GetString()!, out var type))
            throw Bad(path, Where($"dtype {(t.TryGetProperty("dtype", out var d) ? d.GetRawText() : "missing")} is not one of {string.Join(", ", Types.Keys)}"));
        if (!t.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array || sh.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.Number || !x.TryGetInt64(out var v) || v < 0))
            throw Bad(path, Where("shape is not an array of non-negative integers"));
        var shape = sh.EnumerateArray().Select(x => x.GetInt64()).ToArray();
        if (!t.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2
            || off[0].ValueKind != JsonValueKind.Number || off[1].ValueKind != JsonValueKind.Number
            || !off[0].TryGetInt64(out var begin) || !off[1].TryGetInt64(out var end) || begin < 0 || end < begin)
            throw Bad(path, Where("data_offsets is not [begin, end] with 0 <= begin <= end"));
        if (end > dataLen) throw Bad(path, Where($"data_offsets end {end} exceeds the {dataLen} data bytes (truncated file?)"));
        // The size in bytes, refusing shapes whose size does not fit in 64 bits (no data section is that large).
        long bytes = shape.Contains(0) ? 0 : type.Size();
        foreach (var dim in shape)
        {
            if (bytes > long.MaxValue / Math.Max(dim, 1)) throw Bad(path, Where($"shape [{string.Join(", ", shape)}] has more elements than a file can hold"));
            bytes *= dim;
        }
        if (end - begin != bytes) throw Bad(path, Where($"data_offsets span {end - begin} bytes but {dt.GetString()}[{string.Join(", ", shape)}] needs {bytes}"));
        return (name, (type, shape, begin, end));
    }

    private static InvalidDataException Bad(string path, string what) => new($"{path}: invalid safetensors file: {what}.");

    /// <summary>Reads one tensor.</summary>
    public SafeTensor Read(string name)
    {
        var (type, shape, begin, end) = _entries.TryGetValue(name, out var e) ? e : throw new KeyNotFoundException($"{Path}: no tensor '{name}'.");
        var data = new byte[end - begin];
        int read = RandomAccess.Read(_file, data, _dataStart + begin);
        if (read != data.Length) throw Bad(Path, $"tensor '{name}': short read ({read} of {data.Length} bytes)");
        return new SafeTensor(name, type, shape, data);
    }

    /// <summary>Reads every tensor of a file.</summary>
    public static IReadOnlyDictionary<string, SafeTensor> ReadAll(string path)
    {
        using var f = Open(path);
        return f.Names.ToDictionary(n => n, f.Read, StringComparer.Ordinal);
    }

    /// <summary>
    /// Writes tensors (ordered by alignment, then name, as the reference implementation does) with
    /// the header padded to 8 bytes, atomically: a temporary file renamed over <paramref name="path"/>.
    /// </summary>
    public static void Write(string path, IEnumerable<SafeTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null) =>
        Write(path, tensors.Select(t =>
        {
            if (t.Data.LongLength != t.Count * t.Type.Size())
                throw new ArgumentException($"Tensor '{t.Name}' has {t.Data.LongLength} bytes but {t.Type.Name()}[{string.Join(", ", t.Shape)}] needs {t.Count * t.Type.Size()}.");
            return new SafeTensorSource(t.Name, t.Type, t.Shape, s => s.Write(t.Data));
        }), metadata);

    /// <summary>
    /// Writes tensors whose bytes are produced one at a time as the file is written (views of native buffers, say),
    /// so no copy of all of them is ever held; otherwise as <see cref="Write(string, IEnumerable{SafeTensor}, IReadOnlyDictionary{string, string}?)"/>.
    /// A source that writes other than its shape's byte count is refused naming the tensor (and nothing is left at <paramref name="path"/>).
    /// </summary>
    public static void Write(string path, IEnumerable<SafeTensorSource> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.OrderByDescending(t => t.Type.Size()).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();
        if (list.Select(t => t.Name).Distinct().Count() != list.Count) throw new ArgumentException("Tensor names must be unique.", nameof(tensors));
        var header = new MemoryStream();
        using (var w = new Utf8JsonWriter(header))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in list)
            {
                w.WriteStartObject(t.Name);
                w.WriteString("dtype", Types.First(kv => kv.Value == t.Type).Key);
                w.WriteStartArray("shape");
                foreach (var d in t.Shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset += t.ByteLength);
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        while (header.Length % 8 != 0) header.WriteByte((byte)' ');
        var full = System.IO.Path.GetFullPath(path);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        var tmp = $"{full}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        try
        {
            using (var f = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> len = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
                f.Write(len);
                header.Position = 0;
                header.CopyTo(f);
                foreach (var t in list)
                {
                    long before = f.Position;
                    t.WriteBytes(f);
                    if (f.Position - before != t.ByteLength)
                        throw new ArgumentException($"Tensor '{t.Name}' wrote {f.Position - before} bytes but {t.Type.Name()}[{string.Join(", ", t.Shape)}] needs {t.ByteLength}.", nameof(tensors));
                }
                f.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            File.Delete(tmp);
            throw;
        }
    }

    public void Dispose() => _file.Dispose();
}
