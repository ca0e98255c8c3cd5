using Optimum.Hub;

namespace Optimum.Data;

/// <summary>
/// What identifies a tokenizer in a dataset tokenized ahead (<see cref="IndexedDataset"/>): a dataset made with another
/// tokenizer than the model's is refused by comparing <see cref="Fingerprint"/>.
/// </summary>
/// <param name="Name">A readable name (at most 32 ASCII characters), shown in errors.</param>
/// <param name="Fingerprint">32 bytes (SHA-256) of what decides the ids: vocabulary, merges, pre-tokenizer.</param>
/// <param name="VocabSize">Ids are in [0, VocabSize); above 65,536 the dataset stores int32 ids, else uint16.</param>
/// <param name="EndOfDocument">The id written after every document (GPT-2's end-of-text).</param>
public sealed record TokenizerIdentity(string Name, byte[] Fingerprint, int VocabSize, int EndOfDocument)
{
    /// <summary>Short hex of the fingerprint for messages.</summary>
    public string ShortFingerprint => Convert.ToHexString(Fingerprint, 0, 6).ToLowerInvariant();

    public bool SameAs(TokenizerIdentity other) => Fingerprint.AsSpan().SequenceEqual(other.Fingerprint) && EndOfDocument == other.EndOfDocument;

    public override string ToString() => $"'{Name}' (fingerprint {ShortFingerprint}, vocabulary {VocabSize:N0}, end of document {EndOfDocument})";
}

/// <summary>A tokenizer of whole documents for <see cref="Preprocessor"/>. <see cref="Encode"/> is called from several threads at once.</summary>
public interface IDocumentTokenizer
{
    TokenizerIdentity Identity { get; }
    /// <summary>Ids of one document (without the end-of-document id, which the writer appends).</summary>
    IReadOnlyList<int> Encode(string text);
}

/// <summary>
/// GPT-2's byte-level BPE (<see cref="Gpt2Tokenizer"/>) as a document tokenizer. Concurrent calls each rent a tokenizer of
/// their own from a pool (one is made when none is free), so parallel workers do not contend for one merge cache.
/// </summary>
public sealed class Gpt2DocumentTokenizer : IDocumentTokenizer
{
    private readonly System.Collections.Concurrent.ConcurrentBag<Gpt2Tokenizer> _free = [];
    private static readonly Lazy<TokenizerIdentity> Id = new(() => new TokenizerIdentity(Gpt2Tokenizer.Id, Gpt2Tokenizer.Fingerprint, Gpt2Tokenizer.EndOfText + 1, Gpt2Tokenizer.EndOfText));

    /// <summary>GPT-2's identity (name gpt2-bpe-v1, vocabulary 50,257, end of document 50256).</summary>
    public static TokenizerIdentity Gpt2Identity => Id.Value;

    public TokenizerIdentity Identity => Id.Value;
    public IReadOnlyList<int> Encode(string text)
    {
        var tok = _free.TryTake(out var t) ? t : Gpt2Tokenizer.CreateUnshared();
        try { return tok.Encode(text); }
        finally { _free.Add(tok); }
    }
}
