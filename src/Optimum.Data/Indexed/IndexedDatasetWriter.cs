using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Hashing;

namespace Optimum.Data;

/// <summary>
/// Writes an <see cref="IndexedDataset"/>: documents are appended in order to temporary files beside the prefix, and
/// <see cref="Commit"/> renames them into place (an old .idx is removed first, so an old index never pairs with a new
/// .bin). Disposing without committing deletes the temporary files: an interrupted run leaves no half-written dataset,
/// and temporary files left by a killed process are removed by the next writer of the same prefix.
/// </summary>
public sealed class IndexedDatasetWriter : IDisposable
{
    private readonly string _prefix, _binTmp, _idxTmp;
    private readonly FileStream _bin;
    private readonly XxHash3 _hash = new();
    private readonly List<long> _offsets = [];
    private readonly List<int> _lengths = [];
    private byte[] _buffer = new byte[1 << 16];
    private bool _done;

    public IndexedDatasetWriter(string prefix, TokenizerIdentity tokenizer)
    {
        if (tokenizer.Fingerprint.Length != 32) throw new ArgumentException($"Tokenizer {tokenizer.Name}: a fingerprint has 32 bytes, not {tokenizer.Fingerprint.Length}.", nameof(tokenizer));
        if (tokenizer.EndOfDocument < 0 || tokenizer.EndOfDocument >= tokenizer.VocabSize)
            throw new ArgumentException($"Tokenizer {tokenizer.Name}: end-of-document id {tokenizer.EndOfDocument} is outside its vocabulary [0, {tokenizer.VocabSize}).", nameof(tokenizer));
        _prefix = Path.GetFullPath(prefix);
        Tokenizer = tokenizer;
        BytesPerId = tokenizer.VocabSize <= 1 << 16 ? 2 : 4;
        var dir = Path.GetDirectoryName(_prefix)!;
        Directory.CreateDirectory(dir);
        RemoveStale(dir, Path.GetFileName(_prefix));
        var tag = $"tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        (_binTmp, _idxTmp) = ($"{_prefix}.bin.{tag}", $"{_prefix}.idx.{tag}");
        _bin = new FileStream(_binTmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
    }

    public TokenizerIdentity Tokenizer { get; }
    /// <summary>2 when the vocabulary fits uint16, else 4.</summary>
    public int BytesPerId { get; }
    public long Documents => _offsets.Count;
    /// <summary>Ids written, end-of-document ids included.</summary>
    public long Tokens { get; private set; }

    /// <summary>Appends one document's ids and the end-of-document id; <paramref name="source"/> names it in errors.</summary>
    public void Add(IReadOnlyList<int> ids, string source)
    {
        ObjectDisposedException.ThrowIf(_done, this);
        int n = ids.Count + 1, bytes = n * BytesPerId;
        if (_buffer.Length < bytes) _buffer = new byte[Math.Max(bytes, 2 * _buffer.Length)];
        var span = _buffer.AsSpan(0, bytes);
        for (int i = 0; i <= ids.Count; i++)
        {
            int id = i < ids.Count ? ids[i] : Tokenizer.EndOfDocument;
            if ((uint)id >= (uint)Tokenizer.VocabSize)
                throw new InvalidDataException($"{source}: id {id} at position {i:N0} is outside tokenizer {Tokenizer.Name}'s vocabulary [0, {Tokenizer.VocabSize:N0}).");
            if (BytesPerId == 2) BinaryPrimitives.WriteUInt16LittleEndian(span[(2 * i)..], (ushort)id);
            else BinaryPrimitives.WriteInt32LittleEndian(span[(4 * i)..], id);
        }
        _bin.Write(span);
        _hash.Append(span);
        _offsets.Add(Tokens);
        _lengths.Add(ids.Count);
        Tokens += n;
    }

    /// <summary>Flushes both files to disk and renames them to &lt;prefix&gt;.bin and &lt;prefix&gt;.idx.</summary>
    public void Commit()
    {
        ObjectDisposedException.ThrowIf(_done, this);
        if (Documents == 0) throw new InvalidDataException($"Dataset {_prefix}: no documents to write.");
        _bin.Flush(flushToDisk: true);
        _bin.Dispose();
        // The body streams out in chunks (offsets, then lengths), hashed as it goes; the header, which records that hash,
        // is written over the placeholder last. No buffer grows with the documents.
        using (var f = new FileStream(_idxTmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
        {
            f.Write(new byte[IndexedDataset.HeaderBytes]);
            var body = new XxHash3();
            var chunk = new byte[1 << 16];
            void Stream<T>(List<T> values, int size, Action<Span<byte>, T> put)
            {
                for (int i = 0; i < values.Count;)
                {
                    int n = Math.Min(chunk.Length / size, values.Count - i);
                    for (int j = 0; j < n; j++) put(chunk.AsSpan(size * j), values[i + j]);
                    f.Write(chunk, 0, size * n);
                    body.Append(chunk.AsSpan(0, size * n));
                    i += n;
                }
            }
            Stream(_offsets, sizeof(long), BinaryPrimitives.WriteInt64LittleEndian);
            Stream(_lengths, sizeof(int), BinaryPrimitives.WriteInt32LittleEndian);
            var header = IndexedDataset.WriteHeader(new IndexedDataset.Header(BytesPerId, Documents, Tokens, Tokenizer, _hash.GetCurrentHashAsUInt64(), body.GetCurrentHashAsUInt64()));
            f.Position = 0;
            f.Write(header);
            f.Flush(flushToDisk: true);
        }
        File.Delete(_prefix + ".idx");
        File.Move(_binTmp, _prefix + ".bin", overwrite: true);
        File.Move(_idxTmp, _prefix + ".idx", overwrite: true);
        _done = true;
    }

    public void Dispose()
    {
        if (_done) return;
        _done = true;
        _bin.Dispose();
        File.Delete(_binTmp);
        File.Delete(_idxTmp);
    }

    /// <summary>Deletes &lt;name&gt;.bin.tmp-PID-* and .idx.tmp-PID-* left by processes that no longer run.</summary>
    private static void RemoveStale(string dir, string name)
    {
        foreach (var f in Directory.EnumerateFiles(dir, name + ".*.tmp-*"))
        {
            var rest = Path.GetFileName(f)[(name.Length + 1)..];
            if (!(rest.StartsWith("bin.tmp-", StringComparison.Ordinal) || rest.StartsWith("idx.tmp-", StringComparison.Ordinal))) continue;
            var parts = rest[8..].Split('-');
            if (parts.Length != 2 || !int.TryParse(parts[0], out int pid) || Alive(pid)) continue;
            try { File.Delete(f); }
            catch (IOException) { }                                      // another cleaner got there first
        }
    }

    private static bool Alive(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }
}
