using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using Optimum.Hub;
using Optimum.Core;

namespace Optimum.Data;

/// <summary>
/// Text files tokenized with GPT-2's BPE into one id stream, documents (files) separated by the
/// end-of-text token. The stream is cached on disk under a key made from the tokenizer and the
/// files' names and contents, so an unchanged corpus is read back instead of re-tokenized.
/// </summary>
public sealed class TokenCorpus
{
    private const string Magic = "OPTTOK01";
    private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private TokenCorpus(int[] tokens, int documents, string cachePath, bool fromCache)
    {
        Tokens = tokens;
        Documents = documents;
        CachePath = cachePath;
        FromCache = fromCache;
    }

    public int[] Tokens { get; }
    public int Documents { get; }
    public string CachePath { get; }
    /// <summary>True when the ids came from the cache.</summary>
    public bool FromCache { get; }

    /// <summary>The default cache folder: $XDG_CACHE_HOME/optimum-net/tokens or ~/.cache/optimum-net/tokens.</summary>
    public static string DefaultCacheDir =>
        Path.Combine(Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache"), "optimum-net", "tokens");

    /// <summary>The text files of <paramref name="paths"/>: files as given, folders searched recursively for *.txt, in ordinal order.</summary>
    public static IReadOnlyList<string> Files(IEnumerable<string> paths)
    {
        var files = new List<string>();
        foreach (var p in paths)
        {
            if (File.Exists(p)) files.Add(Path.GetFullPath(p));
            else if (Directory.Exists(p))
                files.AddRange(Directory.EnumerateFiles(p, "*.txt", SearchOption.AllDirectories).Select(Path.GetFullPath).Order(StringComparer.Ordinal));
            else throw new FileNotFoundException($"Training data '{p}' is neither a file nor a folder.", p);
        }
        if (files.Count == 0) throw new InvalidDataException($"No text files in {string.Join(", ", paths)} (folders are searched for *.txt).");
        return files;
    }

    /// <summary>Tokenizes (or reads from the cache) the documents in <paramref name="paths"/>.</summary>
    public static TokenCorpus Load(IEnumerable<string> paths, string? cacheDir = null, Action<string>? log = null)
    {
        var files = Files(paths);
        cacheDir ??= DefaultCacheDir;
        var texts = files.Select(f => File.ReadAllBytes(f)).ToArray();
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(Encoding.UTF8.GetBytes(Gpt2Tokenizer.Id + "\n"));
        for (int i = 0; i < files.Count; i++)
        {
            sha.AppendData(Encoding.UTF8.GetBytes(Path.GetFileName(files[i]) + "\n" + texts[i].Length + "\n"));
            sha.AppendData(texts[i]);
        }
        var key = Convert.ToHexString(sha.GetHashAndReset())[..24].ToLowerInvariant();
        var cache = Path.Combine(cacheDir, key + ".tokens");
        if (File.Exists(cache) && TryRead(cache, out var cached, out var docs))
        {
            log?.Invoke($"tokens: {cached.Length:N0} from cache {cache}");
            return new TokenCorpus(cached, docs, cache, true);
        }
        var tok = Gpt2Tokenizer.Create();
        var ids = new List<int>();
        for (int i = 0; i < texts.Length; i++)
        {
            if (i > 0) ids.Add(Gpt2Tokenizer.EndOfText);
            ids.AddRange(tok.Encode(Text(files[i], texts[i], log)));
        }
        var tokens = ids.ToArray();
        try
        {
            Write(cache, tokens, files.Count);
            log?.Invoke($"tokens: {tokens.Length:N0} from {files.Count} file(s), cached at {cache}");
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            // A read-only or full cache folder costs the next run a re-tokenization, not this run.
            log?.Invoke($"tokens: {tokens.Length:N0} from {files.Count} file(s); warning: the token cache {cache} could not be written ({e.Message}), "
                + "so the next run tokenizes again (set XDG_CACHE_HOME to a writable folder)");
        }
        return new TokenCorpus(tokens, files.Count, cache, false);
    }

    /// <summary>
    /// A training file's text. A NUL byte means a binary file (or UTF-16 text), which is refused naming the file;
    /// bytes that are not UTF-8 are replaced by U+FFFD with a warning saying how many.
    /// </summary>
    internal static string Text(string file, byte[] bytes, Action<string>? log)
    {
        int nul = bytes.AsSpan().IndexOf((byte)0);
        if (nul >= 0)
            throw new InvalidDataException($"Training data '{file}' is not text: it holds a NUL byte at offset {nul:N0} (a binary file, or UTF-16 text; convert it to UTF-8).");
        try { return Strict.GetString(bytes); }
        catch (DecoderFallbackException)
        {
            var text = Encoding.UTF8.GetString(bytes);
            // Replacement characters in the text minus those the file spelled itself (EF BF BD).
            int replaced = text.AsSpan().Count('\uFFFD') - bytes.AsSpan().Count([(byte)0xEF, (byte)0xBF, (byte)0xBD]);
            log?.Invoke($"warning: training data '{file}' is not valid UTF-8: {replaced:N0} invalid byte sequence(s) read as U+FFFD");
            return text;
        }
    }


    private static void Write(string path, int[] tokens, int documents)
    {
        var bytes = new byte[8 + 8 + 4 + 2L * tokens.Length];
        Encoding.ASCII.GetBytes(Magic).CopyTo(bytes, 0);
        BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(8), tokens.Length);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(16), documents);
        for (int i = 0; i < tokens.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(bytes.AsSpan(20 + 2 * i), checked((ushort)tokens[i]));
        Optimum.Core.AtomicFile.Write(path, bytes);
    }

    /// <summary>Reads a cache file; a damaged one is ignored (and rebuilt by the caller).</summary>
    private static bool TryRead(string path, out int[] tokens, out int documents)
    {
        tokens = [];
        documents = 0;
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 20 || Encoding.ASCII.GetString(bytes, 0, 8) != Magic) return false;
        long n = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(8));
        if (n < 0 || bytes.Length != 20 + 2 * n) return false;
        documents = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(16));
        tokens = new int[n];
        for (int i = 0; i < n; i++) tokens[i] = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(20 + 2 * i));
        return true;
    }
}
