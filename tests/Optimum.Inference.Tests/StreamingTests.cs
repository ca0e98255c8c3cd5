using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Optimum.Core;

namespace Optimum.Inference.Tests;

/// <summary>Text generation: streaming pieces, UTF-8 hold-back, stop strings, on a GPT-2-vocabulary model.</summary>
public sealed class StreamingTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    private readonly CausalLm _lm;
    private readonly TextGenerator _gen;

    public StreamingTests()
    {
        var cfg = new Gpt2Config { VocabSize = 50257, NPositions = 64, NEmbd = 8, NLayer = 1, NHead = 2, EmbdPdrop = 0, AttnPdrop = 0, ResidPdrop = 0, InitializerRange = 0.5 };
        ModelKinds.WritePreset(_dir, cfg, seed: 1);
        _lm = new CausalLm(_dir);
        _gen = new TextGenerator(_lm, Gpt2Tokenizer.Create());
    }

    public void Dispose()
    {
        _lm.Dispose();
        Directory.Delete(_dir, true);
    }

    private static async Task<List<string>> Collect(IAsyncEnumerable<string> s)
    {
        var l = new List<string>();
        await foreach (var p in s) l.Add(p);
        return l;
    }

    [Fact]
    public async Task StreamedPieces_ConcatenateToTheCompletion()
    {
        var o = new GenerationOptions { MaxNewTokens = 30, Temperature = 1, Seed = 3 };
        var whole = _gen.Complete("Call me Ishmael.", o);
        Completion? done = null;
        var pieces = await Collect(_gen.StreamAsync("Call me Ishmael.", o, completed: c => done = c));
        Assert.True(pieces.Count > 3);
        Assert.Equal(whole.Text, string.Concat(pieces));
        Assert.Equal(30, whole.CompletionTokens);
        Assert.Equal(FinishReason.Length, done!.FinishReason);
        Assert.Equal(6, done.PromptTokens);
    }

    [Fact]
    public async Task StopStrings_EndTheTextBeforeThem_AlsoWhenStreamed()
    {
        var o = new GenerationOptions { MaxNewTokens = 40, Temperature = 1, Seed = 3 };
        var free = _gen.Complete("The whale", o).Text;
        var stop = free.Substring(free.Length / 2, 2);
        var cut = _gen.Complete("The whale", o, [stop]);
        Assert.Equal(free[..free.IndexOf(stop, StringComparison.Ordinal)], cut.Text);
        Assert.Equal(FinishReason.Stop, cut.FinishReason);
        Assert.Equal(cut.Text, string.Concat(await Collect(_gen.StreamAsync("The whale", o, [stop]))));
    }

    [Fact]
    public void TheEarliestStopStringInTheText_Wins()
    {
        var o = new GenerationOptions { MaxNewTokens = 40, Temperature = 1, Seed = 3 };
        var free = _gen.Complete("The whale", o).Text;
        string early = free.Substring(free.Length / 4, 2), late = free.Substring(3 * free.Length / 4, 2);
        Assume(free.IndexOf(early, StringComparison.Ordinal) < free.IndexOf(late, StringComparison.Ordinal));
        var cut = _gen.Complete("The whale", o, [late, early]);       // listed later, found earlier
        Assert.Equal(free[..free.IndexOf(early, StringComparison.Ordinal)], cut.Text);
    }

    private static void Assume(bool ok) => Assert.True(ok, "the sampled text does not suit this check");

    [Fact]
    public void SafeEnd_HoldsBackPartialCharactersAndStopPrefixes()
    {
        Assert.Equal(3, TextGenerator.SafeEnd("abc\uFFFD", []));
        Assert.Equal(6, TextGenerator.SafeEnd("hello wo", ["world"]));          // "wo" may start "world"
        Assert.Equal(8, TextGenerator.SafeEnd("hello wo", ["xyz"]));
        // A character split over two tokens: decoding the first alone gives U+FFFD.
        var tok = Gpt2Tokenizer.Create();
        var ids = tok.Encode("😀");
        Assert.True(ids.Count > 1);
        Assert.Equal(0, TextGenerator.SafeEnd(tok.Decode(ids.Take(1)), []));
        Assert.Equal("😀", tok.Decode(ids));
    }

    [Fact]
    public async Task Cancelling_StopsTheStream()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();                                   // e.g. the client has gone away
        Completion? done = null;
        var pieces = await Collect(_gen.StreamAsync("Call me", new GenerationOptions { MaxNewTokens = 50, Temperature = 1 }, completed: c => done = c, cancel: cts.Token));
        Assert.Equal(FinishReason.Cancelled, done!.FinishReason);
        Assert.True(done.CompletionTokens <= 1, $"{done.CompletionTokens} tokens after cancellation");
    }
}
