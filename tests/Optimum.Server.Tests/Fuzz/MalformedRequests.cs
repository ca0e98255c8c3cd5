using System.Text;
using static Optimum.Server.Tests.Fuzz.Outcome;

namespace Optimum.Server.Tests.Fuzz;

/// <summary>
/// The fuzz corpus: for every route the service maps, requests built from a seeded generator (same seed, same corpus),
/// each with the answer the service must give, decided from <see cref="EndpointSpecs"/> and HTTP's rules: a mutation
/// that leaves the request valid is expected to get 200 and is checked as a success. Families: field values (wrong
/// types, huge, negative, fractional, NaN and Infinity literals, deep nesting, huge arrays, strings .NET cannot
/// hold), removed and unknown fields, duplicate keys, truncated bodies, non-object roots, trailing bytes, invalid
/// UTF-8, oversize bodies, content types, methods, API keys, query strings, and raw HTTP (broken framing, bad headers).
/// </summary>
internal sealed class MalformedRequests(int seed, string apiKey)
{
    private readonly Random _rng = new(seed);
    private (string Name, string Value) Auth => ("Authorization", "Bearer " + apiKey);

    /// <summary>
    /// The corpus: for each POST route every value of every field's pool and of <see cref="EndpointSpecs.Generic"/> (an
    /// index drawn for each "*"), every field left out, and <paramref name="rounds"/> requests of each other family; for
    /// each GET route requests until <paramref name="malformed"/> of them must be refused.
    /// </summary>
    public List<FuzzCase> All(int rounds, int malformed)
    {
        var cases = new List<FuzzCase>();
        foreach (var spec in EndpointSpecs.Posts)
        {
            foreach (var slot in spec.Slots)
                foreach (var raw in slot.Pool.Concat(EndpointSpecs.Generic).Distinct())
                    cases.Add(Value(spec, slot, Lit.Of(raw)));
            foreach (var slot in spec.Slots.Where(s => JPath.Get(spec.Base, Resolve(spec, s)) is not null))
            {
                var path = Resolve(spec, slot);
                cases.Add(JsonCase(spec.Route, "remove", $"without {JPath.Name(path)}", Encoding.UTF8.GetBytes(JPath.Set(spec.Base, path, null).Text()), slot.Removed));
            }
            for (int i = 0; i < rounds * PostFamilies.Length; i++) cases.Add(Post(spec, PostFamilies[i % PostFamilies.Length]));
        }
        foreach (var route in new[] { "/healthz", "/v1/models", "/metrics" })
        {
            var get = new List<FuzzCase>();
            for (int i = 0; get.Count(c => !c.Expect.Valid) < malformed; i++) get.Add(Get(route, i));
            cases.AddRange(get);
        }
        return cases;
    }

    private T Pick<T>(IReadOnlyList<T> items) => items[_rng.Next(items.Count)];

    // ---- POST routes -------------------------------------------------------------------------------------------

    private static readonly string[] PostFamilies =
        ["unknown", "duplicate", "truncated", "root", "trailing", "bytes", "bytes", "size", "content-type", "content-type", "method", "auth", "query", "raw"];

    /// <summary><paramref name="v"/> at the slot's place (a "*" drawn).</summary>
    private FuzzCase Value(PostSpec spec, Slot slot, Lit v)
    {
        var path = Resolve(spec, slot);
        var tree = JPath.Set(spec.Base, path, new JLit(v.Raw));
        return JsonCase(spec.Route, "value", $"{JPath.Name(path)} = {Clip(v.Raw)}", Encoding.UTF8.GetBytes(tree.Text()), Judge(tree, path, v, slot.Judge));
    }

    private FuzzCase Post(PostSpec spec, string family)
    {
        var body = spec.Base;
        FuzzCase Json(string what, J tree, Outcome expect) => JsonCase(spec.Route, family, what, Encoding.UTF8.GetBytes(tree.Text()), expect);
        switch (family)
        {
            case "unknown":
            {
                var objects = JPath.Objects(body).ToList();
                var (at, _) = Pick(objects);
                string key = Pick(["x_fuzz", "", "Model", "model_", "é", "a\\\"b", "\\ud800", "\\u0000"]);
                var lit = Lit.Of(Pick(EndpointSpecs.Generic));
                var path = at.Append(key).ToList();
                var tree = JPath.Set(body, path, new JLit(lit.Raw));
                // A key .NET cannot hold is named by the object that has it (the root has no name).
                bool loneKey = key == "\\ud800";
                var expect = Judge(tree, path, lit, (_, _) => Ok);
                if (loneKey && expect is not { Status: 413 } and not { Status: 400, Field: null }) expect = Bad(JPath.Name(at) is { Length: > 0 } n ? n : null);
                return Json($"unknown {JPath.Name(path)} = {Clip(lit.Raw)}", tree, expect);
            }
            case "duplicate":
            {
                var (at, obj) = Pick(JPath.Objects(body).Where(o => o.Obj.Fields.Count > 0).ToList());
                var (key, value) = Pick(obj.Fields);
                // The same key again, or spelt with an escape ("\u006dodel" is "model"): which one counts is the reader's guess.
                string again = _rng.Next(3) == 0 ? $"\\u{(int)key[0]:x4}{key[1..]}" : key;
                return Json($"{JPath.Name([.. at, key])} twice (as \"{again}\")", JPath.AddDuplicate(body, at, again, value), Bad(key));
            }
            case "truncated":
            {
                var bytes = Encoding.UTF8.GetBytes(body.Text());
                int cut = _rng.Next(bytes.Length);                                 // a proper prefix of an object is never JSON
                return JsonCase(spec.Route, family, $"first {cut} of {bytes.Length} bytes", bytes[..cut], Bad(null));
            }
            case "root":
            {
                string root = Pick(["[]", "[{}]", "\"x\"", "1", "null", "true", " ", "{}", "[" + body.Text() + "]", "\uFEFF" + body.Text()]);
                var expect = root == "{}" ? spec.EmptyObject : root.StartsWith('\uFEFF') ? Ok : Bad(null);  // a byte order mark is allowed and skipped
                return JsonCase(spec.Route, family, $"body {Clip(root)}", Encoding.UTF8.GetBytes(root), expect);
            }
            case "trailing":
            {
                string tail = Pick(["x", "}", "{}", " {\"a\":1}", "\u0000", ",", "]", " ", "\n", "\r\n\t "]);
                return JsonCase(spec.Route, family, $"then {Clip(tail)}", Encoding.UTF8.GetBytes(body.Text() + tail),
                    string.IsNullOrWhiteSpace(tail) && tail != "\u0000" ? Ok : Bad(null));
            }
            case "bytes":
            {
                var text = Encoding.UTF8.GetBytes(body.Text());
                byte[] insert = Pick<byte[]>([[0xFF], [0xFE, 0xFF], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0x80], [0xE2, 0x82], [0xF4, 0x90, 0x80, 0x80], [0x01]]);
                int at = Pick(InsideStrings(text));
                return JsonCase(spec.Route, family, $"{Convert.ToHexString(insert)} at byte {at}", [.. text[..at], .. insert, .. text[at..]], Bad(null));
            }
            case "size":
            {
                bool over = _rng.Next(2) == 0;
                var filler = over ? "\"" + new string('z', EndpointSpecs.MaxBodyBytes) + "\"" : EndpointSpecs.BigArray(20_000);
                var tree = JPath.Set(body, ["padding"], new JLit(filler));
                return Json(over ? "a 64 KiB string" : "an array of 20,000 numbers", tree, over ? new(413) : Ok);
            }
            case "content-type":
            {
                string? type = Pick<string?>([null, "application/json", "application/json; charset=utf-8", "Application/JSON", "application/json;charset=UTF-8",
                    "text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
                    "application/json; charset=utf-16", "application/json; charset=latin1", "application/octet-stream", "application/jsonx", "json",
                    "*/*", "application/*", "text/json", "application/problem+json"]);
                bool json = type is null || (type.Split(';')[0].Trim().Equals("application/json", StringComparison.OrdinalIgnoreCase)
                    && (type.Split(';').Length == 1 || type.Split(';')[1].Trim().Equals("charset=utf-8", StringComparison.OrdinalIgnoreCase)));
                return JsonCase(spec.Route, family, $"Content-Type {type ?? "(none)"}", Encoding.UTF8.GetBytes(body.Text()), json ? Ok : new(415, "Content-Type"), type);
            }
            case "method":
            {
                var method = Pick<HttpMethod>([HttpMethod.Get, HttpMethod.Put, HttpMethod.Delete, HttpMethod.Patch, HttpMethod.Options, HttpMethod.Head]);
                return new(spec.Route, family, method.Method, method, spec.Route, method == HttpMethod.Get || method == HttpMethod.Head ? null : Encoding.UTF8.GetBytes(body.Text()),
                    "application/json", [Auth], new(405), ProblemBody: false);
            }
            case "auth":
            {
                var (header, valid) = AuthHeader();
                return new(spec.Route, family, header is null ? "no Authorization" : $"Authorization: {Clip(header)}", HttpMethod.Post, spec.Route,
                    Encoding.UTF8.GetBytes(body.Text()), "application/json", header is null ? [] : [("Authorization", header)], valid ? Ok : new(401));
            }
            case "query":
            {
                var (query, expect, problem) = Query();
                return new(spec.Route, family, $"?{Clip(query)}", HttpMethod.Post, spec.Route + "?" + query, Encoding.UTF8.GetBytes(body.Text()), "application/json", [Auth], expect, problem);
            }
            default:
                return RawPost(spec.Route, Encoding.UTF8.GetBytes(body.Text()));
        }
    }

    private FuzzCase JsonCase(string route, string family, string what, byte[] body, Outcome expect, string? contentType = "application/json")
    {
        // The body's size is refused first (413), whatever it holds; a content type other than JSON before the body is read.
        if (body.Length > EndpointSpecs.MaxBodyBytes && expect.Status != 415) expect = new(413);
        return new(route, family, what, HttpMethod.Post, route, body, contentType, [Auth], expect);
    }

    /// <summary>The slot's concrete path: each "*" an index into the base body's array there.</summary>
    private List<object> Resolve(PostSpec spec, Slot slot)
    {
        var path = new List<object>();
        foreach (var s in slot.Path)
            path.Add(s is "*" ? _rng.Next(((JArr)JPath.Get(spec.Base, path)!).Items.Count) : s);
        return path;
    }

    /// <summary>
    /// What a value at <paramref name="path"/> gets, in the order the service checks: the body's size (413), JSON syntax and
    /// depth (400), duplicate keys (400), strings .NET cannot hold (400 naming the field), then the field's own rule.
    /// </summary>
    private static Outcome Judge(J tree, List<object> path, Lit v, Func<Lit, string, Outcome> judge)
    {
        if (Encoding.UTF8.GetByteCount(tree.Text()) > EndpointSpecs.MaxBodyBytes) return new(413);
        if (!v.IsJson || JPath.Depth(path) + v.Depth > 64) return Bad(null);
        if (v.DuplicateKey) return Bad(null);
        if (v.LoneSurrogate) return Bad(JPath.Name(path));
        return judge(v, JPath.Name(path));
    }

    /// <summary>Byte offsets inside the body's string literals (between the quotes).</summary>
    private static List<int> InsideStrings(byte[] text)
    {
        var at = new List<int>();
        bool inside = false;
        for (int i = 0; i < text.Length; i++)
        {
            if (text[i] == '"' && (i == 0 || text[i - 1] != '\\')) { inside = !inside; if (!inside) at.Add(i); continue; }
            if (inside) at.Add(i);
        }
        return at;
    }

    private (string? Header, bool Valid) AuthHeader() => Pick<(string?, bool)>(
    [
        (null, false), ("Bearer wrong", false), ("Basic Zm9vOmJhcg==", false), ("Bearer", false), ("Bearer ", false), ("Token " + apiKey, false),
        ("bearer " + apiKey, true), ("BEARER " + apiKey, true), ("Bearer " + apiKey + " ", true),             // header values are trimmed (RFC 9110 §5.5)
        ("Bearer  " + apiKey, false), ("Bearer " + apiKey.ToUpperInvariant(), false), ("Bearer " + apiKey[..^1], false), ("Bearer " + apiKey + "x", false),
        ("Bearer " + new string('k', 10_000), false), ("Bearer\t" + apiKey, false), ("Bearer " + apiKey + ", Bearer " + apiKey, false),
    ]);

    /// <summary>A query string (the service reads none): junk is ignored; a request line past Kestrel's 8 KiB is a 414.</summary>
    private (string Query, Outcome Expect, bool Problem) Query()
    {
        var q = Pick(["a=1", "%zz", "model=gpt-5", "stream=true&stream=false", "q=%FF%FE%00", "a[]=1&a[]=2", "=", "&&&", "x=" + new string('y', 6000), "x=" + new string('y', 9000)]);
        return q.Length > 8192 ? (q, new(414), false) : (q, Ok, true);
    }

    // ---- GET routes --------------------------------------------------------------------------------------------

    private static readonly string[] GetFamilies = ["query", "method", "method", "auth", "headers", "raw", "raw"];

    private FuzzCase Get(string route, int i)
    {
        string family = GetFamilies[i % GetFamilies.Length];
        bool guarded = route.StartsWith("/v1/", StringComparison.Ordinal);
        switch (family)
        {
            case "query":
            {
                var (query, expect, problem) = Query();
                return new(route, family, $"?{Clip(query)}", HttpMethod.Get, route + "?" + query, null, null, [Auth], expect, problem);
            }
            case "method":
            {
                var method = Pick<HttpMethod>([HttpMethod.Post, HttpMethod.Put, HttpMethod.Delete, HttpMethod.Patch, HttpMethod.Options]);
                return new(route, family, method.Method, method, route, method == HttpMethod.Options ? null : "{}"u8.ToArray(), "application/json", [Auth], new(405), ProblemBody: false);
            }
            case "auth":
            {
                var (header, valid) = AuthHeader();
                return new(route, family, header is null ? "no Authorization" : $"Authorization: {Clip(header)}", HttpMethod.Get, route, null, null,
                    header is null ? [] : [("Authorization", header)], valid || !guarded ? Ok : new(401));
            }
            case "headers":
            {
                var (name, value, body) = Pick<(string, string, byte[]?)>(
                [
                    ("Accept", "application/xml", null), ("Accept", "*/*;q=abc", null), ("Content-Type", "text/plain", "junk"u8.ToArray()),
                    ("Content-Type", "application/json", "{\"not\": \"read\"}"u8.ToArray()), ("Accept-Encoding", "gzip;q=2, br;q=-1", null),
                    ("X-Large", new string('h', 7000), null), ("Range", "bytes=abc", null), ("If-None-Match", "\"\\", null),
                ]);
                var headers = new List<(string, string)> { Auth };
                string? type = null;
                if (name == "Content-Type") type = value; else headers.Add((name, value));
                return new(route, family, $"{name}: {Clip(value)}", HttpMethod.Get, route, body, type, headers, Ok);
            }
            default:
                return RawGet(route);
        }
    }

    // ---- raw HTTP ----------------------------------------------------------------------------------------------

    private FuzzCase RawPost(string route, byte[] body)
    {
        string head = $"POST {route} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {apiKey}\r\nContent-Type: application/json\r\n";
        byte[] Ascii(string s) => Encoding.ASCII.GetBytes(s);
        string Chunk(byte[] b) => $"{b.Length:x}\r\n{Encoding.UTF8.GetString(b)}\r\n";
        var big = Encoding.UTF8.GetBytes(new string(' ', 70_000));
        var (what, raw, expect, close) = Pick<(string, byte[], Outcome, bool)>(
        [
            ("Content-Length past the end, then FIN", [.. Ascii(head + $"Content-Length: {body.Length + 50}\r\n\r\n"), .. body], Closed, true),
            ("chunk size 'zz'", Ascii(head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"), Bad(null), false),
            ("chunked, cut short, then FIN", [.. Ascii(head + "Transfer-Encoding: chunked\r\n\r\n" + Chunk(body[..10])[..^2])], Closed, true),
            ("Content-Length -5", Ascii(head + "Content-Length: -5\r\n\r\n"), Bad(null), false),
            ("Content-Length abc", Ascii(head + "Content-Length: abc\r\n\r\n"), Bad(null), false),
            ("Content-Length 10^6, no body", Ascii(head + "Content-Length: 1000000\r\n\r\n"), new(413), false),
            ("two Content-Lengths", [.. Ascii(head + $"Content-Length: {body.Length}\r\nContent-Length: {body.Length + 1}\r\n\r\n"), .. body], Bad(null), false),
            ("no Host", [.. Ascii($"POST {route} HTTP/1.1\r\nAuthorization: Bearer {apiKey}\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n\r\n"), .. body], Bad(null), false),
            ("a header of UTF-8 bytes", [.. Ascii(head), .. "X-Fuzz: é\r\n"u8.ToArray(), .. Ascii($"Content-Length: {body.Length}\r\n\r\n"), .. body], Ok, false),   // Kestrel takes them; the header is not read
            ("a header name with a space", [.. Ascii(head + $"X Fuzz: 1\r\nContent-Length: {body.Length}\r\n\r\n"), .. body], Bad(null), false),
            ("a folded header", [.. Ascii(head + $"X-Fuzz: 1\r\n 2\r\nContent-Length: {body.Length}\r\n\r\n"), .. body], Bad(null), false),
            ("a chunked body past the limit", Ascii(head + "Transfer-Encoding: chunked\r\n\r\n" + Chunk(big) + "0\r\n\r\n"), new(413), false),
            ("Expect: 100-continue", [.. Ascii(head + $"Expect: 100-continue\r\nContent-Length: {body.Length}\r\n\r\n"), .. body], Ok, false),
        ]);
        return new(route, "raw", what, HttpMethod.Post, route, null, null, [], expect, ProblemBody: false, Raw: raw, CloseAfterSend: close);
    }

    private FuzzCase RawGet(string route)
    {
        string auth = $"Authorization: Bearer {apiKey}\r\n";
        var (what, raw, expect) = Pick<(string, string, Outcome)>(
        [
            ("garbage request line", "GARBAGE\r\n\r\n", Bad(null)),
            ("two spaces in the request line", $"GET  {route} HTTP/1.1\r\nHost: localhost\r\n\r\n", Bad(null)),
            ("no Host", $"GET {route} HTTP/1.1\r\n{auth}\r\n", Bad(null)),
            ("a header name with a space", $"GET {route} HTTP/1.1\r\nHost: localhost\r\n{auth}X Fuzz: 1\r\n\r\n", Bad(null)),
            ("a header without a colon", $"GET {route} HTTP/1.1\r\nHost: localhost\r\n{auth}X-Fuzz\r\n\r\n", Bad(null)),
            ("a folded header", $"GET {route} HTTP/1.1\r\nHost: localhost\r\n{auth}X-Fuzz: 1\r\n 2\r\n\r\n", Bad(null)),
            ("HTTP/1.0 without Host", $"GET {route} HTTP/1.0\r\n{auth}\r\n", Ok),
            ("a 9 KiB request line", $"GET {route}?q={new string('q', 9000)} HTTP/1.1\r\nHost: localhost\r\n\r\n", new(414)),
            ("40 KiB of headers", $"GET {route} HTTP/1.1\r\nHost: localhost\r\n{auth}X-Big: {new string('b', 40_000)}\r\n\r\n", new(431)),
        ]);
        return new(route, "raw", what, HttpMethod.Get, route, null, null, [], expect, ProblemBody: false, Raw: Encoding.ASCII.GetBytes(raw));
    }

    private static string Clip(string s) => (s.Length > 40 ? s[..40] + "..." : s).Replace("\r", "\\r").Replace("\n", "\\n");
}
