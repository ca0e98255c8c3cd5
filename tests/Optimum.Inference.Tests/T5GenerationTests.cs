using Optimum.Hub;
using Optimum.Models;
using Optimum.Tests;
using Xunit;
using Xunit.Abstractions;

namespace Optimum.Inference.Tests;

/// <summary>T5 generation against transformers (t5-tiny): greedy and 3-beam search, token for token.</summary>
public sealed class T5GenerationTests : IDisposable
{
    private readonly string _dir = Repo.TempDir();
    private readonly Seq2SeqLm _lm;
    private readonly IReadOnlyDictionary<string, SafeTensor> _e;
    private readonly ITestOutputHelper _output;

    public T5GenerationTests(ITestOutputHelper output)
    {
        _output = output;
        var hf = Repo.Fixture("t5-tiny");
        Assert.Empty(ModelKinds.Export(hf, _dir));
        _lm = new Seq2SeqLm(_dir);
        _e = SafeTensorsFile.ReadAll(Path.Combine(hf, "expected.safetensors"));
    }

    public void Dispose()
    {
        _lm.Dispose();
        Directory.Delete(_dir, true);
    }

    private IReadOnlyList<IReadOnlyList<int>> Sources()
    {
        var ids = _e["input_ids"].ToInt64s();
        var mask = _e["attention_mask"].ToInt64s();
        int n = (int)_e["input_ids"].Shape[1];
        return Enumerable.Range(0, 2).Select(r => (IReadOnlyList<int>)Enumerable.Range(0, n).Where(t => mask[r * n + t] == 1).Select(t => (int)ids[r * n + t]).ToArray()).ToArray();
    }

    /// <summary>HF's output rows: decoder start, the tokens, EOS if it was produced, then pad up to the width.</summary>
    private long[] AsHf(IReadOnlyList<GenerationResult> results, int width) => results.SelectMany(r =>
        new[] { 0L }.Concat(r.Tokens.Select(t => (long)t)).Concat(r.FinishReason == FinishReason.Eos ? [1L] : []).Concat(Enumerable.Repeat(0L, width)).Take(width)).ToArray();

    [Fact]
    public void Greedy_EqualsTransformers()
    {
        var r = _lm.Generate(Sources(), new GenerationOptions { MaxNewTokens = 10 });
        _output.WriteLine(string.Join(" | ", r.Select(x => string.Join(",", x.Tokens) + " " + x.FinishReason)));
        Assert.Equal(_e["generate.greedy"].ToInt64s(), AsHf(r, 11));
    }

    [Fact]
    public void BeamSearch3_EarlyStopping_EqualsTransformers()
    {
        var r = _lm.Generate(Sources(), new GenerationOptions { MaxNewTokens = 10, NumBeams = 3, EarlyStopping = true });
        _output.WriteLine(string.Join(" | ", r.Select(x => string.Join(",", x.Tokens) + " " + x.FinishReason)));
        Assert.Equal(_e["generate.beam3"].ToInt64s(), AsHf(r, 11));
    }

    [Fact]
    public void DecoderWithCache_EqualsDecoderWithoutCache()
    {
        using var enc = _lm.Encode(Sources());
        long[] tokens = [0, 17, 250, 3, 99, 1];
        using var cached = enc.Start();
        for (int t = 0; t < tokens.Length; t++)
        {
            var step = cached.Step([tokens[t], tokens[t]], [t, t], [], 2).ToArray();
            using var full = enc.Start();
            var whole = full.Step(tokens[..(t + 1)].Concat(tokens[..(t + 1)]).ToArray(), new long[2 * (t + 1)], [], 2).ToArray();
            for (int i = 0; i < step.Length; i++) Assert.True(Math.Abs(step[i] - whole[i]) <= 1e-4, $"step {t}, logit {i}: {step[i]} vs {whole[i]}");
        }
    }
}
