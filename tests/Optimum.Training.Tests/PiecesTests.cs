using Optimum.Hub;
using Optimum.Tests;
using Optimum.Data;
using Xunit;
using Optimum.Core;

namespace Optimum.Training.Tests;

/// <summary>Schedules, optimizers and clipping against closed forms; the data pipeline.</summary>
public sealed class PiecesTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    public void Dispose() => Directory.Delete(_dir, true);

    [Fact]
    public void Schedules_MatchHuggingFaceClosedForms()
    {
        var lin = new LrSchedule(ScheduleKind.Linear, 1.0, 10, 110);
        Assert.Equal([0, 0.5, 1, 0.5, 0], new[] { 0L, 5, 10, 60, 110 }.Select(lin.At));
        var cos = new LrSchedule(ScheduleKind.Cosine, 2.0, 0, 100);
        Assert.Equal(2.0, cos.At(0), 12);
        Assert.Equal(1.0, cos.At(50), 12);
        Assert.Equal(2.0 * 0.5 * (1 + Math.Cos(Math.PI * 0.25)), cos.At(25), 12);
        Assert.Equal(0.0, cos.At(100), 12);
        var flat = new LrSchedule(ScheduleKind.Constant, 3.0, 4, 50);
        Assert.Equal([0, 1.5, 3, 3], new[] { 0L, 2, 4, 49 }.Select(flat.At));
        Assert.Throws<ArgumentException>(() => EnumNames.Parse<ScheduleKind>("step", "--schedule"));
        Assert.Equal(ScheduleKind.Cosine, EnumNames.Parse<ScheduleKind>("cosine", "--schedule"));
        Assert.Throws<ArgumentException>(() => new LrSchedule((ScheduleKind)7, 1, 0, 10).Validate());
        Assert.Throws<ArgumentException>(() => new LrSchedule(ScheduleKind.Linear, 1, 20, 10).Validate());
    }

    private static ParameterStore Store(params float[][] values)
    {
        var s = new ParameterStore(values.Select((v, i) => new ParameterInfo(i == 0 ? "w.weight" : "w.bias", [v.Length])).ToArray());
        s.Load(values);
        return s;
    }

    [Fact]
    public void Sgd_MatchesTorchWithMomentumNesterovAndDecay()
    {
        using var s = Store([1f, -2f], [0.5f]);
        using var opt = Optimizer.Create(s, new OptimizerConfig { Kind = OptimizerKind.Sgd, Momentum = 0.9, WeightDecay = 0.1 });
        float[] g1 = [0.3f, 0.1f], g2 = [-0.2f, 0.4f];
        g1.CopyTo(s.Grad(0)); s.Grad(1)[0] = 1f;
        opt.Step(1, 0.1);
        // step 1: d = g + wd*p; buf = d; p -= lr*buf. The bias is not decayed.
        float d0 = 0.3f + 0.1f * 1f, d1 = 0.1f + 0.1f * -2f;
        Assert.Equal(1f - 0.1f * d0, s.Param(0)[0], 6);
        Assert.Equal(-2f - 0.1f * d1, s.Param(0)[1], 6);
        Assert.Equal(0.5f - 0.1f * 1f, s.Param(1)[0], 6);
        float p0 = s.Param(0)[0];
        g2.CopyTo(s.Grad(0));
        opt.Step(2, 0.1);
        float e0 = -0.2f + 0.1f * p0, buf0 = 0.9f * d0 + e0;
        Assert.Equal(p0 - 0.1f * buf0, s.Param(0)[0], 6);
        Assert.Equal(1L * s.Length * sizeof(float), opt.StateBytes);
    }

    [Fact]
    public void AdamW_FirstStepMovesEachWeightByLrTimesSign()
    {
        // With bias correction, step 1 of Adam is lr * g / (|g| + eps'): a move of ~lr against the gradient's sign.
        using var s = Store([1f, -1f, 0.25f], [2f]);
        using var opt = Optimizer.Create(s, new OptimizerConfig { WeightDecay = 0.5 });
        float[] g = [3f, -0.001f, 0f];
        g.CopyTo(s.Grad(0)); s.Grad(1)[0] = -7f;
        opt.Step(1, 0.01);
        Assert.Equal(1f * (1 - 0.01f * 0.5f) - 0.01f, s.Param(0)[0], 5);
        Assert.Equal(-1f * (1 - 0.01f * 0.5f) + 0.01f * 0.001f / (0.001f + 1e-8f), s.Param(0)[1], 5);
        Assert.Equal(0.25f * (1 - 0.01f * 0.5f), s.Param(0)[2], 6);
        Assert.Equal(2f + 0.01f, s.Param(1)[0], 5);   // bias: no decay
        Assert.Equal(2L * s.Length * sizeof(float), opt.StateBytes);
    }

    [Fact]
    public void ClippingScalesTheGlobalNorm()
    {
        float[] g = Enumerable.Range(0, 1000).Select(i => (float)Math.Sin(i)).ToArray();
        double norm = Math.Sqrt(VectorMath.SumSquares(g));
        Assert.Equal(Math.Sqrt(g.Sum(x => (double)x * x)), norm, 5);   // float lanes, double across blocks
        VectorMath.Scale(g, (float)(0.5 / norm));
        Assert.Equal(0.5, Math.Sqrt(VectorMath.SumSquares(g)), 5);
    }

    [Fact]
    public void SampleIndex_IsASeededPermutationPerEpoch()
    {
        var a = new SampleIndex(10, 25, 3);
        var b = new SampleIndex(10, 25, 3);
        Assert.Equal(a.Slice(0, 25).ToArray(), b.Slice(0, 25).ToArray());
        Assert.Equal(Enumerable.Range(0, 10), a.Slice(0, 10).ToArray().Order());
        Assert.Equal(Enumerable.Range(0, 10), a.Slice(10, 10).ToArray().Order());
        Assert.NotEqual(a.Slice(0, 10).ToArray(), a.Slice(10, 10).ToArray());
        Assert.NotEqual(a.Slice(0, 10).ToArray(), new SampleIndex(10, 25, 4).Slice(0, 10).ToArray());
    }

    [Fact]
    public void TokenCorpus_SeparatesDocumentsKeepsLiteralSpecialTextAndCaches()
    {
        var docs = Path.Combine(_dir, "docs");
        Directory.CreateDirectory(docs);
        File.WriteAllText(Path.Combine(docs, "a.txt"), "Call me Ishmael.");
        File.WriteAllText(Path.Combine(docs, "b.txt"), "Text with <|endoftext|> inside.");
        File.WriteAllText(Path.Combine(docs, "notes.md"), "ignored: not *.txt");
        var cache = Path.Combine(_dir, "cache");
        var c = TokenCorpus.Load([docs], cache);
        Assert.False(c.FromCache);
        Assert.Equal(2, c.Documents);
        Assert.Equal(1, c.Tokens.Count(t => t == Gpt2Tokenizer.EndOfText));          // only between the two documents
        Assert.Equal([14134, 502, 1148, 21720, 417, 13, Gpt2Tokenizer.EndOfText], c.Tokens.Take(7));
        Assert.Equal("Text with <|endoftext|> inside.", Gpt2Tokenizer.Create().Decode(c.Tokens.Skip(7)));
        var again = TokenCorpus.Load([docs], cache);
        Assert.True(again.FromCache);
        Assert.Equal(c.Tokens, again.Tokens);
        File.AppendAllText(Path.Combine(docs, "a.txt"), " Some years ago");
        var changed = TokenCorpus.Load([docs], cache);
        Assert.False(changed.FromCache);
        Assert.True(changed.Tokens.Length > c.Tokens.Length);
        Assert.Throws<FileNotFoundException>(() => TokenCorpus.Load([Path.Combine(_dir, "nope")], cache));
    }

    /// <summary>
    /// A binary file is refused naming it (it trained as text); bytes that are not UTF-8 are counted in a warning; a cache
    /// that cannot be written costs a warning, not the run (a read-only cache failed it).
    /// </summary>
    [Fact]
    public void TokenCorpus_RefusesBinary_WarnsOnBadUtf8_AndSurvivesAnUnwritableCache()
    {
        var bin = Path.Combine(_dir, "model.bin");
        File.WriteAllBytes(bin, [0x7F, (byte)'E', (byte)'L', (byte)'F', 2, 1, 1, 0, 0, 0]);
        var e = Assert.Throws<InvalidDataException>(() => TokenCorpus.Load([bin], Path.Combine(_dir, "cache")));
        Assert.Contains($"Training data '{bin}' is not text: it holds a NUL byte at offset 7", e.Message);

        var latin1 = Path.Combine(_dir, "latin1.txt");
        File.WriteAllBytes(latin1, [.. "caf"u8, 0xE9, .. " na"u8, 0xEF, .. "ve \uFFFD"u8, .. "\uFFFD"u8]);   // two Latin-1 bytes, two real U+FFFD
        var log = new List<string>();
        var c = TokenCorpus.Load([latin1], Path.Combine(_dir, "cache"), log.Add);
        Assert.Contains(log, l => l == $"warning: training data '{latin1}' is not valid UTF-8: 2 invalid byte sequence(s) read as U+FFFD");
        Assert.NotEmpty(c.Tokens);

        var blocked = Path.Combine(_dir, "not-a-folder");
        File.WriteAllText(blocked, "a file where the cache folder would be");
        var text = Path.Combine(_dir, "a.txt");
        File.WriteAllText(text, "Call me Ishmael.");
        log.Clear();
        var d = TokenCorpus.Load([text], Path.Combine(blocked, "tokens"), log.Add);
        Assert.Equal([14134, 502, 1148, 21720, 417, 13], d.Tokens);
        Assert.Contains(log, l => l.Contains("warning: the token cache") && l.Contains("could not be written"));
    }

    [Fact]
    public void LmData_WindowsAndValidationSplit()
    {
        var tokens = Enumerable.Range(0, 1000).ToArray();
        var d = new LmData(tokens, 10, 0.2);
        Assert.Equal(80, d.TrainSamples);
        Assert.Equal(20, d.ValidationSamples);
        var b = new Batch();
        d.FillTrain([3, 0], b);
        Assert.Equal(Enumerable.Range(30, 10).Concat(Enumerable.Range(0, 10)).Select(i => (long)i), (long[])b["input_ids"].Data);
        Assert.Same(b["input_ids"].Data, b["labels"].Data);
        d.FillValidation(1, 1, b);
        Assert.Equal(Enumerable.Range(810, 10).Select(i => (long)i), (long[])b["input_ids"].Data);
        Assert.Throws<InvalidDataException>(() => new LmData(new int[5], 10));
    }
}
