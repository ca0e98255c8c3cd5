using Google.Protobuf;
using Optimum.Hub;
using Optimum.Hub.SentencePieceProto;
using Optimum.Tests;
using Xunit;

namespace Optimum.Hub.Tests;

/// <summary>spiece.model files through Microsoft.ML.Tokenizers: a small unigram model written here, laid out as T5's (pad 0, eos 1, unk 2).</summary>
public sealed class SentencePieceTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    private void WriteModel()
    {
        var m = new ModelProto
        {
            TrainerSpec = new TrainerSpec { ModelType = TrainerSpec.Types.ModelType.Unigram, VocabSize = 12, PadId = 0, EosId = 1, UnkId = 2, BosId = -1, PadPiece = "<pad>", EosPiece = "</s>", UnkPiece = "<unk>" },
            NormalizerSpec = new NormalizerSpec { Name = "identity", AddDummyPrefix = true, RemoveExtraWhitespaces = true, EscapeWhitespaces = true },
        };
        void Add(string piece, float score, ModelProto.Types.SentencePiece.Types.Type type = ModelProto.Types.SentencePiece.Types.Type.Normal) =>
            m.Pieces.Add(new ModelProto.Types.SentencePiece { Piece = piece, Score = score, Type = type });
        Add("<pad>", 0, ModelProto.Types.SentencePiece.Types.Type.Control);
        Add("</s>", 0, ModelProto.Types.SentencePiece.Types.Type.Control);
        Add("<unk>", 0, ModelProto.Types.SentencePiece.Types.Type.Unknown);
        foreach (var (p, s) in new[] { ("▁the", -1f), ("▁cat", -1.5f), ("s", -2f), ("▁", -3f), ("t", -4f), ("h", -4f), ("e", -4f), ("c", -4f), ("a", -4f) }) Add(p, s);
        File.WriteAllBytes(Path.Combine(_dir, SentencePieceText.FileName), m.ToByteArray());
    }

    [Fact]
    public void UnigramModel_EncodesWithEosAndDecodes()
    {
        WriteModel();
        var tok = PairTokenizers.Load(_dir);
        Assert.IsType<SentencePieceText>(tok);
        Assert.Equal(12, tok.VocabSize);
        var ids = tok.EncodeSource("the cats");
        Assert.Equal([3, 4, 5, 1], ids);                  // ▁the ▁cat s </s>
        Assert.Equal("the cats", tok.DecodeTarget(ids));
    }

    [Fact]
    public void MissingOrBadModels_AreRefusedByName()
    {
        Assert.Contains("has no tokenizer", Assert.Throws<FileNotFoundException>(() => PairTokenizers.Load(_dir)).Message);
        File.WriteAllBytes(Path.Combine(_dir, SentencePieceText.FileName), [0xff, 0xff, 0xff]);
        Assert.Contains("is not a SentencePiece model", Assert.Throws<InvalidDataException>(() => SentencePieceText.Load(_dir)).Message);
    }
}
