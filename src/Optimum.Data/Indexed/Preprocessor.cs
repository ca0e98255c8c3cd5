using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Text.Json;

namespace Optimum.Data;

/// <summary>What <see cref="Preprocessor.Run"/> tokenizes and where it writes.</summary>
public sealed record PreprocessOptions
{
    /// <summary>Text files (one document each), .jsonl files (one document per line) and folders (searched for *.txt and *.jsonl, in ordinal order).</summary>
    public required IReadOnlyList<string> Inputs { get; init; }
    /// <summary>Writes &lt;OutputPrefix&gt;.bin and &lt;OutputPrefix&gt;.idx.</summary>
    public required string OutputPrefix { get; init; }
    /// <summary>The field of a .jsonl record that holds the text.</summary>
    public string JsonKey { get; init; } = "text";
    /// <summary>Threads that tokenize (documents are spread over them; the output order is the input order).</summary>
    public int Workers { get; init; } = Environment.ProcessorCount;
}

/// <summary>Where a preprocessing run is (reported about once a second).</summary>
public sealed record PreprocessProgress(long Bytes, long TotalBytes, long Documents, long Tokens, TimeSpan Elapsed)
{
    public double MegabytesPerSecond => Bytes / 1e6 / Math.Max(Elapsed.TotalSeconds, 1e-9);
    public TimeSpan? Eta => Bytes > 0 ? TimeSpan.FromSeconds(Elapsed.TotalSeconds * (TotalBytes - Bytes) / Bytes) : null;

    public override string ToString() =>
        $"preprocess: {Bytes / 1e6:N1}/{TotalBytes / 1e6:N1} MB ({100.0 * Bytes / Math.Max(TotalBytes, 1):F0}%), {MegabytesPerSecond:N1} MB/s, {Documents:N0} documents, {Tokens:N0} tokens, ETA {(Eta is { } e ? e.ToString(@"hh\:mm\:ss") : "?")}";
}

/// <summary>
/// A finished run. Seconds are thread-seconds: <see cref="ReadSeconds"/> reading and splitting input (one thread),
/// <see cref="DecodeSeconds"/> UTF-8/JSON decoding and <see cref="TokenizeSeconds"/> the tokenizer (summed over workers),
/// <see cref="WriteSeconds"/> writing ids (one thread).
/// </summary>
public sealed record PreprocessResult(string Prefix, long Documents, long Tokens, long Bytes, int BytesPerId, TimeSpan Elapsed,
    double ReadSeconds, double DecodeSeconds, double TokenizeSeconds, double WriteSeconds, int Workers)
{
    /// <summary>Megabytes of input text per second of wall time.</summary>
    public double MegabytesPerSecond => Bytes / 1e6 / Math.Max(Elapsed.TotalSeconds, 1e-9);
    /// <summary>Share of the work's thread-seconds spent inside the tokenizer.</summary>
    public double TokenizerShare => TokenizeSeconds / Math.Max(ReadSeconds + DecodeSeconds + TokenizeSeconds + WriteSeconds, 1e-9);
}

/// <summary>
/// Tokenizes text files and JSON-lines files into an <see cref="IndexedDataset"/> in parallel (Megatron-LM's
/// preprocess_data): documents are read in order, tokenized by <see cref="PreprocessOptions.Workers"/> threads in batches,
/// and written in input order, so the bytes do not depend on the number of workers.
/// </summary>
public static class Preprocessor
{
    private const long BatchBytesPerWorker = 4 << 20;

    /// <summary>
    /// Runs; <paramref name="log"/> receives warnings (invalid UTF-8 read as U+FFFD, skipped empty records) and
    /// <paramref name="progress"/> a report about once a second. Bad input (a missing path, an empty or binary file, a
    /// malformed .jsonl line) throws naming the file (and line) before the dataset is renamed into place.
    /// </summary>
    public static PreprocessResult Run(PreprocessOptions o, IDocumentTokenizer tokenizer, Action<string>? log = null, Action<PreprocessProgress>? progress = null)
    {
        if (o.Workers < 1) throw new ArgumentOutOfRangeException(nameof(o), o.Workers, "Workers must be at least 1.");
        if (string.IsNullOrWhiteSpace(o.JsonKey)) throw new ArgumentException("The .jsonl text field name is empty.", nameof(o));
        var files = InputFiles(o.Inputs);
        long total = files.Sum(f => new FileInfo(f).Length);
        // Loading vocabularies is not throughput: each worker's tokenizer is made (and used once) before the clock starts,
        // by as many threads at once as there are workers, so that a tokenizer that pools instances makes one for each.
        using (var ready = new Barrier(o.Workers))
        {
            var threads = Enumerable.Range(0, o.Workers).Select(_ => new Thread(() => { ready.SignalAndWait(); tokenizer.Encode("warm up"); })).ToArray();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) t.Join();
        }
        var clock = Stopwatch.StartNew();
        double read = 0, decode = 0, tokenize = 0, write = 0;
        long bytes = 0, skipped = 0;
        var lastReport = TimeSpan.Zero;
        using var writer = new IndexedDatasetWriter(o.OutputPrefix, tokenizer.Identity);
        var batch = new List<RawDocument>();
        long batchBytes = 0;

        void Flush()
        {
            var docs = batch.ToArray();
            var ids = new IReadOnlyList<int>[docs.Length];
            var warnings = new string?[docs.Length];
            var errors = new ExceptionDispatchInfo?[docs.Length];
            double dec = 0, tok = 0;
            var sync = new object();
            Parallel.For(0, docs.Length, new ParallelOptions { MaxDegreeOfParallelism = o.Workers }, () => (0.0, 0.0), (i, _, acc) =>
            {
                long t0 = Stopwatch.GetTimestamp();
                string? text;
                try { text = docs[i].Text(o.JsonKey, w => warnings[i] = w); }
                catch (Exception e) when (e is InvalidDataException)
                {
                    errors[i] = ExceptionDispatchInfo.Capture(e);                              // the first bad document in input order is reported
                    return acc;
                }
                long t1 = Stopwatch.GetTimestamp();
                ids[i] = text is null ? [] : tokenizer.Encode(text);
                long t2 = Stopwatch.GetTimestamp();
                return (acc.Item1 + Stopwatch.GetElapsedTime(t0, t1).TotalSeconds, acc.Item2 + Stopwatch.GetElapsedTime(t1, t2).TotalSeconds);
            }, acc => { lock (sync) { dec += acc.Item1; tok += acc.Item2; } });
            errors.FirstOrDefault(e => e is not null)?.Throw();
            (decode, tokenize) = (decode + dec, tokenize + tok);
            long w0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < docs.Length; i++)
            {
                if (warnings[i] is { } w) log?.Invoke(w);
                bytes += docs[i].Bytes.Length;
                if (docs[i].IsRecord && ids[i].Count == 0) { skipped++; continue; }           // an empty "text": nothing to learn from
                writer.Add(ids[i], docs[i].Source);
            }
            write += Stopwatch.GetElapsedTime(w0).TotalSeconds;
            batch.Clear();
            batchBytes = 0;
            if (progress is not null && clock.Elapsed - lastReport >= TimeSpan.FromSeconds(1))
            {
                lastReport = clock.Elapsed;
                progress(new PreprocessProgress(bytes, total, writer.Documents, writer.Tokens, clock.Elapsed));
            }
        }

        long r0 = Stopwatch.GetTimestamp();
        foreach (var doc in Documents(files))
        {
            read += Stopwatch.GetElapsedTime(r0).TotalSeconds;
            batch.Add(doc);
            batchBytes += doc.Bytes.Length;
            if (batchBytes >= BatchBytesPerWorker * o.Workers || batch.Count >= 1024 * o.Workers) Flush();
            r0 = Stopwatch.GetTimestamp();
        }
        read += Stopwatch.GetElapsedTime(r0).TotalSeconds;
        if (batch.Count > 0) Flush();
        if (writer.Documents == 0) throw new InvalidDataException($"No documents in {string.Join(", ", o.Inputs)}: every .jsonl record's '{o.JsonKey}' was empty.");
        long c0 = Stopwatch.GetTimestamp();
        writer.Commit();
        write += Stopwatch.GetElapsedTime(c0).TotalSeconds;
        if (skipped > 0) log?.Invoke($"warning: {skipped:N0} .jsonl record(s) with an empty '{o.JsonKey}' were skipped");
        if (lastReport == TimeSpan.Zero || bytes < total) progress?.Invoke(new PreprocessProgress(bytes, total, writer.Documents, writer.Tokens, clock.Elapsed));
        return new PreprocessResult(Path.GetFullPath(o.OutputPrefix), writer.Documents, writer.Tokens, total, writer.BytesPerId, clock.Elapsed, read, decode, tokenize, write, o.Workers);
    }

    /// <summary>
    /// Files as given; folders searched recursively for *.txt and *.jsonl (any case, as a file given directly is read by its
    /// extension in any case), in ordinal order. Empty files are refused.
    /// </summary>
    public static IReadOnlyList<string> InputFiles(IEnumerable<string> paths)
    {
        var files = new List<string>();
        foreach (var p in paths)
        {
            if (File.Exists(p)) files.Add(Path.GetFullPath(p));
            else if (Directory.Exists(p))
                files.AddRange(Directory.EnumerateFiles(p, "*", SearchOption.AllDirectories)
                    .Where(f => f.EndsWith(".txt", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase))
                    .Select(Path.GetFullPath).Order(StringComparer.Ordinal));
            else throw new FileNotFoundException($"Input '{p}' is neither a file nor a folder.", p);
        }
        if (files.Count == 0) throw new InvalidDataException($"No input files in {string.Join(", ", paths)} (folders are searched for *.txt and *.jsonl).");
        foreach (var f in files)
            if (new FileInfo(f).Length == 0) throw new InvalidDataException($"Input '{f}' is empty: a document needs text (remove the file or give it text).");
        return files;
    }

    private static IEnumerable<RawDocument> Documents(IReadOnlyList<string> files)
    {
        foreach (var f in files)
        {
            if (!f.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase))
            {
                yield return new RawDocument(f, File.ReadAllBytes(f), false);
                continue;
            }
            long line = 0;
            foreach (var bytes in Lines(f))
            {
                line++;
                if (bytes.AsSpan().Trim(" \t\r"u8).IsEmpty) continue;
                yield return new RawDocument($"{f}:{line}", bytes, true);
            }
        }
    }

    /// <summary>Lines of a file as bytes (without the '\n'), read in 1 MB blocks.</summary>
    private static IEnumerable<byte[]> Lines(string file)
    {
        using var f = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        var buf = new byte[1 << 20];
        var acc = new MemoryStream();
        for (int n; (n = f.Read(buf)) > 0;)
        {
            int start = 0;
            for (int i; (i = buf.AsSpan(start, n - start).IndexOf((byte)'\n')) >= 0; start += i + 1)
            {
                acc.Write(buf, start, i);
                yield return acc.ToArray();
                acc.SetLength(0);
            }
            acc.Write(buf, start, n - start);
        }
        if (acc.Length > 0) yield return acc.ToArray();
    }

    /// <summary>One document before decoding: a whole file, or one .jsonl line (<see cref="IsRecord"/>).</summary>
    private sealed record RawDocument(string Source, byte[] Bytes, bool IsRecord)
    {
        /// <summary>The document's text; a file is read as the text-file trainer reads it (NUL refused, invalid UTF-8 replaced with a warning).</summary>
        public string? Text(string key, Action<string> warn)
        {
            if (!IsRecord) return TokenCorpus.Text(Source, Bytes, warn);
            JsonDocument json;
            try { json = JsonDocument.Parse(Bytes); }
            catch (JsonException e) { throw new InvalidDataException($"{Source}: not a JSON object ({e.Message}); each line of a .jsonl file is one object with a \"{key}\" string.", e); }
            using (json)
            {
                if (json.RootElement.ValueKind != JsonValueKind.Object)
                    throw new InvalidDataException($"{Source}: a JSON {json.RootElement.ValueKind.ToString().ToLowerInvariant()}, not an object with a \"{key}\" string.");
                if (!json.RootElement.TryGetProperty(key, out var v))
                    throw new InvalidDataException($"{Source}: the record has no \"{key}\" field (fields: {string.Join(", ", json.RootElement.EnumerateObject().Select(p => p.Name).Take(8))}); choose the field with --json-key.");
                if (v.ValueKind != JsonValueKind.String)
                    throw new InvalidDataException($"{Source}: \"{key}\" is a JSON {v.ValueKind.ToString().ToLowerInvariant()}, not a string.");
                try { return v.GetString(); }
                catch (InvalidOperationException e) { throw new InvalidDataException($"{Source}: \"{key}\" is not valid UTF-8 ({e.Message}); a .jsonl file must be UTF-8.", e); }
            }
        }
    }
}
