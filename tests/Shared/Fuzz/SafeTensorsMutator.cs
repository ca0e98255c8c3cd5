using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using Optimum.Core;

namespace Optimum.Tests.Fuzz;

/// <summary>A mutated file and what it deserves.</summary>
public sealed record FileMutation(Mutation Mutation, byte[] Bytes, StJudgement Judgement);

/// <summary>
/// Seeded mutations of a good safetensors file: truncations, the length field, header bits and JSON garbage, data_offsets,
/// dtypes, shapes, missing, extra and duplicate tensors, non-finite values, <c>__metadata__</c>, data bits and layouts. Every
/// verdict is the <see cref="SafeTensorsOracle"/>'s; where a mutation's verdict is known by construction (a truncation is
/// never valid, a re-layout always is) the oracle must agree, or the fuzzer itself is wrong.
/// </summary>
public sealed class SafeTensorsMutator
{
    private readonly byte[] _good;
    private readonly List<StTensor> _tensors;
    private readonly JsonNode? _metadata;
    private readonly IReadOnlyList<ParameterInfo> _params;
    private readonly Random _rng;
    private readonly int _headerLength;
    private readonly HashSet<string> _paramKeys;

    public SafeTensorsMutator(byte[] good, IReadOnlyList<ParameterInfo> parameters, int seed)
    {
        _good = good;
        _params = parameters;
        _rng = new Random(seed);
        _headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(good);
        _tensors = SafeTensorsOracle.Structure(good).Tensors ?? throw new ArgumentException("The starting file must be valid.");
        _metadata = JsonNode.Parse(good.AsSpan(8, _headerLength))!["__metadata__"]?.DeepClone();
        if (!SafeTensorsOracle.Judge(good, parameters).Ok) throw new ArgumentException("The starting file must fit the model.");
        _paramKeys = _tensors.Select(t => t.Name).Where(n => parameters.Any(p => p.Name == n || p.Name == "transformer." + n)).ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>A file of <paramref name="tensors"/> in order, offsets consecutive, the header optionally edited and padded to 8 bytes with spaces.</summary>
    public static byte[] Build(IReadOnlyList<StTensor> tensors, JsonNode? metadata, Action<JsonObject>? edit = null, bool pad = true, string padding = " ")
    {
        var header = new JsonObject();
        if (metadata is not null) header["__metadata__"] = metadata.DeepClone();
        long offset = 0;
        foreach (var t in tensors)
        {
            header[t.Name] = new JsonObject
            {
                ["dtype"] = t.DType,
                ["shape"] = new JsonArray(t.Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + t.Bytes.Length),
            };
            offset += t.Bytes.Length;
        }
        edit?.Invoke(header);
        return Raw(Encoding.UTF8.GetBytes(header.ToJsonString()), tensors.SelectMany(t => t.Bytes).ToArray(), pad, padding);
    }

    /// <summary>Length field, header bytes (padded to 8 when asked), data.</summary>
    public static byte[] Raw(byte[] header, byte[] data, bool pad = true, string padding = " ", ulong? length = null)
    {
        var h = new List<byte>(header);
        while (pad && h.Count % 8 != 0) h.AddRange(Encoding.UTF8.GetBytes(padding));
        var r = new byte[8 + h.Count + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(r, length ?? (ulong)h.Count);
        h.CopyTo(r, 8);
        data.CopyTo(r, 8 + h.Count);
        return r;
    }

    private StTensor Pick(bool param = false)
    {
        var pool = param ? _tensors.Where(t => _paramKeys.Contains(t.Name) && t.Bytes.Length > 0).ToList() : _tensors;
        return pool[_rng.Next(pool.Count)];
    }

    private byte[] Build(Func<StTensor, StTensor?> map, Action<JsonObject>? edit = null) =>
        Build(_tensors.Select(map).Where(t => t is not null).ToList()!, _metadata, edit);

    private static Action<JsonObject> Entry(string name, Action<JsonObject> edit) => h => edit(h[name]!.AsObject());

    private static JsonNode Num(string text) => JsonNode.Parse(text)!;

    /// <summary>Every mutation, in a fixed order for a given seed.</summary>
    public IEnumerable<FileMutation> Generate()
    {
        int len = _good.Length, n = _headerLength, data = len - 8 - n;
        FileMutation M(string cls, string what, byte[] bytes, Verdict? byConstruction = null)
        {
            var j = SafeTensorsOracle.Judge(bytes, _params);
            var v = j.Ok ? Verdict.Valid : Verdict.Invalid;
            if (byConstruction is { } c && c != v) throw new InvalidOperationException($"Fuzzer bug: [{cls}] {what} should be {c} by construction, the oracle says {v} ({j.Why}).");
            return new(new Mutation(cls, what, v, j.Ok ? "oracle accepts" : j.Why), bytes, j);
        }

        // Truncations, inside the length field, the header and the data.
        var cuts = new SortedSet<int> { 0, 1, 4, 7, 8, 9, 8 + n / 2, 8 + n - 1, 8 + n, 8 + n + 1, len - 1 };
        while (cuts.Count < 24) cuts.Add(8 + n + _rng.Next(data));
        foreach (var cut in cuts.Where(c => c < len)) yield return M("truncate", $"cut at {cut} of {len} bytes", _good[..cut], Verdict.Invalid);

        // The header length field.
        foreach (var v in new ulong[] { 0, 1, 2, (ulong)n - 1, (ulong)n + 1, (ulong)n + 8, (ulong)(len - 8), (ulong)(len - 7), 1UL << 31, 1UL << 32, 104857601, long.MaxValue, 1UL << 63, ulong.MaxValue })
        {
            var b = (byte[])_good.Clone();
            BinaryPrimitives.WriteUInt64LittleEndian(b, v);
            yield return M("length-field", $"header length {v} (was {n})", b);
        }

        // Header bits flipped and bytes replaced.
        for (int i = 0; i < 24; i++)
        {
            var b = (byte[])_good.Clone();
            int at = 8 + _rng.Next(n), bit = _rng.Next(8);
            b[at] ^= (byte)(1 << bit);
            yield return M("header-flip", $"header byte {at - 8} bit {bit}", b);
        }
        for (int i = 0; i < 8; i++)
        {
            var b = (byte[])_good.Clone();
            int at = 8 + _rng.Next(n);
            b[at] = (byte)_rng.Next(256);
            yield return M("header-byte", $"header byte {at - 8} = 0x{b[at]:x2}", b);
        }

        // JSON garbage in place of the header.
        var dataBytes = _good[(8 + n)..];
        var headerText = HeaderText(_good);
        var garbage = new (string What, byte[] Header)[]
        {
            ("empty", []), ("spaces", Encoding.UTF8.GetBytes("        ")), ("array", Encoding.UTF8.GetBytes("[]")), ("null", Encoding.UTF8.GetBytes("null")),
            ("number", Encoding.UTF8.GetBytes("0")), ("string", Encoding.UTF8.GetBytes("\"x\"")), ("open brace", Encoding.UTF8.GetBytes("{")),
            ("missing value", Encoding.UTF8.GetBytes("{\"a\":}")), ("empty object", Encoding.UTF8.GetBytes("{}")),
            ("trailing comma", Encoding.UTF8.GetBytes(headerText[..^1] + ",}")), ("comment", Encoding.UTF8.GetBytes("/* c */" + headerText)),
            ("NaN literal", Encoding.UTF8.GetBytes("{\"x\":NaN}")), ("nesting 200 deep", Encoding.UTF8.GetBytes(new string('[', 200) + new string(']', 200))),
            ("BOM", [0xEF, 0xBB, 0xBF, .. Encoding.UTF8.GetBytes(headerText)]), ("NUL padding", [.. Encoding.UTF8.GetBytes(headerText), 0, 0, 0]),
            ("invalid UTF-8", [.. Encoding.UTF8.GetBytes(headerText[..2]), 0xFF, 0xFE, .. Encoding.UTF8.GetBytes(headerText[2..])]),
            ("lone surrogate name", Encoding.UTF8.GetBytes(headerText[..^1] + ",\"\\ud800\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}")),
            ("random bytes", Enumerable.Range(0, n).Select(_ => (byte)_rng.Next(256)).ToArray()),
        };
        foreach (var (what, h) in garbage) yield return M("json-garbage", what, Raw(h, dataBytes, pad: false));

        // data_offsets.
        for (int k = 0; k < 3; k++)
        {
            var t = Pick(param: true);
            int b = 0;
            foreach (var x in _tensors) { if (x == t) break; b += x.Bytes.Length; }
            int e = b + t.Bytes.Length;
            var cases = new (string What, JsonNode? Offsets)[]
            {
                ("end past the data", new JsonArray(b, data + 4)), ("reversed", new JsonArray(e, b)), ("shifted back 4 (overlap)", new JsonArray(b - 4, e - 4)),
                ("shifted on 4 (gap)", new JsonArray(b + 4, e + 4)), ("negative", new JsonArray(-4, e - b - 4)), ("2^62", new JsonArray(1L << 62, (1L << 62) + e - b)),
                ("end int64 max", new JsonArray(b, long.MaxValue)), ("end 2^64", new JsonArray(b, Num("18446744073709551616"))), ("fraction", new JsonArray(Num($"{b}.5"), e)),
                ("exponent", new JsonArray(Num("0e0"), e - b)), ("strings", new JsonArray($"{b}", $"{e}")), ("one value", new JsonArray(b)), ("three values", new JsonArray(b, e, e)),
                ("object", new JsonObject { ["begin"] = b, ["end"] = e }), ("null", null), ("empty", new JsonArray()),
            };
            foreach (var (what, offsets) in cases)
                yield return M("offsets", $"'{t.Name}' data_offsets {what}", Build(x => x, Entry(t.Name, o => o["data_offsets"] = offsets?.DeepClone())));
            yield return M("offsets", $"'{t.Name}' without data_offsets", Build(x => x, Entry(t.Name, o => o.Remove("data_offsets"))));
        }
        {
            // Two tensors of the same byte size swap data: a valid file whose values moved.
            var same = _tensors.Where(t => t.Bytes.Length > 0).GroupBy(t => t.Bytes.Length).FirstOrDefault(g => g.Count() >= 2);
            if (same is not null)
            {
                var (a, c) = (same.First(), same.Skip(1).First());
                yield return M("offsets", $"'{a.Name}' and '{c.Name}' swap data", Build(x => x == a ? x with { Bytes = c.Bytes } : x == c ? x with { Bytes = a.Bytes } : x));
            }
            var last = _tensors[^1];
            yield return M("offsets", $"'{last.Name}' left out, its data left (not covered)", [.. Build(_tensors.Take(_tensors.Count - 1).ToList(), _metadata), .. last.Bytes], Verdict.Invalid);
        }

        // dtypes: unknown names, sizes that do not fit the data, integers of the right size, conversions.
        for (int k = 0; k < 3; k++)
        {
            var t = Pick(param: true);
            foreach (JsonNode? dt in new JsonNode?[] { "F8_E4M3", "f32", "FLOAT32", "", "U32", "F16", "F64", "I64", "BF16", "I32", "U8", "BOOL", 5, null, new JsonArray("F32") })
                yield return M("dtype", $"'{t.Name}' dtype {dt?.ToJsonString() ?? "null"}", Build(x => x, Entry(t.Name, o => o["dtype"] = dt?.DeepClone())));
            yield return M("dtype", $"'{t.Name}' without dtype", Build(x => x, Entry(t.Name, o => o.Remove("dtype"))));
            foreach (var to in new[] { "F16", "BF16", "F64" })
                yield return M("dtype", $"'{t.Name}' converted to {to}", Build(x => x == t ? Convert(x, to) : x));
        }
        foreach (var to in new[] { "F16", "BF16", "F64" })
            yield return M("dtype", $"every tensor converted to {to}", Build(x => SafeTensorsOracle.Decode(x) is null ? x : Convert(x, to)));

        // Shapes: disagreeing with the offsets, or agreeing with them but not with the model; malformed.
        for (int k = 0; k < 3; k++)
        {
            var t = Pick(param: true);
            var s = t.Shape;
            long count = s.Aggregate(1L, (a, d) => a * d);
            var cases = new List<(string, JsonNode?)>
            {
                ("first dimension + 1", Shape(s.Length == 0 ? [2] : [s[0] + 1, .. s[1..]])), ("flattened", Shape([count])), ("with a trailing 1", Shape([.. s, 1])),
                ("reversed", Shape(s.Reverse().ToArray())), ("scalar", Shape([])), ("negative", Shape([-1, .. s])), ("2^40 x 2^40", Shape([1L << 40, 1L << 40])),
                ("2^62", Shape([1L << 62])), ("int64 max x 2", Shape([long.MaxValue, 2])), ("fraction", new JsonArray(Num("2.5"))), ("string", new JsonArray($"{count}")),
                ("nested", new JsonArray(new JsonArray(count))), ("null", null), ("number", count),
            };
            foreach (var (what, shape) in cases) yield return M("shape", $"'{t.Name}' shape {what}", Build(x => x, Entry(t.Name, o => o["shape"] = shape?.DeepClone())));
        }

        // Missing, extra, renamed and duplicate tensors.
        for (int k = 0; k < 4; k++)
        {
            var t = Pick();
            yield return M("missing", $"'{t.Name}' removed", Build(x => x == t ? null : x));
        }
        yield return M("missing", "every tensor removed", Build([], _metadata), Verdict.Invalid);
        var extra = new StTensor("fuzz.extra.weight", "F32", [4], SafeTensorsOracle.Encode([1, 2, 3, 4], "F32"));
        yield return M("extra", "an unknown F32 tensor", Build([.. _tensors, extra], _metadata), Verdict.Valid);
        yield return M("extra", "an unknown tensor holding NaN and Inf", Build([.. _tensors, extra with { Bytes = SafeTensorsOracle.Encode([float.NaN, float.PositiveInfinity, 0, 1], "F32") }], _metadata), Verdict.Valid);
        yield return M("extra", "an unknown I64 scalar buffer", Build([.. _tensors, new StTensor("fuzz.num_batches_tracked", "I64", [], new byte[8])], _metadata), Verdict.Valid);
        yield return M("extra", "an unknown tensor with an empty name", Build([.. _tensors, extra with { Name = "" }], _metadata), Verdict.Valid);
        yield return M("extra", "an unknown zero-size tensor", Build([.. _tensors, new StTensor("fuzz.empty", "F32", [0, 3], [])], _metadata), Verdict.Valid);
        yield return M("extra", "an unknown tensor with an unknown entry field", Build([.. _tensors, extra], _metadata, h => h[extra.Name]!["fuzz"] = 1), Verdict.Valid);
        {
            var t = Pick(param: true);
            yield return M("rename", $"'{t.Name}' renamed to upper case", Build(x => x == t ? x with { Name = x.Name.ToUpperInvariant() } : x));
            yield return M("rename", $"'{t.Name}' renamed to ''", Build(x => x == t ? x with { Name = "" } : x));
            var prefixed = _tensors.FirstOrDefault(x => x.Name.StartsWith("transformer.", StringComparison.Ordinal));
            if (prefixed is not null)
                yield return M("rename", $"'{prefixed.Name}' saved without its transformer. prefix", Build(x => x == prefixed ? x with { Name = x.Name["transformer.".Length..] } : x), Verdict.Valid);
            var good = HeaderText(Build(x => x));
            var first = JsonNode.Parse(good)![t.Name]!.ToJsonString();
            yield return M("duplicate", $"'{t.Name}' listed twice", Raw(Encoding.UTF8.GetBytes(good[..^1] + $",\"{t.Name}\":{first}}}"), dataBytes), Verdict.Invalid);
            yield return M("duplicate", "__metadata__ twice", Raw(Encoding.UTF8.GetBytes(good[..^1] + ",\"__metadata__\":{},\"__metadata__\":{}}"), dataBytes), Verdict.Invalid);
            yield return M("duplicate", "a __metadata__ key twice", Raw(Encoding.UTF8.GetBytes("{\"__metadata__\":{\"format\":\"pt\",\"format\":\"pt\"}," + HeaderText(Build(_tensors, null))[1..]), dataBytes), Verdict.Invalid);
        }

        // Non-finite values in parameters (corrupt input: refused) and a large double that float32 cannot hold.
        for (int k = 0; k < 3; k++)
        {
            var t = Pick(param: true);
            var values = SafeTensorsOracle.Decode(t)!;
            int at = _rng.Next(values.Length);
            foreach (var (what, v) in new[] { ("NaN", float.NaN), ("+Inf", float.PositiveInfinity), ("-Inf", float.NegativeInfinity) })
            {
                var changed = (float[])values.Clone();
                changed[at] = v;
                yield return M("non-finite", $"'{t.Name}'[{at}] = {what}", Build(x => x == t ? x with { Bytes = SafeTensorsOracle.Encode(changed, "F32") } : x), Verdict.Invalid);
                yield return M("non-finite", $"'{t.Name}'[{at}] = {what} in F16", Build(x => x == t ? x with { DType = "F16", Bytes = SafeTensorsOracle.Encode(changed, "F16") } : x), Verdict.Invalid);
            }
            var f64 = new byte[values.Length * 8];
            for (int i = 0; i < values.Length; i++) BinaryPrimitives.WriteDoubleLittleEndian(f64.AsSpan(8 * i), i == at ? 1e300 : values[i]);
            yield return M("non-finite", $"'{t.Name}'[{at}] = 1e300 in F64 (infinite as float32)", Build(x => x == t ? x with { DType = "F64", Bytes = f64 } : x), Verdict.Invalid);
        }

        // __metadata__.
        var metas = new (string What, JsonNode? Value, bool Present)[]
        {
            ("absent", null, false), ("null", null, true), ("empty", new JsonObject(), true), ("format np", new JsonObject { ["format"] = "np" }, true),
            ("empty key", new JsonObject { [""] = "" }, true), ("2,000 keys", new JsonObject(Enumerable.Range(0, 2000).Select(i => KeyValuePair.Create($"k{i}", (JsonNode?)$"v{i}"))), true),
            ("an array", new JsonArray(), true), ("a string", "pt", true), ("a number", 5, true), ("format a number", new JsonObject { ["format"] = 5 }, true),
            ("a nested object", new JsonObject { ["format"] = new JsonObject() }, true), ("a null value", new JsonObject { ["format"] = null }, true),
        };
        foreach (var (what, value, present) in metas)
            yield return M("metadata", $"__metadata__ {what}", Build(_tensors, null, h => { if (present) h.Insert(0, "__metadata__", value?.DeepClone()); }));
        yield return M("metadata", "__metadata__ value a lone surrogate", Raw(Encoding.UTF8.GetBytes("{\"__metadata__\":{\"format\":\"\\udc00\"}," + HeaderText(Build(_tensors, null))[1..]), dataBytes), Verdict.Invalid);

        // Bits of the data: usually still a valid file (no checksum), unless a parameter became non-finite.
        for (int i = 0; i < 24; i++)
        {
            var b = (byte[])_good.Clone();
            int at = 8 + n + _rng.Next(data), bit = _rng.Next(8);
            b[at] ^= (byte)(1 << bit);
            yield return M("data-flip", $"data byte {at - 8 - n} bit {bit}", b);
        }
        {
            // An exponent bit of a parameter's float: the value becomes huge or non-finite.
            var t = Pick(param: true);
            int off = 8 + n;
            foreach (var x in _tensors) { if (x == t) break; off += x.Bytes.Length; }
            var b = (byte[])_good.Clone();
            b[off + 3] |= 0x7F;
            b[off + 2] |= 0x80;
            yield return M("data-flip", $"'{t.Name}'[0] exponent bits set (Inf or NaN)", b, Verdict.Invalid);
        }

        // Layouts: order, padding, trailing bytes.
        yield return M("layout", "tensors stored in reverse order", Build(Enumerable.Reverse(_tensors).ToList(), _metadata), Verdict.Valid);
        yield return M("layout", "header not padded to 8 bytes", Build(_tensors, _metadata, pad: false), Verdict.Valid);
        yield return M("layout", "header padded with 64 more spaces", Raw(Encoding.UTF8.GetBytes(headerText + new string(' ', 64)), dataBytes), Verdict.Valid);
        yield return M("layout", "header padded with newlines and tabs", Raw(Encoding.UTF8.GetBytes(headerText + "\n\t\r\n"), dataBytes), Verdict.Valid);
        yield return M("layout", "8 bytes appended after the data", [.. _good, 1, 2, 3, 4, 5, 6, 7, 8], Verdict.Invalid);
        yield return M("layout", "one byte appended after the data", [.. _good, 0], Verdict.Invalid);
    }

    /// <summary>The header JSON of a well-formed file, padding removed.</summary>
    private static string HeaderText(byte[] file) => Encoding.UTF8.GetString(file, 8, (int)BinaryPrimitives.ReadUInt64LittleEndian(file)).TrimEnd(' ');

    private static JsonArray Shape(long[] dims) => new(dims.Select(d => (JsonNode)d).ToArray());

    private static StTensor Convert(StTensor t, string dtype) => t with { DType = dtype, Bytes = SafeTensorsOracle.Encode(SafeTensorsOracle.Decode(t)!, dtype) };
}
