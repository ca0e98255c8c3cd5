using System.Buffers.Binary;
using System.IO.Hashing;
using System.IO.MemoryMappedFiles;
using System.Text;

namespace Optimum.Data;

/// <summary>
/// A corpus tokenized ahead, in Megatron-LM's indexed-dataset spirit: <c>&lt;prefix&gt;.bin</c> holds every document's ids
/// followed by the end-of-document id (uint16 when the vocabulary fits, else int32, little-endian), <c>&lt;prefix&gt;.idx</c> a
/// header and the documents' offsets and lengths. Both are memory-mapped: resident memory holds the pages a run touches,
/// not the corpus. Opening checks sizes, the header's and the index body's checksums, the documents' layout and (unless
/// told not to) the .bin's checksum, read through a plain stream so that checking does not map the corpus in. Each file is
/// opened once and mapped from the handle that was checked, so a dataset committed again meanwhile (the writer renames new
/// files over the old ones) cannot swap in a file the checks did not see. Owns the mappings; dispose it (more than once is
/// harmless; reads after it throw <see cref="ObjectDisposedException"/>).
/// </summary>
/// <remarks>
/// .idx layout (little-endian): 0 magic "OPTMMIDX"; 8 u32 version (1); 12 u8 bytes per id (2 or 4), 3 bytes 0; 16 i32
/// end-of-document id; 20 i32 vocabulary size; 24 i64 documents; 32 i64 tokens (ids in .bin, end-of-document ids included);
/// 40 32 bytes tokenizer fingerprint; 72 32 bytes tokenizer name (ASCII, NUL-padded); 104 u64 XxHash3 of .bin; 112 u64 XxHash3
/// of the body; 120 u64 XxHash3 of bytes 0..120; 128 body: i64 offset[documents], then i32 length[documents] (ids, the
/// end-of-document id not counted; offset[i+1] = offset[i] + length[i] + 1).
/// </remarks>
public sealed unsafe class IndexedDataset : IDisposable
{
    internal const string Magic = "OPTMMIDX";
    internal const int Version = 1;
    internal const int HeaderBytes = 128;

    private readonly MemoryMappedFile _binMap, _idxMap;
    private readonly MemoryMappedViewAccessor _bin, _idx;
    private readonly byte* _tokens, _body;
    private int _disposed;

    private IndexedDataset(string prefix, Header h, MemoryMappedFile binMap, MemoryMappedViewAccessor bin, MemoryMappedFile idxMap, MemoryMappedViewAccessor idx)
    {
        (Prefix, _binMap, _bin, _idxMap, _idx) = (prefix, binMap, bin, idxMap, idx);
        (BytesPerId, Documents, Tokens, Tokenizer) = (h.BytesPerId, h.Documents, h.Tokens, h.Tokenizer);
        byte* p = null;
        _bin.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
        _tokens = p + _bin.PointerOffset;
        byte* q = null;
        _idx.SafeMemoryMappedViewHandle.AcquirePointer(ref q);
        _body = q + _idx.PointerOffset + HeaderBytes;
    }

    /// <summary>The path without .bin/.idx.</summary>
    public string Prefix { get; }
    public string BinPath => Prefix + ".bin";
    public string IdxPath => Prefix + ".idx";
    /// <summary>2 (uint16 ids) or 4 (int32 ids).</summary>
    public int BytesPerId { get; }
    public long Documents { get; }
    /// <summary>Ids in the .bin, an end-of-document id after each document included.</summary>
    public long Tokens { get; }
    public TokenizerIdentity Tokenizer { get; }

    /// <summary>Where document <paramref name="i"/> starts in the id stream.</summary>
    public long DocumentOffset(long i) => *(long*)(_body + 8 * Check(i));
    /// <summary>Ids of document <paramref name="i"/>, its end-of-document id not counted.</summary>
    public int DocumentLength(long i) => *(int*)(_body + 8 * Documents + 4 * Check(i));

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

    /// <summary>Copies ids [start, start + dst.Length) of the stream into <paramref name="dst"/>.</summary>
    public void Read(long start, Span<long> dst)
    {
        ThrowIfDisposed();
        if (start < 0 || start + dst.Length > Tokens)
            throw new ArgumentOutOfRangeException(nameof(start), $"Ids [{start}, {start + dst.Length}) exceed the {Tokens:N0} ids of {BinPath}.");
        if (BytesPerId == 2)
        {
            var src = (ushort*)_tokens + start;
            for (int i = 0; i < dst.Length; i++) dst[i] = src[i];
        }
        else
        {
            var src = (int*)_tokens + start;
            for (int i = 0; i < dst.Length; i++) dst[i] = src[i];
        }
    }

    /// <summary>The ids of document <paramref name="i"/> (a new array).</summary>
    public int[] Document(long i)
    {
        var ids = new long[DocumentLength(i)];
        Read(DocumentOffset(i), ids);
        return Array.ConvertAll(ids, x => (int)x);
    }

    private long Check(long i)
    {
        ThrowIfDisposed();
        return i >= 0 && i < Documents ? i : throw new ArgumentOutOfRangeException(nameof(i), i, $"{IdxPath} has {Documents:N0} documents.");
    }

    /// <summary>True when <paramref name="path"/> names a dataset: a prefix with a .idx beside it, or a .idx or .bin file.</summary>
    public static bool IsDataset(string path, out string prefix)
    {
        prefix = path;
        if ((path.EndsWith(".idx", StringComparison.Ordinal) || path.EndsWith(".bin", StringComparison.Ordinal)) && File.Exists(path))
        {
            prefix = path[..^4];
            return true;
        }
        return File.Exists(path + ".idx") || File.Exists(path + ".bin");
    }

    /// <summary>
    /// Opens <c>&lt;prefix&gt;.idx</c> and <c>&lt;prefix&gt;.bin</c> (a path ending in .idx or .bin is taken as its prefix).
    /// <paramref name="expected"/>: the model's tokenizer; a dataset made with another is refused. <paramref name="verifyBin"/>:
    /// also check the .bin's checksum (one streamed read of the file).
    /// </summary>
    public static IndexedDataset Open(string prefix, TokenizerIdentity? expected = null, bool verifyBin = true)
    {
        if (prefix.EndsWith(".idx", StringComparison.Ordinal) || prefix.EndsWith(".bin", StringComparison.Ordinal)) prefix = prefix[..^4];
        string idx = prefix + ".idx", bin = prefix + ".bin";
        if (!File.Exists(idx)) throw new FileNotFoundException($"Dataset '{prefix}': the index {idx} is missing (make the dataset with optimum-net preprocess; an interrupted run leaves none).", idx);
        if (!File.Exists(bin)) throw new FileNotFoundException($"Dataset '{prefix}': the ids file {bin} is missing.", bin);
        FileStream? idxFile = null, binFile = null;
        MemoryMappedFile? binMap = null, idxMap = null;
        MemoryMappedViewAccessor? binView = null, idxView = null;
        try
        {
            // One handle per file, checked and then mapped: a rename over the path meanwhile does not change what is read.
            idxFile = new FileStream(idx, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1 << 16);
            binFile = new FileStream(bin, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1, FileOptions.SequentialScan);
            var h = ReadHeader(idx, idxFile);
            if (expected is not null && !h.Tokenizer.SameAs(expected))
                throw new InvalidDataException($"Dataset {idx} was made with tokenizer {h.Tokenizer}, but the model uses {expected}: tokenize the text again with the model's tokenizer (optimum-net preprocess --tokenizer <model folder>).");
            long binBytes = binFile.Length, binIds = binBytes / h.BytesPerId;
            if (binBytes % h.BytesPerId != 0 || binIds != h.Tokens)
            {
                string want = h.Tokens <= long.MaxValue / h.BytesPerId ? $"{h.Tokens * h.BytesPerId:N0} bytes" : "more bytes than a file holds";
                throw new InvalidDataException($"Dataset {bin} has {binBytes:N0} bytes but its index {idx} says {h.Tokens:N0} ids of {h.BytesPerId} bytes = {want}: "
                    + (binIds < h.Tokens ? "the .bin is truncated" : "the .bin does not belong to this .idx") + "; make the dataset again.");
            }
            CheckBody(idx, idxFile, h);
            if (verifyBin)
            {
                var sum = Hash(binFile, 0);
                if (sum != h.BinChecksum)
                    throw new InvalidDataException($"Dataset {bin} does not match its index {idx}: checksum {sum:x16}, the index recorded {h.BinChecksum:x16} (the .bin was changed or comes from another run); make the dataset again.");
            }
            binMap = MemoryMappedFile.CreateFromFile(binFile, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            binView = binMap.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            idxMap = MemoryMappedFile.CreateFromFile(idxFile, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            idxView = idxMap.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            // Every pointer read stays inside these views: never trust a mapping smaller than the checked sizes.
            if (binView.Capacity < h.Tokens * h.BytesPerId)
                throw new InvalidDataException($"Dataset {bin}: its mapping holds {binView.Capacity:N0} bytes, the index says {h.Tokens * h.BytesPerId:N0} (the file changed while opening).");
            if (idxView.Capacity < HeaderBytes + 12 * h.Documents)
                throw new InvalidDataException($"Dataset {idx}: its mapping holds {idxView.Capacity:N0} bytes, {h.Documents:N0} documents need {HeaderBytes + 12 * h.Documents:N0} (the file changed while opening).");
            return new IndexedDataset(prefix, h, binMap, binView, idxMap, idxView);
        }
        catch
        {
            binView?.Dispose(); binMap?.Dispose(); idxView?.Dispose(); idxMap?.Dispose();
            binFile?.Dispose(); idxFile?.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _bin.SafeMemoryMappedViewHandle.ReleasePointer();
        _idx.SafeMemoryMappedViewHandle.ReleasePointer();
        _bin.Dispose(); _binMap.Dispose(); _idx.Dispose(); _idxMap.Dispose();
    }

    internal sealed record Header(int BytesPerId, long Documents, long Tokens, TokenizerIdentity Tokenizer, ulong BinChecksum, ulong BodyChecksum);

    internal static byte[] WriteHeader(Header h)
    {
        var b = new byte[HeaderBytes];
        Encoding.ASCII.GetBytes(Magic).CopyTo(b, 0);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(8), Version);
        b[12] = (byte)h.BytesPerId;
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(16), h.Tokenizer.EndOfDocument);
        BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(20), h.Tokenizer.VocabSize);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(24), h.Documents);
        BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(32), h.Tokens);
        h.Tokenizer.Fingerprint.CopyTo(b, 40);
        var name = Encoding.ASCII.GetBytes(h.Tokenizer.Name);
        name.AsSpan(0, Math.Min(32, name.Length)).CopyTo(b.AsSpan(72));
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(104), h.BinChecksum);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(112), h.BodyChecksum);
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(120), XxHash3.HashToUInt64(b.AsSpan(0, 120)));
        return b;
    }

    private static Header ReadHeader(string idx, FileStream f)
    {
        var b = new byte[HeaderBytes];
        f.Position = 0;
        int n = f.ReadAtLeast(b, HeaderBytes, throwOnEndOfStream: false);
        if (n < HeaderBytes || Encoding.ASCII.GetString(b, 0, 8) != Magic)
            throw new InvalidDataException($"{idx} is not an Optimum.Net dataset index (it does not start with the {HeaderBytes}-byte header and magic '{Magic}').");
        uint version = BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(8));
        if (version != Version) throw new InvalidDataException($"{idx} has format version {version}; this build reads version {Version}.");
        if (BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(120)) != XxHash3.HashToUInt64(b.AsSpan(0, 120)))
            throw new InvalidDataException($"{idx}: the header's checksum does not match (the file is damaged); make the dataset again.");
        int bytesPerId = b[12];
        if (bytesPerId is not (2 or 4)) throw new InvalidDataException($"{idx}: {bytesPerId} bytes per id; expected 2 (uint16) or 4 (int32).");
        var name = Encoding.ASCII.GetString(b, 72, 32).TrimEnd('\0');
        var tok = new TokenizerIdentity(name, b[40..72], BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(20)), BinaryPrimitives.ReadInt32LittleEndian(b.AsSpan(16)));
        if (tok.VocabSize < 1 || (bytesPerId == 2 && tok.VocabSize > 1 << 16))
            throw new InvalidDataException($"{idx}: vocabulary size {tok.VocabSize:N0} with {bytesPerId}-byte ids (expected 1..{(bytesPerId == 2 ? 1 << 16 : int.MaxValue):N0}; the index is damaged).");
        if (tok.EndOfDocument < 0 || tok.EndOfDocument >= tok.VocabSize)
            throw new InvalidDataException($"{idx}: end-of-document id {tok.EndOfDocument:N0} is outside the vocabulary [0, {tok.VocabSize:N0}) (the index is damaged).");
        long docs = BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(24)), tokens = BinaryPrimitives.ReadInt64LittleEndian(b.AsSpan(32));
        if (docs < 1 || tokens < docs) throw new InvalidDataException($"{idx}: {docs:N0} documents and {tokens:N0} ids is not a dataset.");
        // Bounded before multiplying: a crafted count must not wrap the size it is checked against.
        long size = f.Length;
        if (docs > (size - HeaderBytes) / 12)
            throw new InvalidDataException($"{idx} has {size:N0} bytes: too few for its {docs:N0} documents of 12 bytes each after the {HeaderBytes}-byte header (the index is truncated or damaged); make the dataset again.");
        long want = HeaderBytes + 12 * docs;
        if (size != want) throw new InvalidDataException($"{idx} has {size:N0} bytes; {docs:N0} documents need {want:N0} (the index is truncated or damaged); make the dataset again.");
        return new Header(bytesPerId, docs, tokens, tok, BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(104)), BinaryPrimitives.ReadUInt64LittleEndian(b.AsSpan(112)));
    }

    /// <summary>The body's checksum and layout: documents back to back, each followed by one end-of-document id, filling the .bin.</summary>
    private static void CheckBody(string idx, FileStream f, Header h)
    {
        if (Hash(f, HeaderBytes) != h.BodyChecksum)
            throw new InvalidDataException($"{idx}: the document table's checksum does not match the header (the index is damaged); make the dataset again.");
        using var r = new BinaryReader(f, Encoding.UTF8, leaveOpen: true);
        var offsets = new long[Math.Min(h.Documents, 1 << 16)];
        long expect = 0;
        for (long d = 0; d < h.Documents; d += offsets.Length)
        {
            int n = (int)Math.Min(offsets.Length, h.Documents - d);
            f.Position = HeaderBytes + 8 * d;
            for (int i = 0; i < n; i++) offsets[i] = r.ReadInt64();
            f.Position = HeaderBytes + 8 * h.Documents + 4 * d;
            for (int i = 0; i < n; i++)
            {
                int len = r.ReadInt32();
                if (offsets[i] != expect || len < 0)
                    throw new InvalidDataException($"{idx}: document {d + i:N0} starts at {offsets[i]:N0} with {len:N0} ids; expected it at {expect:N0} (the index is damaged).");
                expect += len + 1L;
            }
        }
        if (expect != h.Tokens) throw new InvalidDataException($"{idx}: the documents hold {expect:N0} ids, the header says {h.Tokens:N0} (the index is damaged).");
    }

    /// <summary>XxHash3 of <paramref name="f"/> from byte <paramref name="from"/> to its end.</summary>
    private static ulong Hash(FileStream f, long from)
    {
        var hash = new XxHash3();
        f.Position = from;
        var buf = new byte[1 << 20];
        for (int n; (n = f.Read(buf)) > 0;) hash.Append(buf.AsSpan(0, n));
        return hash.GetCurrentHashAsUInt64();
    }
}
