using Microsoft.ML.Tokenizers;

namespace Optimum.Hub;

/// <summary>Tokenization of (source, target) text for encoder-decoders; sequences end with EOS as T5's do.</summary>
public interface IPairTokenizer
{
    int VocabSize { get; }
    int[] EncodeSource(string text);
    int[] EncodeTarget(string text);
    string DecodeTarget(IEnumerable<int> ids);
}

/// <summary>The tokenizer of a T5 model folder: spiece.model (SentencePiece, as HF ships T5) or vocab.json (a data-built vocabulary).</summary>
public static class PairTokenizers
{
    /// <summary>The files a pair tokenizer is read from (whichever the folder has), in the order <see cref="Load"/> looks.</summary>
    public static IReadOnlyList<string> Files { get; } = [SentencePieceText.FileName, SymbolTokenizer.FileName];

    /// <summary>
    /// Copies the tokenizer of <paramref name="fromDir"/> into <paramref name="toDir"/> after checking it loads, so an
    /// export never carries a model without the tokenizer it was trained with (or a corrupt one).
    /// </summary>
    public static IPairTokenizer Copy(string fromDir, string toDir)
    {
        var tok = Load(fromDir);
        Directory.CreateDirectory(toDir);
        foreach (var name in Files.Where(f => File.Exists(Path.Combine(fromDir, f))))
            Optimum.Core.AtomicFile.Write(Path.Combine(toDir, name), File.ReadAllBytes(Path.Combine(fromDir, name)));
        return tok;
    }

    public static IPairTokenizer Load(string dir)
    {
        if (File.Exists(Path.Combine(dir, SentencePieceText.FileName))) return SentencePieceText.Load(dir);
        if (File.Exists(Path.Combine(dir, SymbolTokenizer.FileName))) return SymbolTokenizer.Load(dir);
        throw new FileNotFoundException($"'{dir}' has no tokenizer: expected {SentencePieceText.FileName} or {SymbolTokenizer.FileName}.");
    }
}

/// <summary>A SentencePiece model (spiece.model) through Microsoft.ML.Tokenizers; appends EOS, no BOS (T5's convention).</summary>
public sealed class SentencePieceText : IPairTokenizer
{
    public const string FileName = "spiece.model";
    private readonly SentencePieceTokenizer _tok;

    private SentencePieceText(SentencePieceTokenizer tok, int vocab)
    {
        _tok = tok;
        VocabSize = vocab;
    }

    public int VocabSize { get; }

    public static SentencePieceText Load(string dir)
    {
        var path = Path.Combine(dir, FileName);
        if (!File.Exists(path)) throw new FileNotFoundException($"'{dir}' has no {FileName}.", path);
        SentencePieceProto.ModelProto model;
        try { model = SentencePieceProto.ModelProto.Parser.ParseFrom(File.ReadAllBytes(path)); }
        catch (Google.Protobuf.InvalidProtocolBufferException e) { throw new InvalidDataException($"'{path}' is not a SentencePiece model: {e.Message}", e); }
        if (model.Pieces.Count == 0) throw new InvalidDataException($"'{path}' has no pieces.");
        // T5's models have no BOS (bos_id -1), which Microsoft.ML.Tokenizers 2.0.1 indexes anyway; BOS is
        // never emitted here, so point it at the unknown piece.
        if (model.TrainerSpec is { BosId: < 0 } spec) spec.BosId = spec.HasUnkId ? spec.UnkId : 0;
        using var stream = new MemoryStream(Google.Protobuf.MessageExtensions.ToByteArray(model));
        return new SentencePieceText(SentencePieceTokenizer.Create(stream, addBeginningOfSentence: false, addEndOfSentence: true), model.Pieces.Count);
    }

    public int[] EncodeSource(string text) => [.. _tok.EncodeToIds(text)];
    public int[] EncodeTarget(string text) => [.. _tok.EncodeToIds(text)];
    public string DecodeTarget(IEnumerable<int> ids) => _tok.Decode(ids, false) ?? "";
}
