using Optimum.Hub;
using Optimum.Tests;
using Optimum.Data;
using Xunit;

namespace Optimum.Training.Tests;

/// <summary>Pairs files, the data-built vocabulary and seq2seq batches.</summary>
public sealed class Seq2SeqDataTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void PairsFiles_TsvAndJsonl_AreReadAndBadLinesNamed()
    {
        var tsv = Path.Combine(_dir, "p.tsv");
        File.WriteAllText(tsv, "cat\tK AE T\n\ndog\tD AO G\n");
        Assert.Equal([("cat", "K AE T"), ("dog", "D AO G")], Seq2SeqData.ReadPairs(tsv));
        var jsonl = Path.Combine(_dir, "p.jsonl");
        File.WriteAllText(jsonl, "{\"source\": \"hi\", \"target\": \"HH AY\"}\n{\"source\": \"x\"}\n");
        var e = Assert.Throws<InvalidDataException>(() => Seq2SeqData.ReadPairs(jsonl));
        Assert.StartsWith($"{jsonl}:2:", e.Message);
        File.WriteAllText(tsv, "a\tb\tc\n");
        Assert.Contains("p.tsv:1: expected 2 tab-separated columns", Assert.Throws<InvalidDataException>(() => Seq2SeqData.ReadPairs(tsv)).Message);
    }

    [Fact]
    public void SymbolTokenizer_RoundTripsAndSaves()
    {
        var tok = SymbolTokenizer.Build([("cat", "K AE T"), ("act", "AE K T")]);
        Assert.Equal(["<pad>", "</s>", "<unk>"], tok.Tokens.Take(3));
        var src = tok.EncodeSource("tac");
        Assert.Equal(SymbolTokenizer.Eos, src[^1]);
        Assert.Equal("tac", tok.DecodeSource(src));
        Assert.Equal("K AE T", tok.DecodeTarget(tok.EncodeTarget("K AE T")));
        Assert.Equal(SymbolTokenizer.Unk, tok.EncodeSource("z")[0]);
        tok.Save(_dir);
        var back = SymbolTokenizer.Load(_dir);
        Assert.Equal(tok.Tokens, back.Tokens);
        Assert.Equal(src, back.EncodeSource("tac"));
    }

    [Fact]
    public void Batches_PadSourcesAndMaskLabels()
    {
        var d = new Seq2SeqData([([5, 6, 1], [7, 1]), ([5, 1], [8, 9, 7, 1]), ([3, 1], [4, 1])], validationFraction: 0.34);
        Assert.Equal(2, d.TrainSamples);
        Assert.Equal(1, d.ValidationSamples);
        var b = new Batch();
        d.FillTrain([1, 0], b);
        Assert.Equal([5L, 1, 0, 5, 6, 1], (long[])b["input_ids"].Data);
        Assert.Equal([1L, 1, 0, 1, 1, 1], (long[])b["attention_mask"].Data);
        Assert.Equal([8L, 9, 7, 1, 7, 1, -100, -100], (long[])b["labels"].Data);
        Assert.Equal(11, b.Tokens);
    }
}
